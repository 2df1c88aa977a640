"""Tool use in the fake OpenAI (function calls, code interpreter, web search, files and containers), driven
by the official SDK and checked against the spec."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import openai
import pytest
from openai.types.responses import (
    ResponseCodeInterpreterToolCall,
    ResponseCompletedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseOutputMessage,
    ResponseTextDeltaEvent,
)

from tests.fakes.openai_api import ContainerFile, FakeOpenAI, Reply, ToolCall, get_spec
from tests.fakes.openai_tools import CONTENT_CHUNK, McpScript, pattern_bytes

MODEL = "gpt-4.1-mini"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
TIME: Any = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    "strict": False,
}


# Bytes the kernels may hold between the fake and a reader that stopped: the fake sends a chunk only once
# the last one was acknowledged, so a few chunks at most (none, as a rule).
SOCKET_SLACK = 4 * CONTENT_CHUNK


def _headers(fake: FakeOpenAI) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake.api_key}"}


def _raw_sse(fake: FakeOpenAI, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    with httpx2.stream(
        "POST", f"{fake.base_url}/responses", json=body, headers=_headers(fake), timeout=10
    ) as r:
        assert r.status_code == 200, r.read()
        for block in r.read().decode().split("\n\n"):
            if block.strip():
                lines = dict(line.split(": ", 1) for line in block.split("\n"))
                data = json.loads(lines["data"])
                assert data["type"] == lines["event"]
                events.append(data)
    return events


def _event_schemas() -> dict[str, str]:
    schemas = get_spec().document["components"]["schemas"]
    out = {}
    for ref in schemas["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        [event_type] = schemas[name]["properties"]["type"]["enum"]
        out[event_type] = name
    return out


def _assert_events_follow_spec(events: list[dict[str, Any]]) -> None:
    spec, by_type = get_spec(), _event_schemas()
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert spec.schema_errors(by_type[event["type"]], event) == [], event
        assert spec.schema_errors("ResponseStreamEvent", event) == [], event["type"]
        if "item" in event:
            assert spec.schema_errors("OutputItem", event["item"]) == [], event


def _types(events: list[Any]) -> list[str]:
    return [e["type"] if isinstance(e, dict) else e.type for e in events]


# ---- function calls ------------------------------------------------------------------------------


def test_two_round_function_call_exchange(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(
        Reply(tool_calls=(ToolCall("get_weather", {"city": "Paris"}),), chunk_size=5),
        Reply(echo_tool_outputs=True),
    )
    events = list(
        client.responses.create(
            model=MODEL, conversation=conv.id, input="Weather in Paris?", tools=[WEATHER], stream=True
        )
    )
    assert _types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * 4,  # '{"city": "Paris"}' in 5-char pieces
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    assert "".join(deltas) == '{"city": "Paris"}'
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent)
    [call] = final.response.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.id is not None and call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert (call.name, json.loads(call.arguments), call.status) == (
        "get_weather",
        {"city": "Paris"},
        "completed",
    )
    assert final.response.output_text == ""
    # The call is part of the conversation now.
    items = fake.conversation(conv.id)["items"]
    assert [i["type"] for i in items] == ["message", "function_call"]
    assert items[1]["call_id"] == call.call_id

    second = client.responses.create(
        model=MODEL,
        conversation=conv.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Tool said: 18C and sunny"
    assert fake.tool_outputs == [
        {
            "call_id": call.call_id,
            "name": "get_weather",
            "output": "18C and sunny",
            "response_id": second.id,
            "conversation": conv.id,
        }
    ]
    assert [i["type"] for i in fake.conversation(conv.id)["items"]] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    first_input, second_input = fake.model_inputs
    assert first_input["tools"] == [WEATHER] and second_input["tools"] == [WEATHER]
    assert [i["type"] for i in second_input["input_items"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert fake.spec_violations == [] and fake.tool_mismatches == []


def test_missing_or_unknown_tool_output_is_rejected(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(Reply(tool_calls=(ToolCall("get_weather", '{"city":"Oslo"}', call_id="call_fixed1"),)))
    first = client.responses.create(model=MODEL, conversation=conv.id, input="Oslo?", tools=[WEATHER])
    assert isinstance(first.output[0], ResponseFunctionToolCall)
    assert first.output[0].call_id == "call_fixed1" and first.output[0].arguments == '{"city":"Oslo"}'

    fake.script(Reply(text="kept for later"))
    with pytest.raises(openai.BadRequestError) as missing:
        client.responses.create(model=MODEL, conversation=conv.id, input="never mind", tools=[WEATHER])
    assert missing.value.body == {
        "message": "No tool output found for function call call_fixed1.",
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(
            model=MODEL,
            conversation=conv.id,
            input=[
                {"type": "function_call_output", "call_id": "call_fixed1", "output": "ok"},
                {"type": "function_call_output", "call_id": "call_nope", "output": "?"},
            ],
        )
    assert unknown.value.message.endswith(
        "No tool call found for function call output with call_id call_nope."
    )
    # Rejected before the model: no script used, nothing recorded or committed.
    assert fake.scripts_left == 1 and len(fake.model_inputs) == 1 and fake.tool_outputs == []
    assert [i["type"] for i in fake.conversation(conv.id)["items"]] == ["message", "function_call"]
    # previous_response_id chains are checked the same way.
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, previous_response_id=first.id, input="hm")
    answered = client.responses.create(
        model=MODEL,
        conversation=conv.id,
        input=[{"type": "function_call_output", "call_id": "call_fixed1", "output": "ok"}],
    )
    assert answered.output_text == "kept for later"
    assert fake.spec_violations == []


def test_parallel_calls_after_text_and_their_outputs(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(
        Reply(
            text="Checking both.",
            tool_calls=(ToolCall("get_weather", {"city": "Rome"}), ToolCall("get_time", {"tz": "CET"})),
        ),
        Reply(echo_tool_outputs=True),
    )
    events = list(
        client.responses.create(
            model=MODEL, conversation=conv.id, input="Rome?", tools=[WEATHER, TIME], stream=True
        )
    )
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [(e.output_index, e.item.type) for e in added] == [  # type: ignore[union-attr]
        (0, "message"),
        (1, "function_call"),
        (2, "function_call"),
    ]
    response = events[-1].response  # type: ignore[union-attr]
    message, weather, clock = response.output
    assert isinstance(message, ResponseOutputMessage) and response.output_text == "Checking both."
    assert isinstance(weather, ResponseFunctionToolCall) and isinstance(clock, ResponseFunctionToolCall)
    assert (weather.name, clock.name) == ("get_weather", "get_time") and weather.call_id != clock.call_id

    # Both outputs are needed: one alone is rejected.
    with pytest.raises(openai.BadRequestError) as missing:
        client.responses.create(
            model=MODEL,
            conversation=conv.id,
            input=[{"type": "function_call_output", "call_id": weather.call_id, "output": "warm"}],
        )
    assert clock.call_id in missing.value.message
    both = client.responses.create(
        model=MODEL,
        conversation=conv.id,
        input=[
            {"type": "function_call_output", "call_id": weather.call_id, "output": "warm"},
            {"type": "function_call_output", "call_id": clock.call_id, "output": "10:00"},
        ],
    )
    assert both.output_text == "Tool said: warm\nTool said: 10:00"
    assert [(o["name"], o["output"]) for o in fake.tool_outputs] == [
        ("get_weather", "warm"),
        ("get_time", "10:00"),
    ]
    assert fake.spec_violations == []


def test_sdk_stream_helper_accumulates_function_calls(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script(
        Reply(text="One moment.", tool_calls=(ToolCall("get_weather", {"city": "Lima"}),), chunk_size=3)
    )
    with client.responses.stream(model=MODEL, input="Lima?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    message, call = final.output
    assert isinstance(message, ResponseOutputMessage) and final.output_text == "One moment."
    assert isinstance(call, ResponseFunctionToolCall) and json.loads(call.arguments) == {"city": "Lima"}


def test_undeclared_or_serial_calls_are_not_made(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script(
        Reply(tool_calls=(ToolCall("launch_rockets"),)),
        Reply(tool_calls=(ToolCall("get_weather", {"city": "A"}), ToolCall("get_weather", {"city": "B"}))),
    )
    undeclared = client.responses.create(model=MODEL, input="go", tools=[WEATHER])
    assert undeclared.output_text == "Echo: go"  # the model answers instead of calling an unknown tool
    serial = client.responses.create(model=MODEL, input="go", tools=[WEATHER], parallel_tool_calls=False)
    assert [o.type for o in serial.output] == ["function_call"]
    first, second = fake.tool_mismatches
    assert first.startswith(f"{undeclared.id}: function call 'launch_rockets'")
    assert second.startswith(f"{serial.id}: 2 function calls scripted, but parallel_tool_calls is false")


def test_failed_turn_with_calls_leaves_nothing_pending(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    fake.script(Reply(tool_calls=(ToolCall("get_weather", {"city": "X"}),), fail_with="server_error"))
    events = list(
        client.responses.create(model=MODEL, conversation=conv.id, input="x", tools=[WEATHER], stream=True)
    )
    assert events[-1].type == "response.failed"
    assert fake.conversation(conv.id)["items"] == []
    assert client.responses.create(model=MODEL, conversation=conv.id, input="y").output_text == "Echo: y"


def test_background_stream_with_calls_resumes(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script(Reply(tool_calls=(ToolCall("get_weather", {"city": "Kyiv"}),), chunk_size=2))
    events = list(
        client.responses.create(model=MODEL, input="k", tools=[WEATHER], stream=True, background=True)
    )
    cut = next(i for i, e in enumerate(events) if e.type == "response.function_call_arguments.delta")
    rest = list(client.responses.retrieve(events[-1].response.id, stream=True, starting_after=cut))  # type: ignore[union-attr]
    assert [e.sequence_number for e in rest] == [e.sequence_number for e in events[cut + 1 :]]
    assert _types(rest) == _types(events[cut + 1 :])
    assert rest[-1].type == "response.completed"


# ---- code interpreter, files, containers ----------------------------------------------------------


def test_code_interpreter_run_and_container_file_download(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    data = client.files.create(file=("sales.csv", b"month,total\njan,3\n"), purpose="user_data")
    assert data.id.startswith("file-") and data.filename == "sales.csv" and data.bytes == 18
    tools: Any = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [data.id]}}]
    conv = client.conversations.create()
    code = "import matplotlib.pyplot as plt\nplt.savefig('/mnt/data/chart.png')"
    fake.script(
        Reply(
            text="Here is the chart: [chart.png](sandbox:/mnt/data/chart.png)",
            code=code,
            code_files=(ContainerFile("chart.png", PNG, "image/png"),),
            chunk_size=16,
        )
    )
    events = list(
        client.responses.create(model=MODEL, conversation=conv.id, input="Plot it", tools=tools, stream=True)
    )
    types = _types(events)
    assert types[:10] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        *["response.code_interpreter_call_code.delta"] * 5,
        "response.code_interpreter_call_code.done",
    ]
    assert types[10:13] == [
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
    ]
    assert "response.output_text.annotation.added" in types
    response = events[-1].response  # type: ignore[union-attr]
    run_item, message = response.output
    assert isinstance(run_item, ResponseCodeInterpreterToolCall) and run_item.code == code
    assert isinstance(message, ResponseOutputMessage)
    [annotation] = message.content[0].annotations  # type: ignore[union-attr]
    assert annotation.type == "container_file_citation"
    assert annotation.container_id == run_item.container_id and annotation.filename == "chart.png"
    text = response.output_text
    assert text[annotation.start_index : annotation.end_index] == "[chart.png](sandbox:/mnt/data/chart.png)"

    downloaded = client.containers.files.content.retrieve(
        annotation.file_id, container_id=annotation.container_id
    )
    assert downloaded.read() == PNG
    container = client.containers.retrieve(annotation.container_id)
    assert container.id.startswith("cntr_") and container.status == "running"
    listed = client.containers.files.list(annotation.container_id, order="asc")
    assert [(f.path, f.source, f.bytes) for f in listed.data] == [
        ("/mnt/data/sales.csv", "user", 18),
        ("/mnt/data/chart.png", "assistant", len(PNG)),
    ]
    got = client.containers.files.retrieve(annotation.file_id, container_id=annotation.container_id)
    assert got.id == annotation.file_id and got.id.startswith("cfile_")
    # The data file reached the container, and the test can see which files did.
    [run] = fake.code_runs
    assert run["input_file_ids"] == [data.id] and run["container_id"] == annotation.container_id
    assert run["files"] == [{"file_id": annotation.file_id, "filename": "chart.png"}]
    assert fake.container(annotation.container_id)["files"][0]["content"] == b"month,total\njan,3\n"
    assert [i["type"] for i in fake.conversation(conv.id)["items"]] == [
        "message",
        "code_interpreter_call",
        "message",
    ]
    with pytest.raises(openai.NotFoundError):
        client.containers.files.content.retrieve("cfile_nope", container_id=annotation.container_id)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(annotation.file_id, container_id="cntr_nope")
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve("cntr_nope")
    assert fake.spec_violations == []


def test_code_interpreter_default_text_logs_and_existing_container(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    container = client.containers.create(name="mine")
    tools: Any = [{"type": "code_interpreter", "container": container.id}]
    fake.script(
        Reply(
            code="print(1)",
            code_logs="1\n",
            code_files=(ContainerFile("a.txt", b"A", "text/plain"), ContainerFile("b.txt", b"B")),
        )
    )
    response = client.responses.create(
        model=MODEL, input="run", tools=tools, include=["code_interpreter_call.outputs"]
    )
    run_item, message = response.output
    assert isinstance(run_item, ResponseCodeInterpreterToolCall) and run_item.container_id == container.id
    assert run_item.outputs is not None and run_item.outputs[0].type == "logs"
    assert response.output_text == "[a.txt](sandbox:/mnt/data/a.txt) [b.txt](sandbox:/mnt/data/b.txt)"
    assert isinstance(message, ResponseOutputMessage)
    spans = [(a.start_index, a.end_index) for a in message.content[0].annotations]  # type: ignore[union-attr]
    assert spans == [(0, 32), (33, 65)]
    assert (
        client.containers.files.content.retrieve(
            message.content[0].annotations[0].file_id,  # type: ignore[union-attr]
            container_id=container.id,
        ).read()
        == b"A"
    )


def test_code_interpreter_needs_known_files_and_containers(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.script(Reply(code="x"))
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model=MODEL,
            input="x",
            tools=[{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-nope"]}}],
        )
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model=MODEL, input="x", tools=[{"type": "code_interpreter", "container": "cntr_nope"}]
        )
    assert fake.scripts_left == 1 and fake.model_inputs == []
    # Without the tool declared, no code runs.
    assert client.responses.create(model=MODEL, input="x").output_text == "Echo: x"
    assert fake.code_runs == [] and "code_interpreter" in fake.tool_mismatches[0]


def test_files_api(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    created = client.files.create(file=("notes.txt", b"hello"), purpose="assistants")
    assert client.files.retrieve(created.id).filename == "notes.txt"
    assert client.files.content(created.id).read() == b"hello"
    assert fake.file_content(created.id) == b"hello" and fake.files[created.id]["filename"] == "notes.txt"
    seeded = fake.add_file("seed.csv", b"1,2")
    assert client.files.retrieve(seeded).bytes == 3
    assert client.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]


# ---- web search ------------------------------------------------------------------------------------


def test_web_search_results_are_cited(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    results = (("https://example.com/a", "Title A"), ("https://example.org/b", "Title B"))
    fake.script(
        Reply(web_results=results), Reply(text="See Title B and https://example.com/a.", web_results=results)
    )
    events = list(
        client.responses.create(model=MODEL, input="news?", tools=[{"type": "web_search"}], stream=True)
    )
    assert _types(events)[2:7] == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    response = events[-1].response  # type: ignore[union-attr]
    search, message = response.output
    assert isinstance(search, ResponseFunctionWebSearch) and search.status == "completed"
    assert search.action.type == "search" and search.action.query == "news?"
    assert isinstance(message, ResponseOutputMessage)
    text = response.output_text
    assert text == "[Title A](https://example.com/a) [Title B](https://example.org/b)"
    annotations = message.content[0].annotations  # type: ignore[union-attr]
    assert [(a.type, a.url, a.title, text[a.start_index : a.end_index]) for a in annotations] == [  # type: ignore[union-attr]
        ("url_citation", "https://example.com/a", "Title A", "[Title A](https://example.com/a)"),
        ("url_citation", "https://example.org/b", "Title B", "[Title B](https://example.org/b)"),
    ]
    streamed = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    assert streamed == text

    scripted = client.responses.create(
        model=MODEL,
        input="again",
        tools=[{"type": "web_search_preview"}],
        include=["web_search_call.action.sources"],
    )
    search, message = scripted.output
    assert isinstance(search, ResponseFunctionWebSearch) and search.action.type == "search"
    assert [s.url for s in search.action.sources or []] == ["https://example.com/a", "https://example.org/b"]
    assert isinstance(message, ResponseOutputMessage)
    found = [scripted.output_text[a.start_index : a.end_index] for a in message.content[0].annotations]  # type: ignore[union-attr]
    assert found == ["https://example.com/a", "Title B"]
    assert fake.spec_violations == []


# ---- everything emitted follows the spec ------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(
            text="Let me look.", tool_calls=(ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time"))
        ),
        Reply(tool_calls=(ToolCall("get_weather", "{}"),), incomplete_reason="max_output_tokens"),
        Reply(code="print(2)", code_logs="2", code_files=(ContainerFile("out.png", PNG, "image/png"),)),
        Reply(web_results=(("https://example.com/x", "X"),), text="X is here"),
    ],
    ids=["function-calls", "incomplete-calls", "code-interpreter", "web-search"],
)
def test_tool_events_and_objects_validate_against_spec(fake: FakeOpenAI, reply: Reply) -> None:
    spec = get_spec()
    headers = _headers(fake)
    uploaded = httpx2.post(
        f"{fake.base_url}/files",
        files={"file": ("in.csv", b"a\n1\n")},
        data={"purpose": "user_data"},
        headers=headers,
    ).json()
    assert spec.schema_errors("OpenAIFile", uploaded) == []
    conv = httpx2.post(f"{fake.base_url}/conversations", json={}, headers=headers).json()
    fake.script(reply)
    body = {
        "model": MODEL,
        "conversation": conv["id"],
        "input": [{"role": "user", "content": "hi"}],
        "tools": [
            WEATHER,
            TIME,
            {"type": "web_search"},
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": [uploaded["id"]]}},
        ],
        "include": ["code_interpreter_call.outputs", "web_search_call.action.sources"],
        "stream": True,
    }
    events = _raw_sse(fake, body)
    _assert_events_follow_spec(events)
    final = events[-1]["response"]
    assert spec.schema_errors("Response", final) == []
    stored = httpx2.get(f"{fake.base_url}/responses/{final['id']}", headers=headers).json()
    assert stored == final
    items = httpx2.get(f"{fake.base_url}/conversations/{conv['id']}/items", headers=headers).json()
    assert spec.schema_errors("ConversationItemList", items) == []
    assert len(items["data"]) == 1 + len(final["output"])
    for run in fake.code_runs:
        cid = run["container_id"]
        container = httpx2.get(f"{fake.base_url}/containers/{cid}", headers=headers).json()
        assert spec.schema_errors("ContainerResource", container) == []
        files = httpx2.get(f"{fake.base_url}/containers/{cid}/files", headers=headers).json()
        assert spec.schema_errors("ContainerFileListResource", files) == []
        assert len(files["data"]) == 2
        for f in files["data"]:
            one = httpx2.get(f"{fake.base_url}/containers/{cid}/files/{f['id']}", headers=headers).json()
            assert spec.schema_errors("ContainerFileResource", one) == [] and one == f
    calls = [o for o in final["output"] if o["type"] == "function_call"]
    if calls:  # answering the calls validates too, and is recorded
        outputs = [{"type": "function_call_output", "call_id": c["call_id"], "output": "done"} for c in calls]
        fake.script(Reply(echo_tool_outputs=True))
        answer = _raw_sse(fake, {**body, "input": outputs})
        _assert_events_follow_spec(answer)
        assert answer[-1]["response"]["output"][0]["content"][0]["text"].startswith("Tool said: done")
        items = httpx2.get(f"{fake.base_url}/conversations/{conv['id']}/items", headers=headers).json()
        assert spec.schema_errors("ConversationItemList", items) == []
    assert fake.spec_violations == [] and fake.tool_mismatches == []


# ---- tools together with file search ------------------------------------------------------------------


def test_file_search_and_tools_in_one_response_keep_the_output_order(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    vs_id = fake.add_vector_store({"guide.txt": b"The walrus budget is five apples."})
    data = client.files.create(file=("in.csv", b"a\n1\n"), purpose="user_data")
    conv = httpx2.post(f"{fake.base_url}/conversations", json={}, headers=_headers(fake)).json()
    fake.script(
        Reply(
            text="Budget{cite} and [Title](https://example.com/t) and [o.txt](sandbox:/mnt/data/o.txt).",
            web_results=(("https://example.com/t", "Title"),),
            code="print(1)",
            code_files=(ContainerFile("o.txt", b"O", "text/plain"),),
            tool_calls=(ToolCall("get_weather", {"city": "Bern"}),),
            chunk_size=7,
        )
    )
    body = {
        "model": MODEL,
        "conversation": conv["id"],
        "input": [{"role": "user", "content": "What is the walrus budget?"}],
        "tools": [
            WEATHER,
            {"type": "file_search", "vector_store_ids": [vs_id]},
            {"type": "web_search"},
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": [data.id]}},
        ],
        "stream": True,
    }
    events = _raw_sse(fake, body)
    _assert_events_follow_spec(events)
    final = events[-1]["response"]
    assert get_spec().schema_errors("Response", final) == []
    assert [o["type"] for o in final["output"]] == [
        "file_search_call",
        "web_search_call",
        "code_interpreter_call",
        "message",
        "function_call",
    ]
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [0, 1, 2, 3, 4]
    [part] = final["output"][3]["content"]
    text = part["text"]
    kinds = [(a["type"], a.get("filename") or a.get("url")) for a in part["annotations"]]
    assert kinds == [
        ("file_citation", "guide.txt"),
        ("url_citation", "https://example.com/t"),
        ("container_file_citation", "o.txt"),
    ]
    url, container = part["annotations"][1:]
    assert text[url["start_index"] : url["end_index"]] == "[Title](https://example.com/t)"
    assert text[container["start_index"] : container["end_index"]] == "[o.txt](sandbox:/mnt/data/o.txt)"
    streamed = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert sorted(e["annotation_index"] for e in streamed) == [0, 1, 2]
    [run] = fake.code_runs
    assert run["input_file_ids"] == [data.id] and data.id in fake.files
    assert fake.model_inputs[0]["file_search"] == {"vector_store_ids": [vs_id], "hits": ["guide.txt"]}
    items = fake.conversation(conv["id"])["items"]
    assert [i["type"] for i in items] == ["message", *[o["type"] for o in final["output"]]]
    assert fake.spec_violations == [] and fake.tool_mismatches == []


def test_deleted_input_file_cannot_start_a_code_run(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    data = client.files.create(file=("gone.csv", b"x"), purpose="user_data")
    client.files.delete(data.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.create(name="c", file_ids=[data.id])
    with pytest.raises(openai.NotFoundError):
        client.files.content(data.id)
    assert fake.containers == {}


# ---- container file content: chunked, made lazily, paced by the reader ----------------------------------


def _wait(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_container_file_content_is_made_lazily_and_stops_where_the_reader_does(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    big = 24 * 1024 * 1024
    container = client.containers.create(name="big")
    fake.script(
        Reply(
            code="write()",
            code_files=(
                ContainerFile("huge.bin", size=big),
                ContainerFile("mid.bin", size=200_000),
                ContainerFile("small.txt", b"hello", "text/plain"),
            ),
        )
    )
    client.responses.create(
        model=MODEL, input="run", tools=[{"type": "code_interpreter", "container": container.id}]
    )
    listed = {f.path.rsplit("/", 1)[-1]: f for f in client.containers.files.list(container.id, order="asc")}
    assert listed["huge.bin"].bytes == big and listed["mid.bin"].bytes == 200_000
    assert get_spec().schema_errors("ContainerFileResource", listed["huge.bin"].model_dump()) == []

    # A reader that stops after 1 MB and closes: the transfer ends there, far short of 24 MB.
    read = 0
    content = client.containers.files.content.with_streaming_response
    with content.retrieve(listed["huge.bin"].id, container_id=container.id) as response:
        assert "content-length" not in response.headers  # chunked
        for chunk in response.iter_bytes(CONTENT_CHUNK):
            read += len(chunk)
            if read > 1024 * 1024:
                break
    _wait(lambda: fake.container_file_downloads[0].ended)
    [huge] = fake.container_file_downloads
    assert huge.filename == "huge.bin" and huge.size == big and not huge.completed
    # What was sent is what was read, plus what the two kernels' socket buffers held.
    assert read <= huge.sent <= read + SOCKET_SLACK

    # Read whole, a lazily made file is its pattern and a stored one its bytes.
    mid = client.containers.files.content.retrieve(listed["mid.bin"].id, container_id=container.id)
    assert mid.read() == pattern_bytes(0, 200_000)
    small = client.containers.files.content.retrieve(listed["small.txt"].id, container_id=container.id)
    assert small.read() == b"hello"
    _wait(lambda: all(d.ended for d in fake.container_file_downloads))
    assert [(d.filename, d.sent, d.completed) for d in fake.container_file_downloads[1:]] == [
        ("mid.bin", 200_000, True),
        ("small.txt", 5, True),
    ]
    # The spec's range for `limit` on the list: 1 to 100.
    for limit in (0, 101):
        with pytest.raises(openai.BadRequestError):
            client.containers.files.list(container.id, limit=limit)
    assert fake.spec_violations == []


# ---- hosted MCP servers (issue 16) --------------------------------------------------------------------

MCP_TOOL: Any = {
    "type": "mcp",
    "server_label": "ops",
    "server_url": "https://mcp.example.com/mcp",
    "require_approval": {"always": {"tool_names": ["deploy"]}, "never": {"tool_names": ["status"]}},
    "headers": {"Authorization": "Bearer x"},
}


def test_mcp_list_approval_and_call_follow_the_spec(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    spec, headers = get_spec(), _headers(fake)
    conv = httpx2.post(f"{fake.base_url}/conversations", json={}, headers=headers).json()
    deploy = McpScript("ops", "deploy", {"service": "web"}, output="deployed web")
    body = {"model": MODEL, "conversation": conv["id"], "tools": [MCP_TOOL], "stream": True}

    # Round 1: the tools are listed, the call needs approval: a request and no message.
    fake.script(Reply(mcp=deploy))
    events = _raw_sse(fake, {**body, "input": [{"role": "user", "content": "deploy web"}]})
    _assert_events_follow_spec(events)
    first = events[-1]["response"]
    assert [o["type"] for o in first["output"]] == ["mcp_list_tools", "mcp_approval_request"]
    assert "response.mcp_list_tools.completed" in _types(events)
    request = first["output"][1]
    assert (request["server_label"], request["name"], request["arguments"]) == (
        "ops",
        "deploy",
        '{"service": "web"}',
    )
    # openai-python reads the items as its own types.
    typed = client.responses.retrieve(first["id"])
    assert [type(o).__name__ for o in typed.output] == ["McpListTools", "McpApprovalRequest"]

    # An answer to no request of the conversation is refused.
    bad = httpx2.post(
        f"{fake.base_url}/responses",
        json={**body, "stream": False, "input": [approval("mcpr_nope", True)]},
        headers=headers,
    )
    assert bad.status_code == 400 and "mcpr_nope" in bad.json()["error"]["message"]

    # Round 2: approved: the call runs (listed once per conversation: not again) and the text uses it.
    fake.script(Reply(mcp=deploy))
    events = _raw_sse(fake, {**body, "input": [approval(request["id"], True)]})
    _assert_events_follow_spec(events)
    second = events[-1]["response"]
    assert [o["type"] for o in second["output"]] == ["mcp_call", "message"]
    call = second["output"][0]
    assert call["approval_request_id"] == request["id"] and call["output"] == "deployed web"
    assert {"response.mcp_call_arguments.done", "response.mcp_call.completed"} <= set(_types(events))
    assert second["output"][1]["content"][0]["text"] == "MCP said: deployed web"

    # Round 3: a tool that needs no approval is called at once; a failing one says so.
    fake.script(Reply(mcp=McpScript("ops", "status", error="server down")))
    events = _raw_sse(fake, {**body, "input": [{"role": "user", "content": "status?"}]})
    _assert_events_follow_spec(events)
    failed = events[-1]["response"]["output"][0]
    assert failed["status"] == "failed" and failed["error"]["type"] == "mcp_tool_execution_error"
    assert "response.mcp_call.failed" in _types(events)
    items = httpx2.get(f"{fake.base_url}/conversations/{conv['id']}/items", headers=headers).json()
    assert spec.schema_errors("ConversationItemList", items) == []
    assert fake.mcp_tools_seen[0]["headers"] == {"Authorization": "Bearer x"}
    assert fake.spec_violations == [] and fake.tool_mismatches == []


def test_a_denied_mcp_call_is_not_made(fake: FakeOpenAI) -> None:
    headers = _headers(fake)
    conv = httpx2.post(f"{fake.base_url}/conversations", json={}, headers=headers).json()
    deploy = McpScript("ops", "deploy", output="deployed web")
    body = {"model": MODEL, "conversation": conv["id"], "tools": [MCP_TOOL], "stream": True}
    fake.script(Reply(mcp=deploy), Reply(mcp=deploy))
    first = _raw_sse(fake, {**body, "input": [{"role": "user", "content": "deploy"}]})[-1]["response"]
    request_id = first["output"][-1]["id"]
    events = _raw_sse(fake, {**body, "input": [approval(request_id, False)]})
    _assert_events_follow_spec(events)
    output = events[-1]["response"]["output"]
    assert [o["type"] for o in output] == ["message"]
    assert "not approved" in output[0]["content"][0]["text"]
    # Not declared: not called (the model can't use a server it was not given).
    fake.script(Reply(mcp=McpScript("elsewhere", "deploy")))
    _raw_sse(fake, {**body, "input": [{"role": "user", "content": "again"}]})
    assert any("MCP server 'elsewhere'" in m for m in fake.tool_mismatches)
    assert fake.spec_violations == []


def approval(request_id: str, approve: bool) -> dict[str, Any]:
    return {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}
