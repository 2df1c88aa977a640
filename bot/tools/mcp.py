"""MCP servers (issue 16): the hosted ones become the Responses API's `mcp` tool (OpenAI calls them); the
ones only the bot can reach (`http`: streamable HTTP, `stdio`: a local command) are called with the official
`mcp` SDK, and their tools become function tools of the tool loop, named `<label>__<tool>`.

One connection per bot-side server per worker process, opened on first use and kept: a server that died
(its connection closed, its process exited) or hung (a call past TOOL_TIMEOUT_SECONDS) is reconnected on the
next use; a JSON-RPC error reply is the tool's error, the connection stays. A failed connect is not tried
again for RETRY_SECONDS: the turns waiting on it fail at once instead of each waiting out its own connect.
The connection lives in a task of its own, since the SDK's transports are anyio context managers that must
be left in the task that entered them. A call that fails gives the model an error result, like a function
tool that raised; an output is capped at MAX_OUTPUT_CHARS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx2

from bot.settings import SEP_IN_NAMES, McpServer, Settings

if TYPE_CHECKING:
    from mcp import ClientSession

log = logging.getLogger(__name__)

SEP = SEP_IN_NAMES  # between a server's label and its tool's name
# Function names the Responses API accepts (spec `FunctionTool.name`).
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A server that does not answer its handshake or tool list in this time is left out of the turn.
CONNECT_SECONDS = 10.0
HTTP_TIMEOUT, HTTP_READ_TIMEOUT = 30.0, 300.0
# Tool descriptions are the server's text: kept to a sensible size for the model's context.
MAX_DESCRIPTION = 1024
# An output is the server's text, of any size: capped for the model's context (the API's own bound on a
# function call's output is 10,485,760 characters, spec `FunctionCallOutputItemParam.output`).
MAX_OUTPUT_CHARS = 100_000
# After a failed connect, the server is left alone this long (turns meanwhile get an error at once).
RETRY_SECONDS = 5.0


def hosted_tool(server: McpServer) -> dict[str, Any]:
    """The Responses `mcp` tool for a hosted server (spec `MCPTool`), its headers' secrets filled in from the
    environment only here, as the request is built."""
    tool: dict[str, Any] = {"type": "mcp", "server_label": server.label, "server_url": server.url}
    if server.description:
        tool["server_description"] = server.description
    if server.allowed_tools is not None:
        tool["allowed_tools"] = list(server.allowed_tools)
    tool["require_approval"] = _require_approval(server)
    if server.headers_from_env:
        tool["headers"] = Settings.mcp_headers(server)
    return tool


def _require_approval(server: McpServer) -> Any:
    if not isinstance(server.approval, list):
        return server.approval
    # The API's default is "always": tools outside the list are named in `never` when they are known.
    filters: dict[str, Any] = {}
    if server.approval:
        filters["always"] = {"tool_names": list(server.approval)}
    never = [t for t in server.allowed_tools or () if t not in server.approval]
    if never:
        filters["never"] = {"tool_names": never}
    return filters or "always"


class McpError(Exception):
    """A bot-side server could not be reached or failed a request (the detail is for the log)."""


class _Connection:
    """One bot-side server's session, held open by a task of its own."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event = asyncio.Event()
        self._closing: asyncio.Event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._retry_at = 0.0  # loop time before which a failed connect is not tried again
        self.tools: list[Any] | None = None  # the server's tool list, read when it connects

    async def session(self) -> ClientSession:
        """The open session, or one opened now. Callers queue on the lock: one attempt at a time, and
        after it failed the others fail at once (until RETRY_SECONDS passed)."""
        async with self._lock:
            if self._session is None or self._task is None or self._task.done():
                loop = asyncio.get_running_loop()
                if loop.time() < self._retry_at:
                    raise McpError("a recent connect failed: not tried again yet")
                try:
                    await self._open()
                except McpError:
                    self._retry_at = loop.time() + RETRY_SECONDS
                    raise
                self._retry_at = 0.0
            assert self._session is not None
            return self._session

    async def _open(self) -> None:
        await self._close_task()
        self._ready, self._closing = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._hold(), name=f"mcp {self.server.label}")
        waiting = asyncio.create_task(self._ready.wait())
        try:
            done, _ = await asyncio.wait(
                {waiting, self._task}, timeout=CONNECT_SECONDS, return_when="FIRST_COMPLETED"
            )
        finally:
            waiting.cancel()
        if self._session is None:
            await self._close_task()
            raise McpError("did not connect" if not done else "connection failed")

    async def _hold(self) -> None:
        # The SDK is imported here, on first use: it takes about a second to import, which every bot
        # process (and every worker) would pay at start-up even with no bot-side server configured.
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self.tools = list((await session.list_tools()).tools)
                self._session = session
                self._ready.set()
                await self._closing.wait()
        except Exception as exc:  # the server died or refused: the next use reconnects
            log.warning("MCP server %s: connection ended (%s)", self.server.label, type(exc).__name__)
        finally:
            self._session = None

    def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        from mcp.client.stdio import StdioServerParameters, stdio_client
        from mcp.client.streamable_http import streamable_http_client

        server = self.server
        if server.transport == "stdio":
            assert server.command
            return stdio_client(StdioServerParameters(command=server.command[0], args=server.command[1:]))
        assert server.url is not None
        # The SDK's own default timeouts (mcp.shared._httpx_utils): a server may hold a stream open.
        timeout = httpx2.Timeout(HTTP_TIMEOUT, read=HTTP_READ_TIMEOUT)
        client = httpx2.AsyncClient(headers=Settings.mcp_headers(server), timeout=timeout)
        stack.push_async_callback(client.aclose)
        return streamable_http_client(server.url, http_client=client)

    async def lost(self, session: ClientSession) -> None:
        """`session` failed a request: dropped (if it is still the open one: another call may have opened a
        new one since), so the next use starts the server again."""
        async with self._lock:
            if self._session is session:
                await self._close_task()

    async def _close_task(self) -> None:
        task, self._task, self._session = self._task, None, None
        if task is None:
            return
        self._closing.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), CONNECT_SECONDS)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def close(self) -> None:
        async with self._lock:
            await self._close_task()


