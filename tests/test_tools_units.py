"""bot/tools: declaring tools, validating arguments, and turning failures into results."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError
from bot.tools import ToolContext, ToolRegistry, builtin, tool, tools_in
from bot.tools.registry import MARK

CTX = ToolContext(
    team_id="T1", user_id="U1", channel="C1", thread_ts=None, slack=AsyncWebClient(token="xoxb-unused")
)


def run(registry: ToolRegistry, name: str, arguments: str) -> dict:
    return json.loads(asyncio.run(registry.run(name, arguments, CTX)))


def test_team_module_tools_become_strict_function_tools() -> None:
    tools = tools_in("tests.sample_tools")
    registry = ToolRegistry(tools, timeout_seconds=0.5)
    assert registry.names == ["get_weather", "open_ticket", "nap"]
    spec = next(s for s in registry.specs() if s["name"] == "get_weather")
    assert spec["type"] == "function" and spec["strict"] is True
    assert spec["description"] == "The current weather in a city."
    assert spec["parameters"]["required"] == ["city", "unit"]
    assert spec["parameters"]["additionalProperties"] is False


def test_calls_validate_arguments_and_failures_become_error_results() -> None:
    registry = ToolRegistry(tools_in("tests.sample_tools"), timeout_seconds=2.0)
    assert run(registry, "get_weather", '{"city": "Oslo", "unit": "celsius"}')["temperature"] == -3
    assert "invalid arguments" in run(registry, "get_weather", '{"city": "Oslo"}')["error"]
    assert "invalid arguments" in run(registry, "get_weather", "not json")["error"]
    assert run(registry, "open_ticket", '{"ticket_id": "42"}') == {"error": "the tool failed (RuntimeError)"}
    assert "within 2 seconds" in run(registry, "nap", '{"seconds": 5}')["error"]
    assert run(registry, "no_such_tool", "{}") == {"error": "there is no tool named no_such_tool"}


class Args(BaseModel):
    x: int


def test_bad_declarations_are_refused() -> None:
    def not_async(args: Args) -> None:
        """Doc."""

    async def no_doc(args: Args) -> None:
        pass

    async def no_model(x: int) -> None:
        """Doc."""

    for func in (not_async, no_doc, no_model):
        with pytest.raises(TypeError):
            tool(func)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        tools_in("tests.no_such_module")
    with pytest.raises(ConfigError):
        ToolRegistry([builtin("current_time"), builtin("current_time")])


class Query(BaseModel):
    q: str


@tool(reads_workspace=True)
async def search_channels(args: Query, ctx: ToolContext) -> dict[str, str]:
    """Search this workspace's channels."""
    return {"found": args.q}


def test_tools_that_read_the_workspace_are_kept_from_slack_connect_guests() -> None:
    declared = getattr(search_channels, MARK)
    registry = ToolRegistry([builtin("current_time"), builtin("slack_user_profile"), declared])
    assert [s["name"] for s in registry.specs()] == ["current_time", "slack_user_profile", "search_channels"]
    assert [s["name"] for s in registry.specs(external=True)] == ["current_time"]
    assert run(registry, "search_channels", '{"q": "x"}') == {"found": "x"}
    guest = ToolContext("T1", "U1", "C1", None, AsyncWebClient(token="xoxb-unused"), external=True)
    refused = json.loads(asyncio.run(registry.run("search_channels", '{"q": "x"}', guest)))
    assert refused == {"error": "the tool search_channels is not available to this user"}
