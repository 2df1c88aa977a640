"""A fast reader for a Responses API event stream (the `AsyncStream` openai-python returns for `stream=True`).

openai-python builds a typed pydantic object for every server-sent event; with text streamed a few
characters at a time, that is most of a turn's CPU (py-spy: ~40 %). Here, `response.output_text.delta`
events, the bulk of a stream, become a small `TextDelta` (the same attribute names) straight from the JSON,
and the events the bot only peeks at (`response.created` for its id, `output_item.added` for the item's
type, the many progress events) a `LightEvent` reading the JSON by attribute. The events whose content the
bot uses (`response.completed` / `failed` / `incomplete`, `error`, annotations) are built by openai-python
exactly as `AsyncStream` would build them; but `response.completed` of a plain answer (no function call, no
code-interpreter call, no generated-file citation: nothing the bot reads but the id and the usage) is a
`LightCompleted`, since building the whole typed response, its echoed instructions and tools included, was
~6 % of a worker's CPU (py-spy).

Usage (instead of iterating the stream itself):

    async for event in sse.events(stream):
        ...                      # event.type, event.sequence_number, event.delta, event.response, ...
    await stream.close()

Errors are the ones iterating the `AsyncStream` raises: `openai.APITimeoutError` and
`openai.APIConnectionError` for transport failures, `openai.APIError` for an `error` payload, `ValueError`
(a `json.JSONDecodeError`) for a malformed event.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import openai

DELTA: Literal["response.output_text.delta"] = "response.output_text.delta"
# After `[DONE]` the rest of the body is read (so the HTTP/1.1 connection goes back to the pool), briefly.
DRAIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TextDelta:
    """`ResponseTextDeltaEvent`'s fields the bot reads, without pydantic."""

    delta: str
    sequence_number: int
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    type: Literal["response.output_text.delta"] = DELTA


# Built by openai-python: the bot reads these through their types.
TYPED = frozenset(
    {
        "response.completed",
        "response.failed",
        "response.incomplete",
        "response.output_text.annotation.added",
        "error",
    }
)


class Fields:
    """A JSON object read by attribute (`event.response.id`), nested objects likewise."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(name) from None
        return Fields(value) if isinstance(value, dict) else value


class LightEvent(Fields):
    """An event the bot only peeks at: `type`, `sequence_number` and its other fields by attribute."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class LightTokenDetails:
    reasoning_tokens: int


@dataclass(frozen=True, slots=True)
class LightUsage:
    """`ResponseUsage`'s fields the bot reads."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    output_tokens_details: LightTokenDetails | None


@dataclass(frozen=True, slots=True)
class LightResponse:
    """A finished plain answer: what `Response` gives the bot of it. `output` is empty: it holds nothing
    the bot reads (see `light_completed`)."""

    id: str
    created_at: float
    usage: LightUsage | None
    output: tuple[()] = ()
    status: str = "completed"


@dataclass(frozen=True, slots=True)
class LightCompleted:
    """`ResponseCompletedEvent` of a plain answer."""

    response: LightResponse
    sequence_number: int
    type: Literal["response.completed"] = "response.completed"


# Output the bot reads from a finished response (function calls, code-interpreter containers, files the
# code interpreter wrote): a response holding any of these is built by openai-python.
_READ_ITEMS = frozenset({"function_call", "code_interpreter_call", "mcp_approval_request"})
_READ_NOTES = frozenset({"container_file_citation"})


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_output(output: Any) -> bool:
    if not isinstance(output, list):
        return False
    for item in output:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str) or item["type"] in _READ_ITEMS:
            return False
        for part in item.get("content") or []:
            if not isinstance(part, dict):
                return False
            for note in part.get("annotations") or []:
                if not isinstance(note, dict) or note.get("type") in _READ_NOTES:
                    return False
    return True


_MALFORMED = object()


def _usage(raw: Any) -> Any:
    """The usage object, None when absent, `_MALFORMED` when it is not shaped as the API documents it."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(
        _int(raw.get(k)) for k in ("input_tokens", "output_tokens", "total_tokens")
    ):
        return _MALFORMED
    details = raw.get("output_tokens_details")
    if details is not None and not (isinstance(details, dict) and _int(details.get("reasoning_tokens"))):
        return _MALFORMED
    return LightUsage(
        raw["input_tokens"],
        raw["output_tokens"],
        raw["total_tokens"],
        LightTokenDetails(details["reasoning_tokens"]) if details is not None else None,
    )


