"""A small MCP server for the tests, written with the official `mcp` SDK (`MCPServer`): the bot-side MCP
path talks to it over stdio (`python -m tests.mcp_server stdio`) or streamable HTTP on loopback
(`python -m tests.mcp_server http PORT`).

Tools: `lookup_ticket` answers from a fixed table; `deploy` says what it deployed (a tool a team would put
behind an approval); `crash` ends the server process at once (a server that dies mid-call). Over HTTP, every
request must carry the header `X-Api-Key` with the value of the `MCP_TEST_KEY` environment variable (how a
secret header reaches a server); a request without it gets 401.
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer

TICKETS = {"T-42": "open: printer on fire", "T-7": "closed: coffee machine fixed"}

server = MCPServer("test-tickets")


@server.tool()
def lookup_ticket(ticket_id: str) -> str:
    """The status of a ticket."""
    return TICKETS.get(ticket_id, f"no ticket {ticket_id}")


@server.tool()
def deploy(service: str) -> str:
    """Deploy a service to production."""
    return f"deployed {service}"


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
        server.run("stdio")
