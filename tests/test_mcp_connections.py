"""A bot-side MCP server's connection (issue 16 review), against tests/mcp_server.py over stdio: a JSON-RPC
error reply is the tool's error and the connection stays; a call that hangs past its timeout resets the
connection; a stale failure report does not close a newer connection; a failed connect is not tried again
by every waiting call; an output is capped."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from bot.settings import McpServer
from bot.tools.mcp import MAX_OUTPUT_CHARS, McpError, McpTools

SERVER = str(Path(__file__).resolve().parent / "mcp_server.py")
T = TypeVar("T")


def with_tools(work: Callable[[McpTools], Awaitable[T]], command: list[str] | None = None) -> T:
    server = McpServer(label="tix", transport="stdio", command=command or [sys.executable, SERVER])

    async def main() -> T:
        tools = McpTools([server])
        try:
            return await work(tools)
        finally:
            await tools.close()

    return asyncio.run(main())


def test_an_error_reply_is_the_tools_error_and_the_connection_stays() -> None:
    async def work(tools: McpTools) -> tuple[str, str, str]:
        before = await tools.call("tix__pid", "{}", seconds=20)
        refused = await tools.call("tix__refuse", "{}", seconds=20)
        return before, refused, await tools.call("tix__pid", "{}", seconds=20)

    before, refused, after = with_tools(work)
    assert json.loads(refused) == {"error": "the server refused the call (JSON-RPC error -32602)"}
    assert before == after  # the same server process answered: not reconnected


def test_a_hung_call_resets_the_connection() -> None:
    async def work(tools: McpTools) -> tuple[str, str]:
        before = await tools.call("tix__pid", "{}", seconds=20)
        with pytest.raises(TimeoutError):
            await tools.call("tix__hang", "{}", seconds=0.5)
        return before, await tools.call("tix__pid", "{}", seconds=20)

    before, after = with_tools(work)
    assert before != after  # a new server process


def test_a_stale_failure_does_not_close_the_newer_connection() -> None:
    async def work(tools: McpTools) -> tuple[str, str]:
        connection = tools._connections["tix"]
        first = await connection.session()
        await connection.lost(first)
        await connection.session()
        before = await tools.call("tix__pid", "{}", seconds=20)
        await connection.lost(first)  # a late report about the old session
        return before, await tools.call("tix__pid", "{}", seconds=20)

    before, after = with_tools(work)
    assert before == after


def test_a_failed_connect_is_not_tried_again_by_every_waiting_call() -> None:
    async def work(tools: McpTools) -> list[str]:
        got = await asyncio.gather(
            *(tools.call("tix__pid", "{}", seconds=20) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(e, McpError) for e in got)
        return sorted(str(e) for e in got)

    failed = with_tools(work, command=[sys.executable, "-c", "raise SystemExit(3)"])
    # One attempt failed; the calls queued behind it were told so without a connect of their own.
    assert failed.count("a recent connect failed: not tried again yet") == 2


def test_a_long_output_is_capped() -> None:
    async def work(tools: McpTools) -> str:
        return await tools.call("tix__big", "{}", seconds=20)

    output = with_tools(work)
    assert output == "x" * MAX_OUTPUT_CHARS + f"\n[output cut at {MAX_OUTPUT_CHARS:,} characters]"
