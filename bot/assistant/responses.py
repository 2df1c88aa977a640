"""The OpenAI assistant backend: an assistant thread is an OpenAI Conversation, a turn is one Response.

Responses are created with `background=True` and `stream=True`: the answer streams as usual, and the
response lives on at OpenAI when the connection drops (or the worker dies). A dropped or stalled stream is
resumed with `responses.retrieve(id, stream=True, starting_after=<last event>)`; after a few failed resumes
the response is polled until it ends. A turn retried by another worker resumes its recorded response the
same way, from the first event. So a response is never re-run for a transport fault.

`responses.create` is not idempotent (it adds the user's message to the conversation): it is retried only
where the API did nothing (429 after its `retry-after`, `conversation_locked`, 502/503), never blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx2
import openai
from httpx_aiohttp.httpx2 import AiohttpTransport
from openai import AsyncOpenAI
from openai.types.responses import Response

from bot.assistant import sse
from bot.assistant.backend import (
    Annotator,
    ApprovalAsk,
    FunctionCall,
    GeneratedFile,
    OnCreated,
    Piece,
    RoundResult,
    Status,
    Step,
    StepSource,
    TokenUsage,
    TurnRequest,
)
from bot.assistant.conversations import ConversationAdmin
from bot.assistant.knowledge import KnowledgeStores
from bot.errors import (
    AnswerIncomplete,
    AssistantBusy,
    AssistantFailed,
    AssistantRateLimited,
    AssistantUnavailable,
    BotError,
    ContextTooLong,
    ResponseVanished,
)
from bot.keys import Keys
from bot.ops.metrics import Metrics
from bot.settings import Settings

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER_SECONDS = 20.0
LOCKED_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# 502/503: the API did not take the request (gateway, overload); 500 and 504 are ambiguous: not retried.
UNAVAILABLE_RETRY_DELAYS = (1.0, 2.0)
UNAVAILABLE_STATUSES = frozenset({502, 503})
# `conversations.items.create` takes at most this many items per call (spec: createConversationItems).
ITEMS_PER_CREATE = 20
# Stream resumes before falling back to polling, and the polling interval bounds.
MAX_RESUMES = 3
POLL_FIRST_DELAY, POLL_MAX_DELAY = 0.5, 5.0
# Failure codes of a `failed` response that mean "the service had a problem", not "your request is bad".
TRANSIENT_FAILURES = frozenset({"server_error", "rate_limit_exceeded", "vector_store_timeout"})

# Everything a broken SSE stream can raise: API errors, transport errors, a truncated body.
_STREAM_BREAKS = (openai.APIError, httpx2.HTTPError, OSError, ValueError)

# What the hosted tools are doing, shown as the Slack status while they run.
HOSTED_TOOL_STATUS = {
    "code_interpreter_call": "is running Python…",
    "web_search_call": "is searching the web…",
    "file_search_call": "is searching the files…",
    "mcp_list_tools": "is listing its tools…",
    "mcp_call": "is calling a tool…",
}
# The same tools as steps of the answer (task cards in the streamed message).
HOSTED_TOOL_STEP = {
    "code_interpreter_call": "Running Python",
    "web_search_call": "Searching the web",
    "file_search_call": "Searching the files",
}
# Hosted tool items that ended badly (their `status`).
FAILED_ITEM_STATUSES = frozenset({"failed", "incomplete"})
# Web pages listed under one step, at most.
STEP_SOURCES_MAX = 10
# Only a function name's own characters reach a step's title (the model names the function).
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


# `slack_assistant_openai_errors_total{kind}` by HTTP status (what the SDK raises for each).
_STATUS_KINDS = {
    400: "bad_request",
    401: "authentication",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    422: "unprocessable",
    429: "rate_limited",
}


class _CountingTransport(httpx2.AsyncBaseTransport):
    """The OpenAI client's transport, counting every error answer and transport failure for the metrics
    (each attempt: the SDK's own retries count too)."""

    def __init__(self, metrics: Metrics, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner
        self._metrics = metrics

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            mapped = _transport_error(exc, request)
            self._metrics.openai_error(
                "timeout" if isinstance(mapped, httpx2.TimeoutException) else "connection"
            )
            if mapped is exc:
                raise
            raise mapped from exc
        except aiohttp.ClientError as exc:  # one the transport does not map (e.g. a malformed response)
            self._metrics.openai_error("connection")
            raise httpx2.RemoteProtocolError(type(exc).__name__, request=request) from exc
        if response.status_code >= 400:
            kind = _STATUS_KINDS.get(response.status_code)
            self._metrics.openai_error(kind or ("server_error" if response.status_code >= 500 else "other"))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _transport_error(exc: httpx2.TransportError, request: httpx2.Request) -> httpx2.TransportError:
    """What the error really was: the aiohttp transport maps every aiohttp connection error (refused,
    reset, disconnected) to `ConnectTimeout`; only a real timeout stays one."""
    cause = exc.__cause__
    if not isinstance(exc, httpx2.ConnectTimeout) or isinstance(cause, aiohttp.ServerTimeoutError):
        return exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(type(cause).__name__, request=request)
    if isinstance(cause, aiohttp.ClientConnectionError):
        return httpx2.RemoteProtocolError(type(cause).__name__, request=request)
    return exc


def build_openai_client(settings: Settings, metrics: Metrics | None = None) -> AsyncOpenAI:
    # One stream per running turn: as many connections as turns a worker runs at once, kept alive.
    pool = max(100, settings.worker_concurrency * 2)
    limits = httpx2.Limits(max_connections=max(1000, pool), max_keepalive_connections=pool)
    # The SDK's aiohttp transport ("for improved concurrency performance", openai-python's README): under a
    # burst of hundreds of streams, httpcore's pool scans every connection per request and each request runs
    # through h11 and anyio in Python; aiohttp parses HTTP in C. It cut a worker's CPU per turn (bench).
    transport = _CountingTransport(metrics or Metrics(), AiohttpTransport(limits=limits))
    return AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout,
        max_retries=2,
        http_client=openai.DefaultAioHttpClient(limits=limits, transport=transport),
    )


class ResponsesBackend(ConversationAdmin):
    """`AssistantBackend` on OpenAI: Conversations hold the threads, Responses run the turns."""

    def __init__(
        self,
        client: AsyncOpenAI,
        settings: Settings,
        knowledge: KnowledgeStores | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(client)
        self._metrics = metrics or Metrics()
        # Creating a response is not idempotent: this copy never retries on its own.
        self._no_retry = client.with_options(max_retries=0)
        self._settings = settings
        self.knowledge = knowledge or KnowledgeStores(client, settings.knowledge_vector_store_ids)

    async def create_conversation(self, metadata: dict[str, str], *, keys: Keys | None = None) -> str:
        try:
            conversation = await self._client.conversations.create(metadata=metadata)
        except openai.RateLimitError as exc:
            raise AssistantRateLimited(f"conversations.create: {exc.status_code}") from exc
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.create: {_describe(exc)}") from exc
        return conversation.id

    async def delete_conversation(self, conversation_id: str) -> None:
        try:
            await self._client.conversations.delete(conversation_id)
        except openai.NotFoundError:
            log.info("conversation %s was already gone", conversation_id)
        except openai.APIError as exc:
            raise AssistantUnavailable(f"conversations.delete: {_describe(exc)}") from exc

    def _request(self, turn: TurnRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": turn.model or self._settings.assistant_model,
            "instructions": turn.instructions,
            "conversation": turn.conversation_id,
            "store": True,
            "stream": True,
            # Lives on at OpenAI when the stream drops: resumable with `retrieve(stream=True)`.
            "background": True,
            # A stable, non-reversible id per Slack user helps OpenAI's abuse detection.
            "safety_identifier": hashlib.sha256(turn.user_key.encode()).hexdigest()[:32],
            # Past the threshold OpenAI compacts the conversation's earlier items: never too long to answer.
            "context_management": [
                {"type": "compaction", "compact_threshold": self._settings.context_compact_threshold}
            ],
        }
        if self._settings.max_output_tokens is not None:
            request["max_output_tokens"] = self._settings.max_output_tokens
        if items:  # none: the conversation already ends with the user's message
            request["input"] = items
        stores = self.knowledge.usable if turn.knowledge_ids is None else list(turn.knowledge_ids)
        tools = _with_knowledge(turn.tools, stores if turn.knowledge else [])
        if tools:
            request["tools"] = tools
        if any(t.get("type") == "web_search" for t in tools):
            # The pages a web search used, for its step's sources (only sent when asked for).
            request["include"] = ["web_search_call.action.sources"]
        return request

    async def _start_searching(self, request: dict[str, Any], own_stores: tuple[str, ...] = ()) -> Any:
        """`_start`, and once more without the knowledge stores OpenAI refused (missing or expired since
        the last check) instead of failing the answer."""
        try:
            return await self._start(request)
        except AssistantUnavailable as exc:
            refusal = exc.__cause__
            if not isinstance(refusal, openai.BadRequestError | openai.NotFoundError):
                raise
            dropped = await self.knowledge.refused(refusal.message, _searched(request))
            if not dropped:
                # A channel policy's own store (issue 15), gone since it was saved: named in the refusal.
                dropped = [i for i in own_stores if i in refusal.message]
            if not dropped:
                raise
            log.info("responses.create refused knowledge store(s) %s; asking again without", dropped)
        return await self._start(_without_stores(request, dropped))

    async def answer(
        self,
        turn: TurnRequest,
        items: list[dict[str, Any]],
        *,
        on_created: OnCreated,
        result: RoundResult,
        citations: Annotator | None = None,
    ) -> AsyncGenerator[Piece, None]:
        """One response on the conversation with these input items (the user's message, or the outputs
        of function calls); yield its text as it streams (with citation markers when `citations` is given)
        and what its hosted tools are doing. `result` is filled in when the response ends.

        `on_created(response_id)` runs before any text is yielded (the caller records the id); if it
        raises, the response is cancelled and the error propagates.
        """
        stream = await self._start_searching(self._request(turn, items), turn.knowledge_ids or ())
        async with contextlib.aclosing(self._follow(stream, None, on_created, result, citations)) as pieces:
            async for piece in pieces:
                yield piece

    async def resume(self, response_id: str, *, result: RoundResult) -> AsyncGenerator[Piece, None]:
        """The whole text of an earlier response, from its start, following it until it ends."""
        stream = await self._reopen(response_id, None, self._deadline())
        if stream is None:
            async with contextlib.aclosing(self._poll(response_id, "", self._deadline(), result)) as polled:
                async for delta in polled:
                    yield delta
            return
        async with contextlib.aclosing(self._follow(stream, response_id, None, result)) as pieces:
            async for piece in pieces:
                yield piece

    async def replay(self, response_id: str) -> str:
        """The text of an earlier, finished response (a retried turn shows its earlier rounds again)."""
        try:
            response = await self._client.responses.retrieve(response_id)
        except openai.APIError as exc:
            raise AssistantUnavailable(f"responses.retrieve: {_describe(exc)}") from exc
        return response.output_text

    async def add_items(self, conversation_id: str, items: list[dict[str, Any]]) -> None:
        """Add items to the conversation without running the model (closing calls a turn gave up on)."""
        for start in range(0, len(items), ITEMS_PER_CREATE):
            batch = items[start : start + ITEMS_PER_CREATE]
            try:
                await self._client.conversations.items.create(conversation_id, items=batch)  # type: ignore[arg-type]
            except openai.APIError as exc:
                raise AssistantUnavailable(f"conversations.items.create: {_describe(exc)}") from exc

    async def cancel(self, response_id: str) -> None:
        """Best effort: stop a background response nobody will show."""
        try:
            await self._client.responses.cancel(response_id)
        except openai.APIError as exc:
            log.warning("could not cancel response %s: %s", response_id, _describe(exc))

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._settings.response_deadline_seconds

    async def _follow(
        self,
        stream: Any,
        response_id: str | None,
        on_created: OnCreated | None,
        result: RoundResult,
        citations: Annotator | None = None,
    ) -> AsyncGenerator[Piece, None]:
        deadline = self._deadline()
        seq: int | None = None
        shown = ""
        resumes = 0
        while True:
            try:
                try:
                    # Text deltas without pydantic (most of a turn's CPU otherwise); other events typed.
                    async for event in sse.events(stream):
                        seq = event.sequence_number
                        kind = event.type
                        if kind == "response.output_text.delta":
                            shown += event.delta
                            yield citations.text(event.delta) if citations is not None else event.delta
                        elif kind == "response.created":
                            if response_id is None:
                                response_id = event.response.id
                                if on_created is not None:
                                    await self._created(response_id, on_created)
                        elif kind == "response.output_item.added":
                            status = HOSTED_TOOL_STATUS.get(event.item.type)
                            if status is not None:
                                yield Status(status)
                            if (step := _step(event.item, done=False)) is not None:
                                yield step
                        elif kind == "response.output_item.done":
                            if (step := _step(event.item, done=True)) is not None:
                                yield step
                        elif kind == "response.content_part.added" and citations is not None:
                            # Annotation positions count from the start of their own text part.
                            citations.next_part()
                        elif kind == "response.output_text.annotation.added" and citations is not None:
                            yield citations.annotate(event.annotation)
                        elif kind == "response.completed":
                            _absorb(result, event.response)
                            return
                        elif kind == "response.failed":
                            raise self._failed(event.response.error.code if event.response.error else None)
                        elif kind == "response.incomplete":
                            self._metrics.openai_error("response_incomplete")
                            _note_usage(result, event.response)  # an incomplete answer used tokens too
                            details = event.response.incomplete_details
                            raise AnswerIncomplete(
                                f"response incomplete: {details.reason if details else 'unknown'}"
                            )
                        elif kind == "error":
                            self._metrics.openai_error("stream_error")
                            raise AssistantFailed(f"stream error event: {event.code}")
                finally:
                    await stream.close()
                broke = "the stream ended before the response did"
            except _STREAM_BREAKS as exc:
                broke = _describe(exc) if isinstance(exc, openai.APIError) else type(exc).__name__
            if response_id is None:
                raise AssistantUnavailable(f"stream broke before the response was created: {broke}")
            log.info("response %s: %s; resuming after event %s", response_id, broke, seq)
            resumes += 1
            reopened = await self._reopen(response_id, seq, deadline) if resumes <= MAX_RESUMES else None
            if reopened is None:
                async with contextlib.aclosing(self._poll(response_id, shown, deadline, result)) as polled:
                    async for delta in polled:
                        yield delta
                return
            stream = reopened

    def _failed(self, code: str | None) -> AssistantUnavailable:
        """A response that ended `failed` (counted as `response_failed`), as the error to raise."""
        self._metrics.openai_error("response_failed")
        return _failure(code)

    async def _created(self, response_id: str, on_created: OnCreated) -> None:
        try:
            await on_created(response_id)
        except BotError:
            # Unrecorded, nobody could resume it and a retry would create another: stop it now.
            await self.cancel(response_id)
            raise

    async def _reopen(self, response_id: str, after: int | None, deadline: float) -> Any:
        """A stream of the response's events after `after` (all when None); None when it can't be had."""
        try:
            if after is None:
                return await self._client.responses.retrieve(response_id, stream=True)
            return await self._client.responses.retrieve(response_id, stream=True, starting_after=after)
        except openai.NotFoundError as exc:
            raise ResponseVanished(f"response {response_id} is gone: {_describe(exc)}") from exc
        except openai.APIError as exc:
            log.info("response %s: streaming retrieval refused (%s); polling", response_id, _describe(exc))
            return None

    async def _poll(
        self, response_id: str, shown: str, deadline: float, result: RoundResult
    ) -> AsyncGenerator[str, None]:
        """Poll the response until it ends; yield the part of its text not shown yet."""
        delay = POLL_FIRST_DELAY
        loop = asyncio.get_running_loop()
        while True:
            try:
                response = await self._client.responses.retrieve(response_id)
            except openai.NotFoundError as exc:
                raise ResponseVanished(f"response {response_id} is gone: {_describe(exc)}") from exc
            except openai.APIError as exc:
                log.info("response %s: poll failed (%s)", response_id, _describe(exc))
            else:
                if response.status in ("completed", "incomplete"):
                    text = response.output_text
                    if text.startswith(shown):
                        if text[len(shown) :]:
                            yield text[len(shown) :]
                    else:
                        log.warning("response %s: its text differs from what was streamed", response_id)
                    if response.status == "incomplete":
                        self._metrics.openai_error("response_incomplete")
                        _note_usage(result, response)
                        details = response.incomplete_details
                        raise AnswerIncomplete(f"response incomplete: {details.reason if details else '?'}")
                    _absorb(result, response)
                    return
                if response.status == "failed":
                    raise self._failed(response.error.code if response.error else None)
                if response.status == "cancelled":
                    raise AssistantFailed("response was cancelled")
            if loop.time() + delay > deadline:
                raise AssistantUnavailable(f"response {response_id} did not finish in time")
            await asyncio.sleep(delay)
            delay = min(POLL_MAX_DELAY, delay * 2)

    async def _start(self, request: dict[str, Any]) -> Any:
        rate_limited = 0
        locked = 0
        unavailable = 0
        while True:
            try:
                # The body goes as plain JSON (`extra_body`, merged into the request as is): it is built of
                # plain dicts and strings already, and openai-python's per-key transform of the typed
                # params, which changes nothing in them, cost ~8 % of a worker's CPU (py-spy).
                body = {k: v for k, v in request.items() if k != "stream"}
                return await self._no_retry.responses.create(stream=True, extra_body=body)
            except openai.RateLimitError as exc:
                rate_limited += 1
                if rate_limited > RATE_LIMIT_RETRIES:
                    raise AssistantRateLimited(f"responses.create: 429 x{rate_limited}") from exc
                delay = _retry_after(exc) or 2.0**rate_limited
                if delay > MAX_RETRY_AFTER_SECONDS:
                    raise AssistantRateLimited(f"responses.create: retry-after {delay:.0f}s") from exc
                log.info("OpenAI rate limit; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
            except openai.BadRequestError as exc:
                if _error_code(exc) == "context_length_exceeded":
                    raise ContextTooLong(f"responses.create: {_describe(exc)}") from exc
                if _error_code(exc) != "conversation_locked":
                    raise AssistantUnavailable(f"responses.create: {_describe(exc)}") from exc
                if locked >= len(LOCKED_RETRY_DELAYS):
                    raise AssistantBusy("conversation stayed locked") from exc
                # Another response (another replica, or one the API still finishes) holds the conversation.
                await asyncio.sleep(LOCKED_RETRY_DELAYS[locked])
                locked += 1
            except openai.APIStatusError as exc:
                if exc.status_code not in UNAVAILABLE_STATUSES or unavailable >= len(
                    UNAVAILABLE_RETRY_DELAYS
                ):
                    raise AssistantUnavailable(f"responses.create: {_describe(exc)}") from exc
                log.info("OpenAI unavailable (%s); retrying", exc.status_code)
                await asyncio.sleep(_retry_after(exc) or UNAVAILABLE_RETRY_DELAYS[unavailable])
                unavailable += 1
            except openai.APIError as exc:
                raise AssistantUnavailable(f"responses.create: {_describe(exc)}") from exc


def _with_knowledge(tools: list[dict[str, Any]], knowledge: list[str]) -> list[dict[str, Any]]:
    """The turn's tools with the knowledge stores added to its file search (after the thread's own
    store), or a file search of their own."""
    if not knowledge:
        return tools
    out = [dict(t) for t in tools]
    search = next((t for t in out if t.get("type") == "file_search"), None)
    if search is None:
        return [*out, {"type": "file_search", "vector_store_ids": list(knowledge)}]
    own = list(search.get("vector_store_ids") or [])
    search["vector_store_ids"] = [*own, *(i for i in knowledge if i not in own)]
    return out


def _searched(request: dict[str, Any]) -> list[str]:
    return [
        str(store_id)
        for t in request.get("tools") or []
        if t.get("type") == "file_search"
        for store_id in t.get("vector_store_ids") or []
    ]


def _without_stores(request: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """The request with these stores out of its file search (and the file search gone when empty)."""
    tools: list[dict[str, Any]] = []
    for tool in request.get("tools") or []:
        if tool.get("type") == "file_search":
            kept = [i for i in tool.get("vector_store_ids") or [] if i not in dropped]
            if not kept:
                continue
            tool = {**tool, "vector_store_ids": kept}
        tools.append(tool)
    out = {k: v for k, v in request.items() if k != "tools"}
    if tools:
        out["tools"] = tools
    return out


def _absorb(result: RoundResult, response: Response) -> None:
    """Read the finished response's output items (the stream's and the poll's common ground)."""
    _note_usage(result, response)
    for item in response.output:
        if item.type == "function_call":
            result.calls.append(FunctionCall(item.call_id, item.name, item.arguments))
        elif item.type == "mcp_approval_request":
            result.approvals.append(ApprovalAsk(item.id, item.server_label, item.name, item.arguments))
        elif item.type == "code_interpreter_call" and item.container_id not in result.containers:
            result.containers.append(item.container_id)
        elif item.type == "message":
            for part in item.content:
                if part.type != "output_text":
                    continue
                for note in part.annotations:
                    if note.type == "container_file_citation":
                        result.files[note.file_id] = GeneratedFile(
                            note.container_id, note.file_id, note.filename
                        )


def _mcp_title(item: Any) -> str | None:
    """A hosted MCP item's step title (issue 16): server and tool names keep only their own characters."""
    kind = getattr(item, "type", None)
    server = _NOT_IN_NAME.sub("", str(getattr(item, "server_label", "")))[:64] or "a server"
    if kind == "mcp_list_tools":
        return f"Listing the tools of {server}"
    if kind == "mcp_call":
        return f"Calling {server}.{_NOT_IN_NAME.sub('', str(getattr(item, 'name', '')))[:64] or 'a tool'}"
    return None


def _step(item: Any, *, done: bool) -> Step | None:
    """The step an output item is (read from a `LightEvent`'s item), or None: a hosted tool's call while it
    runs and once it ended; a function call when it is asked for (the tool loop reports its run)."""
    kind = getattr(item, "type", None)
    if (mcp := _mcp_title(item)) is not None:
        item_id = getattr(item, "id", None)
        if not isinstance(item_id, str) or not item_id:
            return None
        failed = getattr(item, "status", None) in FAILED_ITEM_STATUSES or bool(getattr(item, "error", None))
        return Step(item_id, mcp, ("error" if failed else "complete") if done else "in_progress")
    if kind == "function_call":
        if done:
            return None
        name = _NOT_IN_NAME.sub("", str(getattr(item, "name", "")))[:64] or "a tool"
        return Step(
            str(getattr(item, "call_id", "") or getattr(item, "id", "")), f"Calling {name}", "pending"
        )
    title = HOSTED_TOOL_STEP.get(str(kind))
    item_id = getattr(item, "id", None)
    if title is None or not isinstance(item_id, str) or not item_id:
        return None
    if not done:
        return Step(item_id, title, "in_progress")
    failed = getattr(item, "status", None) in FAILED_ITEM_STATUSES
    return Step(
        item_id, title, "error" if failed else "complete", _sources(item) if kind == "web_search_call" else ()
    )


def _sources(item: Any) -> tuple[StepSource, ...]:
    """A web search's pages (`action.sources`, sent with include=web_search_call.action.sources), labelled
    with their host: the page's own address, never a title anyone could choose."""
    action = getattr(item, "action", None)
    found = getattr(action, "sources", None) if action is not None else None
    out: dict[str, StepSource] = {}
    for source in found if isinstance(found, list) else []:
        url = source.get("url") if isinstance(source, dict) else None
        if not isinstance(url, str) or url in out:
            continue
        parts = urlsplit(url)
        host = (parts.hostname or "").removeprefix("www.")
        if parts.scheme in ("http", "https") and host and len(url) <= 2000:
            out[url] = StepSource(url, host)
        if len(out) >= STEP_SOURCES_MAX:
            break
    return tuple(out.values())


def _note_usage(result: RoundResult, response: Response) -> None:
    """The ended response's id and the tokens it used (when it reports them)."""
    result.response_id = response.id
    usage = response.usage
    if usage is None:
        return
    details = usage.output_tokens_details
    result.usage = TokenUsage(
        input=usage.input_tokens,
        output=usage.output_tokens,
        total=usage.total_tokens,
        reasoning=details.reasoning_tokens if details is not None else None,
        created_at=response.created_at,
    )


def _failure(code: str | None) -> AssistantUnavailable:
    if code == "context_length_exceeded":
        return ContextTooLong("response failed: context_length_exceeded")
    if code in TRANSIENT_FAILURES:
        return AssistantUnavailable(f"response failed: {code}")
    return AssistantFailed(f"response failed: {code or 'unknown'}")


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return str(error["code"])
    return getattr(exc, "code", None)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _describe(exc: openai.APIError) -> str:
    """Type, status and error code only: enough for the log, never a secret or the request body."""
    status = getattr(exc, "status_code", None)
    code = _error_code(exc) if isinstance(exc, openai.APIStatusError) else None
    return f"{type(exc).__name__} status={status} code={code} request_id={getattr(exc, 'request_id', None)}"