class McpTools:
    """The bot-side servers' tools as function tools: their specs for a turn, and their calls."""

    def __init__(self, servers: Iterable[McpServer]) -> None:
        self._connections = {s.label: _Connection(s) for s in servers if s.transport != "hosted"}

    def __bool__(self) -> bool:
        return bool(self._connections)

    @property
    def labels(self) -> list[str]:
        return list(self._connections)

    async def specs(self, labels: Iterable[str]) -> list[dict[str, Any]]:
        """The function tools of these servers (a server that can't be reached is left out, logged)."""
        found = await asyncio.gather(*(self._specs(label) for label in labels if label in self._connections))
        return [spec for specs in found for spec in specs]

    async def _specs(self, label: str) -> list[dict[str, Any]]:
        connection = self._connections[label]
        try:
            await connection.session()
        except McpError as exc:
            log.warning("MCP server %s not offered: %s", label, exc)
            return []
        out = []
        for tool in connection.tools or []:
            name = f"{label}{SEP}{tool.name}"
            if not connection.server.allows(tool.name) or not _FUNCTION_NAME.fullmatch(name):
                continue
            out.append(
                {
                    "type": "function",
                    "name": name,
                    "description": (tool.description or "")[:MAX_DESCRIPTION],
                    # An MCP input schema is any JSON schema: not the strict subset.
                    "parameters": tool.input_schema or {"type": "object", "properties": {}},
                    "strict": False,
                }
            )
        return out

    def owns(self, name: str) -> bool:
        return name.partition(SEP)[0] in self._connections and SEP in name

    def server_of(self, name: str) -> McpServer | None:
        connection = self._connections.get(name.partition(SEP)[0])
        return connection.server if connection is not None and SEP in name else None

    def needs_approval(self, name: str) -> bool:
        server = self.server_of(name)
        return server is not None and server.needs_approval(name.partition(SEP)[2])

    async def call(self, name: str, arguments: str, *, seconds: float) -> str:
        """The call's output as the model reads it (at most MAX_OUTPUT_CHARS). Raises McpError (the
        server failed: reconnected next time), TimeoutError (no answer in `seconds`: the server may hang,
        reconnected next time) or ValueError (arguments that are not a JSON object)."""
        from mcp.shared.exceptions import MCPError  # loaded already: a session is open
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        label, _, tool = name.partition(SEP)
        args = json.loads(arguments or "{}")
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
        connection = self._connections[label]
        session = await connection.session()
        try:
            result = await asyncio.wait_for(session.call_tool(tool, args), seconds)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await connection.lost(session)
            raise
        except MCPError as exc:
            if exc.code not in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
                # The server answered with a JSON-RPC error: the call failed, the connection is fine.
                log.info("MCP tool %s: error reply %s", name, exc.code)
                return json.dumps({"error": f"the server refused the call (JSON-RPC error {exc.code})"})
            await connection.lost(session)
            raise McpError(f"{label}: connection closed or timed out") from exc
        except Exception as exc:
            await connection.lost(session)
            raise McpError(f"{label}: {type(exc).__name__}") from exc
        text = "\n".join(_content_text(part) for part in result.content)
        if result.is_error:
            return _capped(json.dumps({"error": text[:MAX_OUTPUT_CHARS] or "the tool failed"}))
        if not text and result.structured_content is not None:
            return _capped(json.dumps(result.structured_content, default=str))
        return _capped(text)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._connections.values()))


def _capped(output: str) -> str:
    if len(output) <= MAX_OUTPUT_CHARS:
        return output
    return output[:MAX_OUTPUT_CHARS] + f"\n[output cut at {MAX_OUTPUT_CHARS:,} characters]"


def _content_text(part: Any) -> str:
    if getattr(part, "type", None) == "text":
        return str(part.text)
    return f"[{getattr(part, 'type', 'content')} content not shown]"
