"""Units of the Redis-held backends (issue 17): token counting and trimming, items as chat messages, held
ids, one backend's round trip on the real Redis (commit once, replay, failure, delete), and the fake's Chat
Completions and store-less Responses styles refusing what the real servers refuse."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
import redis.asyncio as aredis
from openai import AsyncOpenAI

from bot.assistant import tokens
from bot.assistant.backend import FunctionCall, RoundResult, TurnRequest, user_message
from bot.assistant.chat import ChatCompletionsBackend, chat_tools, messages
from bot.assistant.held import assistant_message, thread_keys
from bot.assistant.held_responses import HeldResponsesBackend
from bot.errors import (
    AssistantUnavailable,
    ContextTooLong,
    MetadataError,
    NoAssistantThread,
    ResponseVanished,
)
from bot.keys import Keys
from bot.settings import Settings
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall


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


def _backend_run(
    openai_fake: FakeOpenAI, redis_url: str, work: Any, style: str = "chat_completions", **settings_: Any
) -> Any:
    """Run `work(backend, redis)` with a held backend (chat completions unless `style` says "responses")
    on the test Redis and fake."""

    async def run() -> Any:
        settings = Settings(openai_api_key="sk-test", assistant_backend=style, **settings_)  # type: ignore[arg-type]
        client = AsyncOpenAI(api_key=openai_fake.api_key, base_url=openai_fake.base_url, max_retries=0)
        rdb = aredis.Redis.from_url(redis_url, decode_responses=True)
        kind = HeldResponsesBackend if style == "responses" else ChatCompletionsBackend
        try:
            return await work(kind(client, rdb, settings), rdb)
        finally:
            await rdb.aclose()
            await client.close()

    return asyncio.run(run())


def test_a_held_response_is_committed_once_and_shown_again_from_redis(
    openai_fake: FakeOpenAI, rdb: Any, redis_url: str
) -> None:
    openai_fake.set_api_style("chat_completions")
    openai_fake.script(Reply(text="first answer"), Reply(http_status=400, error_message="no."))

    async def work(backend: Any, redis: Any) -> None:
        conv = await backend.create_conversation({"slack_team": "T0UNIT"}, keys=Keys("T0UNIT"))
        turn = TurnRequest(conv, "Be brief.", user_key="T0UNIT:U1")
        created: list[str] = []

        async def on_created(response_id: str) -> None:
            created.append(response_id)

        pieces = [p async for p in backend.answer(turn, [user_message("hi")], on_created=on_created,
                                                  result=RoundResult())]  # fmt: skip
        assert "".join(pieces) == "first answer"
        [done] = created
        assert (await backend.info(conv)).metadata == {"slack_team": "T0UNIT"}
        assert await backend.count_items(conv) == 2
        # A retry of the turn shows the answer from Redis: no model call, nothing added.
        again = [p async for p in backend.resume(done, result=RoundResult())]
        assert again == ["first answer"] and len(openai_fake.model_inputs) == 1
        assert await backend.count_items(conv) == 2
        # A failed response adds nothing; resuming it asks the turn to ask again.
        with pytest.raises(AssistantUnavailable):
            async for _ in backend.answer(turn, [user_message("again")], on_created=on_created,
                                          result=RoundResult()):  # fmt: skip
                pass
        assert await backend.count_items(conv) == 2
        with pytest.raises(ResponseVanished):
            async for _ in backend.resume(created[-1], result=RoundResult()):
                pass
        # Deleting items, and the thread.
        turn_items = await backend.turn_items(conv)
        assert turn_items is not None and len(turn_items.user) == len(turn_items.answer) == 1
        assert await backend.delete_items(conv, turn_items.user) == 1
        assert [line.role for line in await backend.newest_items(conv, 5)] == ["assistant"]
        await backend.delete_conversation(conv)
        with pytest.raises(NoAssistantThread):
            await backend.info(conv)

    _backend_run(openai_fake, redis_url, work)


def test_trimming_keeps_the_question_and_calls_a_tool_round_answers() -> None:
    """A tool round's outputs (the new input) never go without their calls, nor the calls without the
    question: that group goes even when it doesn't fit, and the count says so (the turn is refused)."""
    estimate = tokens.estimate
    old = [user("old question"), assistant_message("old answer")]
    round_one = [user("q" * 400), call("c1")]
    kept, used = tokens.trim([*old, *round_one], [output("c1")], "inst", 150, estimate)
    assert kept == round_one and used > 150
    # With room, the older turns go too, as before.
    kept, used = tokens.trim([*old, *round_one], [output("c1")], "inst", 1_000, estimate)
    assert kept == [*old, *round_one] and used <= 1_000
    # A new question answers no call: the last group is trimmed like any other.
    kept, _ = tokens.trim([*old, *round_one, output("c1")], [user("next")], "inst", 30, estimate)
    assert kept == []


