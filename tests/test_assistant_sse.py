"""bot.sse: the fast Responses event-stream reader gives what openai-python's AsyncStream gives."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseCompletedEvent, ResponseCreatedEvent

from bot.assistant.sse import LightCompleted, LightEvent, SSEParser, TextDelta, events, light_completed
from tests.fakes.openai_api import FakeOpenAI, Reply

MODEL = "gpt-5.1"


def parse(*chunks: bytes) -> list[tuple[str | None, str]]:
    parser = SSEParser()
    out = [pair for chunk in chunks for pair in parser.feed(chunk)]
    return out + parser.finish()


def test_parser_follows_the_sse_line_rules_across_chunk_boundaries() -> None:
    # LF, CRLF split between chunks, lone CR; multi-line data; comments, id and retry skipped.
    assert parse(
        b"event: a\ndata: 1\n\n", b"data: 2\r", b"\n\r\n: comment\rid: 7\rretry: 5\rdata: x\r\rdata:y\n"
    ) == [
        ("a", "1"),
        (None, "2"),
        (None, "x"),
    ]  # the unfinished last event is dropped
    assert parse(b"data: one\ndata: two\n\n") == [(None, "one\ntwo")]
    snowman = "data: \u2603\n\n".encode()
    assert parse(snowman[:7], snowman[7:]) == [(None, "\u2603")]  # UTF-8 split inside a character


async def _both(fake: FakeOpenAI, reply: Reply) -> tuple[list[Any], list[Any]]:
    """The same scripted response read twice: through AsyncStream, and through bot.sse.events."""
    async with openai.AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0) as client:
        read: list[list[Any]] = []
        for fast in (False, True):
            conv = await client.conversations.create()
            fake.script(reply)
            stream = await client.responses.create(model=MODEL, conversation=conv.id, input="hi", stream=True)
            got: list[Any] = []
            try:
                async for event in events(stream) if fast else stream:
                    got.append(event)
            finally:
                await stream.close()
            read.append(got)
        return read[0], read[1]


def test_events_match_the_sdk_stream_with_light_text_deltas(fake: FakeOpenAI) -> None:
    typed, fast = asyncio.run(_both(fake, Reply(text="Hello from the fake model!", chunk_size=5)))
    assert [(e.type, e.sequence_number) for e in fast] == [(e.type, e.sequence_number) for e in typed]
    deltas = [e for e in fast if e.type == "response.output_text.delta"]
    assert deltas and all(isinstance(e, TextDelta) for e in deltas)
    assert "".join(e.delta for e in deltas) == "Hello from the fake model!"
    [added] = [e for e in fast if e.type == "response.output_item.added"]
    assert {(d.item_id, d.output_index, d.content_index) for d in deltas} == {(added.item.id, 0, 0)}
    # Events the bot only peeks at are read from the JSON; the ones whose content it uses are typed.
    assert isinstance(typed[0], ResponseCreatedEvent) and isinstance(fast[0], LightEvent)
    assert fast[0].response.id.startswith("resp_") and fast[0].response.status == "in_progress"
    assert added.item.type == "message" and isinstance(typed[-1], ResponseCompletedEvent)
    # A plain answer's end: its id, time and usage as the SDK reads them, without building the response.
    done, sdk = fast[-1], typed[-1].response
    assert isinstance(done, LightCompleted) and done.response.id == fast[0].response.id
    # (Two responses, read two ways: each one's time is its own; they may fall in different seconds.)
    assert done.response.created_at == fake.response(done.response.id)["created_at"]
    assert sdk.created_at == fake.response(sdk.id)["created_at"] and done.response.output == ()
    assert sdk.usage is not None and done.response.usage is not None
    assert (done.response.usage.input_tokens, done.response.usage.output_tokens) == (
        sdk.usage.input_tokens,
        sdk.usage.output_tokens,
    )
    assert done.response.usage.total_tokens == sdk.usage.total_tokens
    details = done.response.usage.output_tokens_details
    assert (
        details is not None and details.reasoning_tokens == sdk.usage.output_tokens_details.reasoning_tokens
    )


def test_a_finished_response_the_bot_reads_more_of_is_built_by_the_sdk(fake: FakeOpenAI) -> None:
    """Function calls (and code-interpreter output) in a finished response: typed, as the SDK builds it."""
    base = {"type": "response.completed", "sequence_number": 9}
    plain = {"id": "resp_1", "created_at": 1, "output": [{"type": "message", "content": []}], "usage": None}
    assert light_completed({**base, "response": plain}) is not None
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    assert light_completed({**base, "response": {**plain, "output": [call]}}) is None
    cited = {"type": "message", "content": [{"annotations": [{"type": "container_file_citation"}]}]}
    assert light_completed({**base, "response": {**plain, "output": [cited]}}) is None
    assert light_completed({**base, "response": {**plain, "usage": {"input_tokens": "7"}}}) is None


def test_a_dropped_stream_raises_what_the_sdk_raises_after_the_same_deltas(fake: FakeOpenAI) -> None:
    async def read(fast: bool) -> tuple[list[str], type[BaseException]]:
        async with openai.AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0) as client:
            conv = await client.conversations.create()
            fake.script(Reply(text="0123456789", chunk_size=2, drop_after_chunks=2))
            stream = await client.responses.create(model=MODEL, conversation=conv.id, input="hi", stream=True)
            deltas: list[str] = []
            with pytest.raises(openai.APIError) as info:
                async for event in events(stream) if fast else stream:
                    if event.type == "response.output_text.delta":
                        deltas.append(event.delta)
            return deltas, type(info.value)

    assert asyncio.run(read(True)) == asyncio.run(read(False)) == (["01", "23"], openai.APIConnectionError)


def test_the_openai_transport_names_connection_failures_as_they_are() -> None:
    """The SDK's aiohttp transport reports every aiohttp connection error as a connect timeout; the bot's
    transport gives a refused connection, a dropped one and a malformed answer their own errors (all
    `TransportError`s, which openai-python retries), so the metrics count them as connection errors."""
    import socket

    import httpx2
    from httpx_aiohttp.httpx2 import AiohttpTransport

    from bot.assistant.responses import _CountingTransport
    from bot.ops.metrics import Metrics

    async def run() -> list[str]:
        seen: list[str] = []
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        refused_port = free.getsockname()[1]
        free.close()

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            writer.close()

        closer = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        liar = await asyncio.start_server(garbage, "127.0.0.1", 0)
        transport = _CountingTransport(Metrics(), AiohttpTransport())
        ports = [refused_port, closer.sockets[0].getsockname()[1], liar.sockets[0].getsockname()[1]]
        for port in ports:
            try:
                await transport.handle_async_request(httpx2.Request("GET", f"http://127.0.0.1:{port}/"))
            except httpx2.TransportError as exc:
                seen.append(type(exc).__name__)
        await transport.aclose()
        closer.close()
        liar.close()
        return seen

    assert asyncio.run(run()) == ["ConnectError", "RemoteProtocolError", "RemoteProtocolError"]
