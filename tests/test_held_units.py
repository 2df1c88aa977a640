"""Units of the Redis-held backends (issue 17): token counting and trimming, items as chat messages, and
the fake's Chat Completions API refusing what the real one refuses."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from bot.assistant import tokens
from bot.assistant.chat import chat_tools, messages
from bot.assistant.held import assistant_message, thread_keys
from bot.errors import NoAssistantThread
from bot.keys import Keys
from tests.fakes.openai_api import FakeOpenAI


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "current_time", "arguments": "{}"}


def output(call_id: str, text: str = "noon") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def test_openai_models_are_counted_with_their_own_encoding_others_estimated() -> None:
    assert tokens.encoding_name("gpt-5.1") == tokens.encoding_name("openai/gpt-4o-mini") == "o200k_base"
    assert tokens.encoding_name("gpt-4-turbo") == "cl100k_base"
    assert tokens.encoding_name("llama3.1:8b") is None
    text = " alpha" * 100
    assert tokens.counter("gpt-5.1")(text) == 100  # one token per word in o200k
    # The estimate (2 bytes a token) over-counts what a real tokenizer gives.
    assert tokens.counter("qwen2.5")(text) == 300 > tokens.counter("gpt-5.1")(text)


def test_trimming_drops_whole_turns_oldest_first_and_keeps_the_new_input() -> None:
    count = tokens.counter("gpt-5.1")
    old = [user("one" + " alpha" * 200), assistant_message("Echo one" + " alpha" * 200)]
    tool_turn = [
        user("what time"),
        call("c1"),
        output("c1", "noon" + " alpha" * 100),
        assistant_message("noon"),
    ]
    recent = [user("two"), assistant_message("Echo two")]
    new = [user("three" + " alpha" * 50)]
    kept, used = tokens.trim([*old, *tool_turn, *recent], new, "Be brief.", 300, count)
    # The tool turn goes with its call and output together, after its question; the old turn is gone.
    assert kept == [*tool_turn, *recent]
    assert used <= 300
    # A budget too small for the tool turn drops it whole: never a call without its output.
    kept, _ = tokens.trim([*tool_turn, *recent], new, "Be brief.", 100, count)
    assert kept == recent
    # The new input always goes, even past the budget (the caller refuses it then).
    kept, used = tokens.trim(old, new, "Be brief.", 10, count)
    assert kept == [] and used > 10


def test_items_become_chat_messages_with_calls_paired_and_images_as_urls() -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBOR", "detail": "low"}
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look"}, image]},
        assistant_message("Let me check."),
        call("c1"),
        call("c2"),
        output("c1", "a"),
        output("c2", "b"),
        assistant_message("Done."),
    ]
    assert messages("Be brief.", items) == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a"},
        {"role": "tool", "tool_call_id": "c2", "content": "b"},
        {"role": "assistant", "content": "Done."},
    ]
    # Text alone goes as a plain string, which every server takes.
    assert messages("x", [user("hi")])[1] == {"role": "user", "content": "hi"}
    spec = {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}
    assert chat_tools([spec]) == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]


def test_held_ids_name_their_workspace() -> None:
    assert thread_keys("hconv.E0ORG.T0TEAM.abc") == Keys("T0TEAM", "E0ORG")
    assert thread_keys("hconv.-.T0TEAM.abc.def") == Keys("T0TEAM")
    with pytest.raises(NoAssistantThread):
        thread_keys("conv_123")


def test_the_chat_fake_refuses_unpaired_tool_messages_and_requests_off_the_spec(
    openai_fake: FakeOpenAI,
) -> None:
    openai_fake.set_api_style("chat_completions")
    client = openai.OpenAI(api_key=openai_fake.api_key, base_url=openai_fake.base_url, max_retries=0)
    unanswered = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]},
        {"role": "user", "content": "and?"},
    ]  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="must be followed by tool messages"):
        client.chat.completions.create(model="gpt-5.1", messages=unanswered)  # type: ignore[arg-type]
    orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c9", "content": "x"}]
    with pytest.raises(openai.BadRequestError, match="role 'tool' must be a response"):
        client.chat.completions.create(model="gpt-5.1", messages=orphan)  # type: ignore[arg-type]
    # Off the spec (a role that does not exist): refused, and recorded as a violation.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-5.1", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[list-item,misc]
    assert openai_fake.spec_violations
    openai_fake.reset()  # the violation above was this test's own doing
    openai_fake.set_api_style("chat_completions")
    # Only chat: the Responses and Conversations APIs are not there.
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-5.1", input="hi")
    answer = client.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Echo: hi"
    client.close()


def test_the_store_less_responses_fake_keeps_nothing(openai_fake: FakeOpenAI) -> None:
    openai_fake.set_api_style("responses")
    client = openai.OpenAI(api_key=openai_fake.api_key, base_url=openai_fake.base_url, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.conversations.create()
    with pytest.raises(openai.BadRequestError, match="'store' must be false"):
        client.responses.create(model="gpt-5.1", input="hi")
    answer = client.responses.create(model="gpt-5.1", input="hi", store=False)
    assert answer.output_text == "Echo: hi"
    client.close()