TIME_TOOL = {
    "type": "function",
    "name": "current_time",
    "description": "d",
    "parameters": {"type": "object"},
    "strict": False,  # required by the spec's FunctionTool
}


async def _ignore(response_id: str) -> None:
    pass


async def _drain(pieces: Any) -> list[Any]:
    return [p async for p in pieces]


def test_a_tool_output_too_long_to_send_still_closes_its_call(
    openai_fake: FakeOpenAI, rdb: Any, redis_url: str
) -> None:
    """A tool round whose output is over the history budget is refused before any request, and the
    output joins the thread all the same: the call is answered, so the thread's next turn goes."""
    openai_fake.set_api_style("chat_completions")

    async def work(backend: Any, redis: Any) -> None:
        conv = await backend.create_conversation({"slack_team": "T0UNIT"}, keys=Keys("T0UNIT"))
        await backend.add_items(conv, [user("what time"), call("c1")])
        turn = TurnRequest(conv, "Be brief.", user_key="T0UNIT:U1", tools=[TIME_TOOL])
        big = output("c1", " alpha" * 3_000)
        with pytest.raises(ContextTooLong):
            await _drain(backend.answer(turn, [big], on_created=_ignore, result=RoundResult()))
        assert openai_fake.model_inputs == []
        roles = [line.role for line in await backend.newest_items(conv, 5)]
        assert roles == ["function call output", "function call", "user"]  # newest first
        openai_fake.script(Reply(text="fine"))
        pieces = await _drain(backend.answer(turn, [user("hi")], on_created=_ignore, result=RoundResult()))
        assert "".join(pieces) == "fine"

    _backend_run(openai_fake, redis_url, work, history_token_budget=1_000)


def test_a_run_that_loses_the_commit_goes_on_with_the_committed_calls(
    openai_fake: FakeOpenAI, rdb: Any, redis_url: str
) -> None:
    """Two runs of one response (a turn retried while its first worker still streams): the one that
    commits second adds nothing, and its turn's tool loop gets the calls the thread holds, not its own."""
    openai_fake.set_api_style("chat_completions")
    loser = Reply(text="first run", tool_calls=(ToolCall("current_time", call_id="c_lost"),))
    winner = Reply(text="second run", tool_calls=(ToolCall("current_time", call_id="c_kept"),))
    openai_fake.script(loser, winner)

    async def work(backend: Any, redis: Any) -> None:
        conv = await backend.create_conversation({"slack_team": "T0UNIT"}, keys=Keys("T0UNIT"))
        turn = TurnRequest(conv, "Be brief.", user_key="T0UNIT:U1", tools=[TIME_TOOL])
        created: list[str] = []

        async def on_created(response_id: str) -> None:
            created.append(response_id)

        first = RoundResult()
        pieces = backend.answer(turn, [user("hi")], on_created=on_created, result=first)
        assert isinstance(await anext(pieces), str)  # the first run is streaming
        second = RoundResult()
        await _drain(backend.resume(created[0], result=second))  # the retry runs it again, and commits
        await _drain(pieces)
        assert second.calls == first.calls == [FunctionCall("c_kept", "current_time", "{}")]
        items = [
            json.loads(raw)["item"] for raw in await redis.lrange(Keys("T0UNIT").held_items(conv), 0, -1)
        ]
        assert [i.get("call_id") for i in items if i["type"] == "function_call"] == ["c_kept"]
        assert len(items) == 3  # the question, the committed answer and its call: once

    _backend_run(openai_fake, redis_url, work)


