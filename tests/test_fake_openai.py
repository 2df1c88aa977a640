"""Proves the fake OpenAI server behaves like the real API as seen through the official SDK and the spec."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx2
import openai
import pytest
from multidict import MultiDict
from openai.types.conversations import Conversation, ConversationDeletedResource, Message
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from tests.fakes.openai_api import FakeOpenAI, Reply, get_spec

MODEL = "gpt-4.1-mini"


def _texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["role"], "".join(p["text"] for p in i["content"])) for i in items]


def _raw_sse(fake: FakeOpenAI, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /v1/responses with stream=true and parse the SSE wire format by hand."""
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    events = []
    with httpx2.stream("POST", f"{fake.base_url}/responses", json=body, headers=headers, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for block in r.read().decode().split("\n\n"):
            if not block.strip():
                continue
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            assert set(lines) == {"event", "data"}, block
            data = json.loads(lines["data"])
            assert data["type"] == lines["event"]
            events.append(data)
    return events


# ---- conversations ------------------------------------------------------------------------------


def test_conversation_create_retrieve_update_delete(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create(
        metadata={"slack_thread": "C1:1.2"}, items=[{"role": "user", "content": "hi"}]
    )
    assert isinstance(conv, Conversation)
    assert conv.id.startswith("conv_") and conv.object == "conversation"
    assert isinstance(conv.created_at, int) and conv.metadata == {"slack_thread": "C1:1.2"}

    stored = fake.conversation(conv.id)
    assert stored["metadata"] == {"slack_thread": "C1:1.2"}
    [item] = stored["items"]
    assert item["id"].startswith("msg_") and item["type"] == "message" and item["status"] == "completed"
    assert item["content"] == [{"type": "input_text", "text": "hi"}]

    assert client.conversations.retrieve(conv.id).id == conv.id
    updated = client.conversations.update(conv.id, metadata={"k": "v"})
    assert updated.metadata == {"k": "v"}  # replaced, not merged
    assert fake.conversations[conv.id]["metadata"] == {"k": "v"}

    deleted = client.conversations.delete(conv.id)
    assert isinstance(deleted, ConversationDeletedResource)
    assert (deleted.id, deleted.object, deleted.deleted) == (conv.id, "conversation.deleted", True)
    assert conv.id not in fake.conversations
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    assert client.conversations.create().metadata == {}
    assert fake.spec_violations == []


def test_items_list_orders_limits_and_pagination(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create(items=[{"role": "user", "content": f"m{i}"} for i in range(5)])
    ids = [i["id"] for i in fake.conversation(conv.id)["items"]]

    page = client.conversations.items.list(conv.id, limit=2)  # default order: desc
    assert [i.id for i in page.data] == [ids[4], ids[3]]
    assert page.has_more is True and page.last_id == ids[3]
    page = client.conversations.items.list(conv.id, limit=2, order="asc", after=ids[1])
    assert [i.id for i in page.data] == [ids[2], ids[3]]
    last = client.conversations.items.list(conv.id, limit=10, order="asc")
    assert [i.id for i in last.data] == ids and last.has_more is False
    # The SDK's auto-pagination walks `after` cursors.
    assert [i.id for i in client.conversations.items.list(conv.id, limit=2, order="asc")] == ids

    created = client.conversations.items.create(
        conv.id,
        items=[{"type": "message", "role": "assistant", "content": "x"}],
    )
    assert created.object == "list" and len(created.data) == 1
    new_id = str(created.data[0].id)
    assert fake.conversation(conv.id)["items"][-1]["id"] == new_id
    got = client.conversations.items.retrieve(new_id, conversation_id=conv.id)
    assert isinstance(got, Message) and got.role == "assistant"
    after_delete = client.conversations.items.delete(new_id, conversation_id=conv.id)
    assert after_delete.id == conv.id
    assert [i["id"] for i in fake.conversation(conv.id)["items"]] == ids
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(new_id, conversation_id=conv.id)
    assert fake.spec_violations == []


def test_deleting_an_item_answers_the_conversation_and_the_model_no_longer_sees_it(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    """DELETE /conversations/{id}/items/{item_id} (spec deleteConversationItem): 200 with the
    ConversationResource; an unknown item is a 404 (the real API's answer for any unknown id: the spec
    declares none, and the items' GET answers 404); the item leaves items.list and the next response's
    context."""
    conv = client.conversations.create(items=[{"role": "user", "content": "keep me"}])
    client.responses.create(model="gpt-5.1", conversation=conv.id, input="forget me")
    items = fake.conversation(conv.id)["items"]
    gone = next(i["id"] for i in items if i.get("role") == "user" and "forget me" in json.dumps(i))

    raw = httpx2.delete(
        f"{fake.base_url}/conversations/{conv.id}/items/{gone}",
        headers={"Authorization": f"Bearer {fake.api_key}"},
    )
    assert raw.status_code == 200
    assert raw.json()["object"] == "conversation" and raw.json()["id"] == conv.id
    assert get_spec().schema_errors("ConversationResource", raw.json()) == []
    assert gone not in [i.id for i in client.conversations.items.list(conv.id, limit=100)]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete(gone, conversation_id=conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete("msg_unknown", conversation_id="conv_unknown")

    client.responses.create(model="gpt-5.1", conversation=conv.id, input="next")
    seen = fake.model_inputs[-1]["input_items"]
    assert gone not in [i.get("id") for i in seen]
    users = [json.dumps(i["content"]) for i in seen if i.get("role") == "user"]
    assert len(users) == 2 and "keep me" in users[0] and "next" in users[1]
    assert fake.spec_violations == []


# ---- responses ----------------------------------------------------------------------------------


def test_streaming_response_yields_typed_events_and_stores_turn(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = client.conversations.create()
    fake.script(Reply(text="Hello from the fake model!", chunk_size=5))
    stream = client.responses.create(
        model=MODEL, conversation=conv.id, input="Say hello", instructions="Be brief.", stream=True
    )
    events = list(stream)

    expected_types = [
        ResponseCreatedEvent,
        ResponseInProgressEvent,
        ResponseOutputItemAddedEvent,
        ResponseContentPartAddedEvent,
        *[ResponseTextDeltaEvent] * 6,
        ResponseTextDoneEvent,
        ResponseContentPartDoneEvent,
        ResponseOutputItemDoneEvent,
        ResponseCompletedEvent,
    ]
    assert [type(e) for e in events] == expected_types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(d.delta for d in deltas) == "Hello from the fake model!"
    assert deltas[0].delta == "Hello"

    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent)
    response = final.response
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.output_text == "Hello from the fake model!"
    assert response.conversation is not None and response.conversation.id == conv.id
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response.instructions == "Be brief."

    items = fake.conversation(conv.id)["items"]
    assert _texts(items) == [("user", "Say hello"), ("assistant", "Hello from the fake model!")]
    assert items[1]["content"][0] == {
        "type": "output_text",
        "text": "Hello from the fake model!",
        "annotations": [],
        "logprobs": [],
    }
    assert items[1]["id"] == response.output[0].id
    # Recoverable by id, e.g. after a dropped stream.
    assert client.responses.retrieve(response.id).output_text == "Hello from the fake model!"
    assert fake.spec_violations == []


def test_non_streaming_response_and_default_echo(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=[{"role": "user", "content": "ping"}])
    assert isinstance(response, Response)
    assert response.output_text == "Echo: ping" and response.conversation is None
    assert fake.spec_violations == []


def test_model_input_includes_earlier_turns(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    tools: Any = [{"type": "web_search"}]
    client.responses.create(model=MODEL, conversation=conv.id, input="first", tools=tools)
    client.responses.create(
        model=MODEL,
        conversation={"id": conv.id},
        input=[{"role": "user", "content": "second"}],
        instructions="sys",
    )

    first, second = fake.model_inputs
    assert _texts(first["input_items"]) == [("user", "first")]
    assert first["tools"] == tools and first["conversation"] == conv.id and first["model"] == MODEL
    assert _texts(second["input_items"]) == [
        ("user", "first"),
        ("assistant", "Echo: first"),
        ("user", "second"),
    ]
    assert second["instructions"] == "sys" and second["response_id"].startswith("resp_")
    assert _texts(fake.conversation(conv.id)["items"])[-1] == ("assistant", "Echo: second")
    assert fake.spec_violations == []


def test_previous_response_id_chains_without_conversation(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="one")
    client.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    assert _texts(fake.model_inputs[1]["input_items"]) == [
        ("user", "one"),
        ("assistant", "Echo: one"),
        ("user", "two"),
    ]


def test_conversation_locked_while_response_in_progress(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    other = client.conversations.create()
    fake.script(Reply(text="slow answer", first_token_delay=0.5))
    stream = client.responses.create(model=MODEL, conversation=conv.id, input="slow", stream=True)

    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, conversation=conv.id, input="impatient")
    assert info.value.status_code == 400
    assert info.value.body == {
        "message": "Another response is currently in progress for this conversation.",
        "type": "invalid_request_error",
        "param": "conversation",
        "code": "conversation_locked",
    }
    # Other conversations are not blocked.
    assert client.responses.create(model=MODEL, conversation=other.id, input="x").status == "completed"

    assert list(stream)[-1].type == "response.completed"
    assert client.responses.create(model=MODEL, conversation=conv.id, input="now").status == "completed"
    assert _texts(fake.conversation(conv.id)["items"]) == [
        ("user", "slow"),
        ("assistant", "slow answer"),
        ("user", "now"),
        ("assistant", "Echo: now"),
    ]


def test_concurrent_streams_do_not_block_each_other(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    convs = [client.conversations.create().id for _ in range(4)]
    fake.script(*[Reply(text="abcdefgh", chunk_size=2, first_token_delay=0.3, chunk_delay=0.05)] * 4)
    results: list[str] = []

    def run(conv_id: str) -> None:
        stream = client.responses.create(model=MODEL, conversation=conv_id, input="go", stream=True)
        results.append("".join(e.delta for e in stream if isinstance(e, ResponseTextDeltaEvent)))

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(c,)) for c in convs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["abcdefgh"] * 4
    assert time.monotonic() - started < 1.2  # 4 x 0.45 s would take 1.8 s if serialized


def test_scripted_http_errors(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(
        Reply(http_status=500),
        Reply(http_status=429, retry_after=7, error_message="Slow down"),
    )
    with pytest.raises(openai.InternalServerError) as server_error:
        client.responses.create(model=MODEL, conversation=conv.id, input="a")
    assert server_error.value.status_code == 500 and server_error.value.code == "server_error"
    assert server_error.value.type == "server_error"

    with pytest.raises(openai.RateLimitError) as rate_limited:
        client.responses.create(model=MODEL, conversation=conv.id, input="b", stream=True)
    assert rate_limited.value.response.headers["retry-after"] == "7"
    assert rate_limited.value.code == "rate_limit_exceeded"
    assert rate_limited.value.message.endswith("Slow down")

    # Rejected requests leave no trace in the conversation and never reached the model.
    assert fake.conversation(conv.id)["items"] == []
    assert fake.model_inputs == []
    # The queue is empty again: back to the default reply, and the conversation is not locked.
    assert client.responses.create(model=MODEL, conversation=conv.id, input="c").output_text == "Echo: c"


def test_drop_mid_stream_raises_and_stores_nothing(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(Reply(text="0123456789", chunk_size=2, drop_after_chunks=2))
    deltas: list[str] = []
    response_id = ""
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(model=MODEL, conversation=conv.id, input="hi", stream=True):
            if isinstance(event, ResponseCreatedEvent):
                response_id = event.response.id
            if isinstance(event, ResponseTextDeltaEvent):
                deltas.append(event.delta)
    assert deltas == ["01", "23"]
    assert fake.conversation(conv.id)["items"] == []
    recovered = client.responses.retrieve(response_id)
    assert recovered.status == "failed" and recovered.error is not None
    # Non-streaming: the connection closes without an answer.
    fake.script(Reply(drop_after_chunks=0))
    with pytest.raises(openai.APIConnectionError):
        client.responses.create(model=MODEL, conversation=conv.id, input="again")
    assert fake.conversation(conv.id)["items"] == []
    assert client.responses.create(model=MODEL, conversation=conv.id, input="ok").status == "completed"


def test_drop_with_server_completing_is_recoverable(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(
        Reply(text="full answer", chunk_size=4, chunk_delay=0.1, drop_after_chunks=1, server_completes=True)
    )
    response_id = ""
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(model=MODEL, conversation=conv.id, input="hi", stream=True):
            if isinstance(event, ResponseCreatedEvent):
                response_id = event.response.id
    assert client.responses.retrieve(response_id).status == "in_progress"
    deadline = time.monotonic() + 5
    while (recovered := client.responses.retrieve(response_id)).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert recovered.status == "completed" and recovered.output_text == "full answer"
    assert _texts(fake.conversation(conv.id)["items"]) == [("user", "hi"), ("assistant", "full answer")]


def test_client_hanging_up_cancels_and_unlocks(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(Reply(text="x" * 400, chunk_size=1, chunk_delay=0.01))
    stream = client.responses.create(model=MODEL, conversation=conv.id, input="hi", stream=True)
    response_id = next(iter(stream)).response.id  # type: ignore[union-attr]
    stream.close()
    deadline = time.monotonic() + 5
    while client.responses.retrieve(response_id).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.responses.retrieve(response_id).status == "cancelled"
    assert fake.conversation(conv.id)["items"] == []
    assert client.responses.create(model=MODEL, conversation=conv.id, input="again").status == "completed"


def test_fail_with_emits_response_failed(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(Reply(text="partial", fail_with="server_error", error_message="boom"))
    events = list(client.responses.create(model=MODEL, conversation=conv.id, input="hi", stream=True))
    failed = events[-1]
    assert isinstance(failed, ResponseFailedEvent)
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert (failed.response.error.code, failed.response.error.message) == ("server_error", "boom")
    assert "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)) == "partial"
    assert fake.conversation(conv.id)["items"] == []
    assert client.responses.retrieve(failed.response.id).status == "failed"


def test_background_response_can_be_polled(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script(Reply(text="later", first_token_delay=0.2))
    created = client.responses.create(model=MODEL, input="bg", background=True)
    assert created.status == "in_progress"
    deadline = time.monotonic() + 5
    while (polled := client.responses.retrieve(created.id)).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert polled.output_text == "later"


def test_unknown_conversation_is_404(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, conversation="conv_missing", input="x")
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list("conv_missing")
    assert fake.model_inputs == []


# ---- request checking ---------------------------------------------------------------------------


def test_spec_violation_is_rejected_and_recorded(fake: FakeOpenAI) -> None:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    r = httpx2.post(f"{fake.base_url}/responses", json={"model": 123, "input": "x"}, headers=headers)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "$.model" in error["message"]
    [violation] = fake.spec_violations
    assert violation.startswith("POST /v1/responses: $.model")
    assert fake.model_inputs == []

    # Nested problems and other endpoints are checked too.
    bad_items = {"items": [{"role": "user", "content": [{"type": "input_txt", "text": "x"}]}]}
    conv = httpx2.post(f"{fake.base_url}/conversations", json={}, headers=headers).json()
    r = httpx2.post(f"{fake.base_url}/conversations/{conv['id']}/items", json=bad_items, headers=headers)
    assert r.status_code == 400
    assert "$.items[0]" in fake.spec_violations[-1]
    r = httpx2.post(f"{fake.base_url}/conversations/{conv['id']}", json={}, headers=headers)
    assert r.status_code == 400 and "'metadata' is a required property" in fake.spec_violations[-1]
    r = httpx2.get(f"{fake.base_url}/conversations/{conv['id']}/items?order=sideways", headers=headers)
    assert r.status_code == 400 and "query parameter 'order'" in fake.spec_violations[-1]
    r = httpx2.post(f"{fake.base_url}/responses", content=b"{not json", headers=headers)
    assert r.status_code == 400 and "not valid JSON" in fake.spec_violations[-1]
    assert len(fake.spec_violations) == 5


def test_requests_are_recorded_and_unknown_paths_404(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    client.conversations.create(metadata={"a": "b"})
    r = httpx2.get(f"{fake.base_url}/nope", headers={"Authorization": f"Bearer {fake.api_key}"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    first, second = fake.requests
    assert first == {
        "method": "POST",
        "path": "/v1/conversations",
        "query": {},
        "json": {"metadata": {"a": "b"}},
        "authorization_ok": True,
    }
    assert (second["method"], second["path"]) == ("GET", "/v1/nope")


def test_bad_api_key_is_401(fake: FakeOpenAI) -> None:
    bad = openai.OpenAI(api_key="sk-wrong", base_url=fake.base_url, max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as info:
        bad.conversations.create()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    r = httpx2.post(f"{fake.base_url}/conversations", json={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert [req["authorization_ok"] for req in fake.requests] == [False, False]
    assert fake.conversations == {}


def test_reset_clears_everything(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    client.conversations.create()
    fake.script(Reply(text="never used"))
    httpx2.post(
        f"{fake.base_url}/responses", json={"model": 1}, headers={"Authorization": f"Bearer {fake.api_key}"}
    )
    fake.reset()
    assert (fake.conversations, fake.requests, fake.spec_violations, fake.model_inputs) == ({}, [], [], [])
    assert client.responses.create(model=MODEL, input="x").output_text == "Echo: x"


# ---- what the fake emits follows the spec ---------------------------------------------------------


def _event_schemas() -> dict[str, str]:
    """Map each stream event type to its component schema, from the ResponseStreamEvent union."""
    spec = get_spec()
    schemas = spec.document["components"]["schemas"]
    out = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        [event_type] = schemas[name]["properties"]["type"]["enum"]
        out[event_type] = name
    return out


@pytest.mark.parametrize(
    "reply",
    [Reply(text="Spec-shaped text", chunk_size=4), Reply(text="partial", fail_with="server_error")],
    ids=["completed", "failed"],
)
def test_emitted_events_and_objects_validate_against_spec(fake: FakeOpenAI, reply: Reply) -> None:
    spec = get_spec()
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    conv = httpx2.post(
        f"{fake.base_url}/conversations", json={"metadata": {"t": "1"}}, headers=headers
    ).json()
    assert spec.schema_errors("ConversationResource", conv) == []

    fake.script(reply)
    body = {
        "model": MODEL,
        "conversation": conv["id"],
        "input": [{"role": "user", "content": "hi"}],
        "instructions": "Be nice.",
        "tools": [{"type": "web_search"}],
        "metadata": {"slack": "C1"},
        "stream": True,
        "store": True,
    }
    events = _raw_sse(fake, body)
    by_type = _event_schemas()
    for event in events:
        assert spec.schema_errors(by_type[event["type"]], event) == [], event["type"]
        assert spec.schema_errors("ResponseStreamEvent", event) == [], event["type"]
    final = events[-1]["response"]
    assert spec.schema_errors("Response", final) == []
    assert final["status"] == ("failed" if reply.fail_with else "completed")
    stored = httpx2.get(f"{fake.base_url}/responses/{final['id']}", headers=headers).json()
    assert stored == final

    if not reply.fail_with:
        items = httpx2.get(f"{fake.base_url}/conversations/{conv['id']}/items", headers=headers).json()
        assert spec.schema_errors("ConversationItemList", items) == []
        assert len(items["data"]) == 2
    non_stream = httpx2.post(
        f"{fake.base_url}/responses", json={**body, "stream": False, "conversation": None}, headers=headers
    ).json()
    assert spec.schema_errors("Response", non_stream) == []
    deleted = httpx2.delete(f"{fake.base_url}/conversations/{conv['id']}", headers=headers).json()
    assert spec.schema_errors("DeletedConversationResource", deleted) == []
    assert fake.spec_violations == []


def test_spec_validation_is_fast_and_cached() -> None:
    spec = get_spec()
    body = {
        "model": MODEL,
        "conversation": "conv_1",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}] * 5,
        "tools": [{"type": "web_search"}],
        "stream": True,
    }
    no_query: MultiDict[str] = MultiDict()
    assert spec.request_errors("POST", "/responses", no_query, body, True) == []
    started = time.perf_counter()
    for _ in range(50):
        spec.request_errors("POST", "/responses", no_query, body, True)
    assert (time.perf_counter() - started) / 50 < 0.02
    assert get_spec() is spec


# ---- background responses: resumable streams, cancel, incomplete ---------------------------------


def _wait_status(client: openai.OpenAI, response_id: str, *statuses: str) -> Response:
    deadline = time.monotonic() + 5
    while (found := client.responses.retrieve(response_id)).status not in statuses:
        assert time.monotonic() < deadline, found.status
        time.sleep(0.02)
    return found


def test_background_stream_survives_a_drop_and_resumes_after_the_last_event(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = client.conversations.create()
    fake.script(
        Reply(text="0123456789", chunk_size=2, chunk_delay=0.05, drop_after_chunks=2, server_completes=True)
    )
    first: list[str] = []
    last_seq = -1
    response_id = ""
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(
            model=MODEL, conversation=conv.id, input="hi", stream=True, background=True
        ):
            last_seq = event.sequence_number
            if isinstance(event, ResponseCreatedEvent):
                response_id = event.response.id
                assert event.response.background is True
            if isinstance(event, ResponseTextDeltaEvent):
                first.append(event.delta)
    assert first == ["01", "23"]
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=last_seq))
    assert [e.sequence_number for e in rest] == list(range(last_seq + 1, last_seq + 1 + len(rest)))
    assert "".join(e.delta for e in rest if isinstance(e, ResponseTextDeltaEvent)) == "456789"
    assert isinstance(rest[-1], ResponseCompletedEvent)
    # Committed once, whatever happened to the connection.
    assert _texts(fake.conversation(conv.id)["items"]) == [("user", "hi"), ("assistant", "0123456789")]
    # Without starting_after: the whole log again, from response.created.
    replay = list(client.responses.retrieve(response_id, stream=True))
    assert isinstance(replay[0], ResponseCreatedEvent)
    assert "".join(e.delta for e in replay if isinstance(e, ResponseTextDeltaEvent)) == "0123456789"
    assert fake.spec_violations == []


def test_background_stream_client_hanging_up_does_not_cancel(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(Reply(text="still here", chunk_size=2, chunk_delay=0.02))
    stream = client.responses.create(
        model=MODEL, conversation=conv.id, input="hi", stream=True, background=True
    )
    response_id = next(iter(stream)).response.id  # type: ignore[union-attr]
    stream.close()
    assert _wait_status(client, response_id, "completed", "cancelled").status == "completed"
    assert _texts(fake.conversation(conv.id)["items"])[-1] == ("assistant", "still here")


def test_background_drop_without_server_completion_ends_the_log_failed(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = client.conversations.create()
    fake.script(Reply(text="0123456789", chunk_size=2, drop_after_chunks=1))
    response_id = ""
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(
            model=MODEL, conversation=conv.id, input="hi", stream=True, background=True
        ):
            if isinstance(event, ResponseCreatedEvent):
                response_id = event.response.id
    events = list(client.responses.retrieve(response_id, stream=True))
    assert isinstance(events[-1], ResponseFailedEvent)
    assert events[-1].response.error is not None and events[-1].response.error.code == "server_error"
    assert client.responses.retrieve(response_id).status == "failed"
    assert fake.conversation(conv.id)["items"] == []


def test_only_background_responses_stream_again_or_cancel(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    done = client.responses.create(model=MODEL, input="fg")
    with pytest.raises(openai.BadRequestError):
        list(client.responses.retrieve(done.id, stream=True))
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(done.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_unknown")
    assert fake.spec_violations == []


def test_cancel_stops_a_background_response(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(Reply(text="never finished", first_token_delay=30))
    assert fake.scripts_left == 1
    created = client.responses.create(model=MODEL, conversation=conv.id, input="hi", background=True)
    assert fake.scripts_left == 0
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert fake.conversation(conv.id)["items"] == []
    # The conversation is free again, and a stream of the cancelled response ends.
    assert client.responses.create(model=MODEL, conversation=conv.id, input="next").status == "completed"
    assert not any(
        isinstance(e, ResponseTextDeltaEvent) for e in client.responses.retrieve(created.id, stream=True)
    )


def test_incomplete_reply_streams_partial_text_and_validates(fake: FakeOpenAI) -> None:
    spec = get_spec()
    fake.script(Reply(text="cut short", incomplete_reason="max_output_tokens"))
    events = _raw_sse(fake, {"model": MODEL, "input": "hi", "stream": True, "background": True})
    by_type = _event_schemas()
    for event in events:
        assert spec.schema_errors(by_type[event["type"]], event) == [], event["type"]
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert spec.schema_errors("Response", final["response"]) == []
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "cut short"


_CREATE_RESPONSE = "/paths/~1responses/post/requestBody/content/application~1json/schema"
_CREATE_CONVERSATION = "/paths/~1conversations/post/requestBody/content/application~1json/schema"
_BOT_BODY: dict[str, Any] = {
    "stream": True,
    "model": "gpt-5.1",
    "instructions": "You are a helpful assistant inside Slack.",
    "conversation": "conv_abc",
    "store": True,
    "background": True,
    "safety_identifier": "a0d06a83b3f2c94ea79376e349bef300",
    "context_management": [{"type": "compaction", "compact_threshold": 200000}],
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
    "tools": [
        {
            "type": "function",
            "name": "current_time",
            "strict": True,
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
            "description": "The time.",
        },
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
    ],
    "metadata": {"slack_team": "T0TEAM1"},
}


@pytest.mark.parametrize(
    ("pointer", "change"),
    [
        (_CREATE_RESPONSE, {}),
        (_CREATE_RESPONSE, {"temperature": "hot"}),
        (_CREATE_RESPONSE, {"model": 5}),
        (_CREATE_RESPONSE, {"input": [{"type": "message", "role": "robot", "content": "x"}]}),
        (_CREATE_RESPONSE, {"input": [{"type": "message", "role": "user", "content": [{"type": "nope"}]}]}),
        (_CREATE_RESPONSE, {"input": [{"type": "function_call_output", "call_id": "c", "output": "ok"}]}),
        (_CREATE_RESPONSE, {"input": [{"type": "function_call_output", "output": "ok"}]}),
        (_CREATE_RESPONSE, {"tools": [{"type": "function"}]}),
        (_CREATE_RESPONSE, {"tools": [{"type": "made_up_tool"}]}),
        (_CREATE_RESPONSE, {"tools": [{"type": "web_search"}, {"type": "code_interpreter", "container": 1}]}),
        (_CREATE_RESPONSE, {"reasoning": {"effort": "enormous"}}),
        (_CREATE_RESPONSE, {"reasoning": {"effort": "low", "summary": "auto"}}),
        (_CREATE_RESPONSE, {"text": {"format": {"type": "json_schema"}}}),
        (_CREATE_RESPONSE, {"metadata": {"k": 1}}),
        (_CREATE_RESPONSE, {"max_output_tokens": "many"}),
        (_CREATE_RESPONSE, {"conversation": {"id": "conv_abc"}}),
        (_CREATE_RESPONSE, {"conversation": 7}),
        (_CREATE_RESPONSE, {"context_management": [{"type": "compaction", "compact_threshold": "x"}]}),
        (_CREATE_RESPONSE, {"include": ["file_search_call.results"]}),
        (_CREATE_RESPONSE, {"include": ["everything"]}),
        (_CREATE_RESPONSE, {"tool_choice": {"type": "function", "name": "current_time"}}),
        (_CREATE_RESPONSE, {"tool_choice": "sometimes"}),
        (_CREATE_CONVERSATION, {"metadata": {"a": "b"}}),
        (_CREATE_CONVERSATION, {"items": [{"type": "message", "role": "user", "content": "hi"}]}),
        (_CREATE_CONVERSATION, {"items": "hi"}),
        (_CREATE_CONVERSATION, {"metadata": []}),
    ],
)
def test_the_fast_validator_agrees_with_the_python_one(pointer: str, change: dict[str, Any]) -> None:
    """The fake answers "valid?" with jsonschema-rs and names errors with jsonschema: the two must agree on
    every body, or the fake would accept what the spec forbids (or refuse what it allows)."""
    spec = get_spec()
    body = {**_BOT_BODY, **change} if pointer == _CREATE_RESPONSE else change
    python_valid = not list(spec.validator(pointer).iter_errors(body))
    assert spec.fast_validator(pointer).is_valid(body) == python_valid
    assert (spec.errors(pointer, body) == []) == python_valid
