"""The fake OpenAI's limits, as strict as the real API's, seen through the official SDK: the context window
and server-side compaction, the spec's size/range limits (in the real API's error shape), and background
responses that vanish or expire."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from openai.types.conversations import ConversationItem
from openai.types.responses import (
    ResponseCompactionItem,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
)
from pydantic import TypeAdapter

from tests.fakes.openai_api import DEFAULT_CONTEXT_WINDOW, FakeOpenAI, Reply, context_tokens, get_spec

MODEL = "gpt-5.1"
COMPACTION = [{"type": "compaction", "compact_threshold": 1000}]


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


def _conversation_with(client: openai.OpenAI, turns: int, chars: int) -> str:
    """A conversation of `turns` user messages of `chars` characters each (chars / 4 tokens each)."""
    items = [{"role": "user", "content": f"{n:03d}" + "x" * (chars - 3)} for n in range(turns)]
    return client.conversations.create(items=items).id  # type: ignore[arg-type]


# ---- context window -------------------------------------------------------------------------------


def test_input_past_the_context_window_is_400_and_changes_nothing(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    assert fake.context_window == DEFAULT_CONTEXT_WINDOW == 272_000
    fake.set_context_window(500)
    conv = _conversation_with(client, 4, 400)  # 400 tokens
    before = fake.conversation(conv)["items"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, conversation=conv, input="y" * 404, instructions="be brief")
    assert caught.value.status_code == 400
    error = _error(caught.value)
    assert error["code"] == "context_length_exceeded"
    assert (error["type"], error["param"]) == ("invalid_request_error", "input")
    assert "context window" in error["message"]
    assert fake.conversation(conv)["items"] == before
    assert fake.model_inputs == [] and fake.compactions == []
    # Exactly at the window it fits (400 + 92 + 2 ("be") + ... tokens = 500).
    ok = client.responses.create(model=MODEL, conversation=conv, input="y" * 392, instructions="12345678")
    assert ok.status == "completed"
    fake.reset()
    assert fake.context_window == DEFAULT_CONTEXT_WINDOW


def test_context_counts_tool_calls_and_instructions(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.set_context_window(100)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", instructions="i" * 400)
    assert _error(caught.value)["code"] == "context_length_exceeded"
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "a" * 400}
    output = {"type": "function_call_output", "call_id": "c1", "output": "o"}
    assert context_tokens([call, output]) == 101
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[call, output])  # type: ignore[list-item]


# ---- server-side compaction -------------------------------------------------------------------------


def test_compaction_replaces_older_items_so_the_request_fits(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.set_context_window(1200)
    conv = _conversation_with(client, 10, 400)  # 1000 tokens
    old_ids = [i["id"] for i in fake.conversation(conv)["items"]]
    fake.script(Reply(text="ok"))
    events = list(
        client.responses.create(
            model=MODEL,
            conversation=conv,
            input="z" * 400,  # 1100 tokens in all: past the threshold, within the window
            context_management=COMPACTION,  # type: ignore[arg-type]
            stream=True,
        )
    )
    assert isinstance(events[0], ResponseCreatedEvent)
    added, done = events[2], events[3]
    assert isinstance(added, ResponseOutputItemAddedEvent) and added.output_index == 0
    assert isinstance(done, ResponseOutputItemDoneEvent) and done.item == added.item
    assert isinstance(added.item, ResponseCompactionItem)
    compaction = added.item
    assert compaction.id.startswith("cmp_") and compaction.encrypted_content
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent)
    assert final.response.output[0] == compaction and final.response.output[1].type == "message"

    [record] = fake.compactions
    assert record["response_id"] == final.response.id and record["conversation"] == conv
    assert record["item"]["id"] == compaction.id
    assert record["tokens_before"] == 1100 and record["tokens_after"] <= record["threshold"] == 1000
    removed = record["removed_item_ids"]
    assert removed == old_ids[: len(removed)] and 0 < len(removed) < len(old_ids)  # the oldest ones
    # The model saw the compaction item, then the newest items and the input.
    seen = fake.model_inputs[0]["input_items"]
    assert seen[0]["type"] == "compaction"
    assert [i["id"] for i in seen[1:-1]] == old_ids[len(removed) :]

    page = client.conversations.items.list(conv, order="asc", limit=100)
    assert isinstance(page.data[0], ResponseCompactionItem) and page.data[0].id == compaction.id
    ids = [i.id for i in page.data]
    assert ids[1:-2] == old_ids[len(removed) :] and page.data[-1].type == "message"
    raw = client.conversations.items.with_raw_response.list(conv, order="asc", limit=100).http_response.json()
    assert get_spec().schema_errors("ConversationItemList", raw) == []
    TypeAdapter(list[ConversationItem]).validate_python(raw["data"])
    assert get_spec().schema_errors("Response", final.response.model_dump(exclude_unset=True)) == []
    assert fake.spec_violations == []

    # The next turn fits again without another compaction.
    client.responses.create(model=MODEL, conversation=conv, input="short", context_management=COMPACTION)  # type: ignore[arg-type]
    assert len(fake.compactions) == 1


def test_compaction_without_threshold_uses_the_window(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.set_context_window(1000)
    conv = _conversation_with(client, 10, 400)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, conversation=conv, input="z" * 400)
    response = client.responses.create(
        model=MODEL,
        conversation=conv,
        input="z" * 400,
        context_management=[{"type": "compaction"}],  # type: ignore[list-item]
    )
    assert response.output[0].type == "compaction"
    assert fake.compactions[0]["tokens_after"] <= 1000


def test_compaction_cannot_shrink_the_new_input(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.set_context_window(1000)
    conv = _conversation_with(client, 2, 400)
    before = fake.conversation(conv)["items"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODEL,
            conversation=conv,
            input="z" * 4400,
            context_management=COMPACTION,  # type: ignore[arg-type]
        )
    assert _error(caught.value)["code"] == "context_length_exceeded"
    assert fake.conversation(conv)["items"] == before and fake.compactions == []


def test_failed_response_leaves_the_conversation_uncompacted(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.set_context_window(1200)
    conv = _conversation_with(client, 10, 400)
    before = fake.conversation(conv)["items"]
    fake.script(Reply(fail_with="server_error"))
    failed = client.responses.create(
        model=MODEL,
        conversation=conv,
        input="z" * 400,
        context_management=COMPACTION,  # type: ignore[arg-type]
    )
    assert failed.status == "failed"
    assert fake.conversation(conv)["items"] == before and fake.compactions == []


# ---- size and range limits of the spec, in the real API's error shape ------------------------------


def test_code_interpreter_takes_at_most_50_files(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    file_ids = [fake.add_file(f"f{n}.txt", b"x") for n in range(51)]
    tool = {"type": "code_interpreter", "container": {"type": "auto", "file_ids": file_ids}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", tools=[tool])  # type: ignore[list-item]
    assert _error(caught.value) == {
        "message": "Invalid 'tools[0].container.file_ids': array too long. Expected an array with maximum "
        "length 50, but got an array with length 51 instead.",
        "type": "invalid_request_error",
        "param": "tools[0].container.file_ids",
        "code": "array_above_max_length",
    }
    assert len(fake.spec_violations) == 1 and fake.model_inputs == []
    tool["container"]["file_ids"] = file_ids[:50]  # type: ignore[index]
    assert client.responses.create(model=MODEL, input="hi", tools=[tool]).status == "completed"  # type: ignore[list-item]


def test_items_create_takes_at_most_20_items(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create().id
    items: Any = [{"type": "message", "role": "user", "content": str(n)} for n in range(21)]
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.items.create(conv, items=items)
    error = _error(caught.value)
    assert (error["param"], error["code"]) == ("items", "array_above_max_length")
    assert fake.conversation(conv)["items"] == []
    with pytest.raises(openai.BadRequestError):  # creating a conversation: the same limit
        client.conversations.create(items=items)
    assert len(client.conversations.items.create(conv, items=items[:20]).data) == 20


def test_range_limits(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=15)
    assert _error(caught.value) == {
        "message": "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
        "but got 15 instead.",
        "type": "invalid_request_error",
        "param": "max_output_tokens",
        "code": "integer_below_min_value",
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODEL,
            input="hi",
            context_management=[{"type": "compaction", "compact_threshold": 999}],  # type: ignore[list-item]
        )
    error = _error(caught.value)
    assert (error["param"], error["code"]) == (
        "context_management[0].compact_threshold",
        "integer_below_min_value",
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", temperature=2.5)
    assert _error(caught.value)["code"] == "decimal_above_max_value"
    assert client.responses.create(model=MODEL, input="hi", max_output_tokens=16).status == "completed"


# ---- background responses that vanish or expire ------------------------------------------------------


def _not_found(client: openai.OpenAI, response_id: str, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(openai.NotFoundError) as caught:
        result = client.responses.retrieve(response_id, **kwargs)
        if kwargs.get("stream"):
            list(result)  # type: ignore[call-overload]
    error = _error(caught.value)
    assert error == {
        "message": f"Response with id '{response_id}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    return error


def test_vanishing_response_cuts_its_stream_and_is_gone(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[{"role": "user", "content": "earlier"}]).id
    before = fake.conversation(conv)["items"]
    fake.script(Reply(text="0123456789", chunk_size=2, chunk_delay=0.02))
    fake.vanish_next_response(after_events=4)
    got = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(
            model=MODEL, conversation=conv, input="hi", stream=True, background=True
        ):
            got.append(event)
    assert [e.sequence_number for e in got] == [0, 1, 2, 3]
    response_id = got[0].response.id  # type: ignore[union-attr]
    assert fake.vanished == [response_id]
    _not_found(client, response_id)
    _not_found(client, response_id, stream=True)
    _not_found(client, response_id, stream=True, starting_after=1)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel(response_id)
    # Never completed: the conversation has neither its input nor its output, and is not locked.
    assert fake.conversation(conv)["items"] == before
    assert client.responses.create(model=MODEL, conversation=conv, input="again").output_text == "Echo: again"
    # Only the next background response vanishes.
    later = client.responses.create(model=MODEL, input="bg", background=True)
    assert later.id not in fake.vanished


def test_vanishing_cuts_a_follower_too(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script(Reply(text="0123456789", chunk_size=1, first_token_delay=0.3, chunk_delay=0.05))
    fake.vanish_next_response(after_events=6)
    created = client.responses.create(model=MODEL, input="hi", background=True)
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.retrieve(created.id, stream=True):
            seen.append(event.sequence_number)
    assert seen == [0, 1, 2, 3, 4, 5]
    _not_found(client, created.id)


def test_background_responses_expire_unless_stored_explicitly(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    fake.set_background_retention(0.2)
    transient = client.responses.create(model=MODEL, input="a", background=True)
    kept = client.responses.create(model=MODEL, input="b", background=True, store=True)
    deadline = time.monotonic() + 5
    while client.responses.retrieve(transient.id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    _not_found(client, transient.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="c", previous_response_id=transient.id)
    assert client.responses.retrieve(kept.id).status == "completed"
    fake.reset()
    late = client.responses.create(model=MODEL, input="d", background=True)
    time.sleep(0.3)
    assert client.responses.retrieve(late.id).id == late.id  # the default retention is 600 s