def test_outputs_a_turn_adds_itself_go_once_and_never_to_a_reset_thread(
    openai_fake: FakeOpenAI, rdb: Any, redis_url: str
) -> None:
    """A refusal's or a stopped loop's outputs (`add_items`) added again by a retried turn are there once;
    added after a reset, they bring no thread back."""

    async def work(backend: Any, redis: Any) -> None:
        conv = await backend.create_conversation({"slack_team": "T0UNIT"}, keys=Keys("T0UNIT"))
        items_key = Keys("T0UNIT").held_items(conv)
        await backend.add_items(conv, [user("what time"), call("c1"), call("c2")])
        refusal = [assistant_message("Not allowed."), output("c1", "refused"), output("c2", "refused")]
        await backend.add_items(conv, refusal)
        await backend.add_items(conv, refusal)  # the retried turn
        assert await redis.llen(items_key) == 6
        # A batch with one output new and one there already: only the new one goes.
        await backend.add_items(conv, [call("c3")])
        await backend.add_items(conv, [output("c2", "again"), output("c3", "stopped")])
        kinds = [json.loads(raw)["item"].get("call_id") for raw in await redis.lrange(items_key, 6, -1)]
        assert kinds == ["c3", "c3"]
        await backend.delete_conversation(conv)
        await backend.add_items(conv, [output("c4", "late")])
        assert await redis.exists(items_key, Keys("T0UNIT").held_thread(conv)) == 0
        with pytest.raises(NoAssistantThread):
            await backend.info(conv)

    _backend_run(openai_fake, redis_url, work)


@pytest.mark.parametrize("style", ["chat_completions", "responses"])
def test_calls_without_an_id_or_with_a_reused_one_get_ids_of_their_own(
    openai_fake: FakeOpenAI, rdb: Any, redis_url: str, style: str
) -> None:
    """A server that gives no call id, or numbers its calls "0" every round: each call gets an id of its
    own, the same in the turn's calls (which approvals and outputs are keyed by) and in the thread."""
    openai_fake.set_api_style(style)
    nameless = (ToolCall("current_time", call_id=""), ToolCall("current_time", call_id=""))
    openai_fake.script(
        Reply(tool_calls=nameless),
        Reply(tool_calls=(ToolCall("current_time", call_id="0"),)),
        Reply(tool_calls=(ToolCall("current_time", call_id="0"),)),
        Reply(text="done"),
    )

    async def work(backend: Any, redis: Any) -> None:
        conv = await backend.create_conversation({"slack_team": "T0UNIT"}, keys=Keys("T0UNIT"))
        turn = TurnRequest(conv, "Be brief.", user_key="T0UNIT:U1", tools=[TIME_TOOL])
        seen: list[str] = []
        items = [user("what time")]
        for _ in range(3):
            result = RoundResult()
            await _drain(backend.answer(turn, items, on_created=_ignore, result=result))
            seen += [c.call_id for c in result.calls]
            items = [output(c.call_id) for c in result.calls]
        await _drain(backend.answer(turn, items, on_created=_ignore, result=RoundResult()))
        assert len(seen) == len(set(seen)) == 4 and all(seen)
        assert seen[2] == "0"  # a server's id is kept while it is new to the thread
        held = [json.loads(raw)["item"] for raw in await redis.lrange(Keys("T0UNIT").held_items(conv), 0, -1)]
        assert [i["call_id"] for i in held if i["type"] == "function_call"] == seen
        assert [i["call_id"] for i in held if i["type"] == "function_call_output"] == seen
        assert held[-1] == assistant_message("done")

    _backend_run(openai_fake, redis_url, work, style)


def test_metadata_over_the_limits_on_a_held_thread_tells_the_limit(
    openai_fake: FakeOpenAI, rdb: Any, redis_url: str
) -> None:
    """Over OpenAI's metadata limits a held thread refuses the write as the checks before a write do (the
    limit named, the same error), not as an assistant it couldn't reach; nothing is written."""

    async def work(backend: Any, redis: Any) -> None:
        conv = await backend.create_conversation({"slack_team": "T0UNIT"}, keys=Keys("T0UNIT"))
        too_many = {f"k{n}": "v" for n in range(17)}
        with pytest.raises(MetadataError) as caught:
            await backend.set_metadata(conv, too_many)
        assert not isinstance(caught.value, AssistantUnavailable)
        assert caught.value.user_message == "• That makes 17 metadata pairs; the limit is 16."
        with pytest.raises(MetadataError, match="the limit is 512"):
            await backend.set_metadata(conv, {"slack_team": "T0UNIT", "note": "x" * 513})
        with pytest.raises(MetadataError, match="the limit is 64"):
            await backend.create_conversation({"k" * 65: "v"}, keys=Keys("T0UNIT"))
        assert (await backend.info(conv)).metadata == {"slack_team": "T0UNIT"}

    _backend_run(openai_fake, redis_url, work)
