"""A small MCP server for the tests, written with the official `mcp` SDK (`MCPServer`): the bot-side MCP
path talks to it over stdio (`python -m tests.mcp_server stdio`) or streamable HTTP on loopback
(`python -m tests.mcp_server http PORT`).

Tools: `lookup_ticket` answers from a fixed table; `deploy` says what it deployed (a tool a team would put
behind an approval; a `slow-…` service takes 3 s) and, given `--runs PATH`, appends a line to that file per
run (what a test counts: the side effect, not what the model was told); `crash` ends the server process at
once (a server that dies mid-call); `refuse` answers with a JSON-RPC error (the connection stays fine);
`hang` never answers; `pid` names the server's process (which connection answered); `big` answers 200,000
characters. Over HTTP, every
request must carry the header `X-Api-Key` with the value of the `MCP_TEST_KEY` environment variable (how a
secret header reaches a server); a request without it gets 401.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

TICKETS = {"T-42": "open: printer on fire", "T-7": "closed: coffee machine fixed"}
# `--runs PATH` (anywhere after the mode): where `deploy` records its runs.
RUNS = sys.argv[sys.argv.index("--runs") + 1] if "--runs" in sys.argv else None

server = MCPServer("test-tickets")


@server.tool()
def lookup_ticket(ticket_id: str) -> str:
    """The status of a ticket."""
    return TICKETS.get(ticket_id, f"no ticket {ticket_id}")


@server.tool()
async def deploy(service: str) -> str:
    """Deploy a service to production."""
    _record(service)
    if service.startswith("slow-"):  # a long deploy: a test stops the bot while it runs
        await asyncio.sleep(3)
    return f"deployed {service}"


def _record(service: str) -> None:
    if RUNS:
        with open(RUNS, "a") as runs:
            runs.write(f"{service}\n")


@server.tool()
def refuse() -> str:
    """Always refused with a JSON-RPC error."""
    raise MCPError(code=-32602, message="refused on purpose")


@server.tool()
async def hang() -> str:
    """Never answers (a hung server)."""
    await asyncio.sleep(3600)
    return "late"


@server.tool()
def pid() -> str:
    """This server's process id."""
    return str(os.getpid())


@server.tool()
def big() -> str:
    """A very long answer."""
    return "x" * 200_000


@server.tool()
def crash() -> str:
    """Ends the server (a server that dies while it works)."""
    sys.stdout.flush()
    os._exit(3)


def _http(port: int) -> None:
    import uvicorn
    from starlette.types import ASGIApp, Receive, Scope, Send

    app = server.streamable_http_app()
    key = os.environ.get("MCP_TEST_KEY", "")

    def guarded(inner: ASGIApp) -> ASGIApp:
        async def call(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                if not key or headers.get(b"x-api-key", b"").decode() != key:
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await inner(scope, receive, send)

        return call

    uvicorn.run(guarded(app), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        _http(int(sys.argv[2]))
    else:
        try:
            server.run("stdio")
        except Exception:  # its client went away (a bot killed by a test): end quietly, no traceback
            sys.exit(1)