def light_completed(payload: dict[str, Any]) -> LightCompleted | None:
    """`response.completed` of a plain answer, read from the JSON; None when openai-python must build it
    (something the bot reads is in it, or a field is not shaped as documented)."""
    response = payload.get("response")
    seq = payload.get("sequence_number")
    if (
        not isinstance(response, dict)
        or not isinstance(seq, int)
        or not _plain_output(response.get("output"))
    ):
        return None
    rid, created = response.get("id"), response.get("created_at")
    usage = _usage(response.get("usage"))
    if not isinstance(rid, str) or not isinstance(created, int | float) or usage is _MALFORMED:
        return None
    return LightCompleted(LightResponse(rid, float(created), usage), seq)


class SSEParser:
    """Incremental server-sent-events parsing (WHATWG rules): bytes in, (event, data) pairs out.

    Lines end with LF, CRLF or CR (a CR at the end of a chunk waits for the next one, which may start
    with its LF); UTF-8 split across chunks is joined; an event is dispatched at a blank line; comments,
    `id` and `retry` are skipped; an unfinished event at the end of the stream is dropped.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._tail = ""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        text = self._tail + self._decoder.decode(chunk)
        held = ""
        if text.endswith("\r"):
            text, held = text[:-1], "\r"
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        self._tail = lines.pop() + held
        return self._lines(lines)

    def finish(self) -> list[tuple[str | None, str]]:
        rest = self._tail + self._decoder.decode(b"", final=True)
        self._tail = ""
        lines = rest.replace("\r\n", "\n").replace("\r", "\n").split("\n") if rest else []
        # Without a final blank line, the last event is incomplete: not dispatched (as openai-python).
        return self._lines(lines)

    def _lines(self, lines: list[str]) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        for line in lines:
            if not line:
                if self._data or self._event:
                    out.append((self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return out


async def events(stream: Any) -> AsyncIterator[Any]:
    """The stream's events: a `TextDelta` for each text delta, openai-python's typed event for the rest."""
    response: httpx2.Response = stream.response
    parser = SSEParser()
    chunks = _chunks(response)
    try:
        async for chunk in chunks:
            for _, data in parser.feed(chunk):
                if data.startswith("[DONE]"):
                    await _drain(chunks)
                    return
                yield _event(stream, data)
        for _, data in parser.finish():
            if data.startswith("[DONE]"):
                return
            yield _event(stream, data)
    finally:
        await response.aclose()


def _event(stream: Any, data: str) -> Any:
    payload = json.loads(data)
    if isinstance(payload, dict):
        if payload.get("type") == DELTA and isinstance(payload.get("delta"), str):
            return TextDelta(
                delta=payload["delta"],
                sequence_number=int(payload.get("sequence_number", 0)),
                item_id=str(payload.get("item_id", "")),
                output_index=int(payload.get("output_index", 0)),
                content_index=int(payload.get("content_index", 0)),
            )
        error = payload.get("error")
        if error:
            # As AsyncStream: a payload carrying an `error` object is an API error.
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(
                message=message
                if isinstance(message, str) and message
                else "An error occurred during streaming",
                request=stream.response.request,
                body=error,
            )
        kind = payload.get("type")
        if kind not in TYPED and isinstance(kind, str) and isinstance(payload.get("sequence_number"), int):
            return LightEvent(payload)
        if kind == "response.completed" and (completed := light_completed(payload)) is not None:
            return completed
    # Everything else exactly as openai-python builds it (typed, with its own validation rules).
    return stream._client._process_response_data(
        data=payload, cast_to=stream._cast_to, response=stream.response
    )


async def _chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx2.TimeoutException as exc:
        raise openai.APITimeoutError(request=response.request) from exc
    except httpx2.RequestError as exc:
        raise openai.APIConnectionError(request=response.request) from exc


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    with contextlib.suppress(TimeoutError, openai.APIError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in chunks:
                pass
