"""Function tools: a team declares an async Python function with typed (pydantic) parameters and a
docstring, and it becomes a strict function tool the model can call.

    class WeatherArgs(BaseModel):
        city: str

    @tool
    async def get_weather(args: WeatherArgs, ctx: ToolContext) -> dict[str, str]:
        "The current weather in a city."
        ...

Point `ASSISTANT_TOOL_MODULES=mycompany.slack_tools` at a module holding such functions. A tool that
raises returns an error result to the model (and a note in the log), never a crash.

A tool that reads the workspace (its people, channels, files: anything a Slack Connect guest should not
see) says so with `@tool(reads_workspace=True)`: it is neither offered to nor run for a guest's turn.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints, overload

import openai
from pydantic import BaseModel, ValidationError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError
from bot.keys import Keys
from bot.tools.mcp import McpError, McpTools

log = logging.getLogger(__name__)

MARK = "__slack_assistant_tool__"


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the turn it runs in."""

    team_id: str
    user_id: str
    channel: str
    thread_ts: str | None
    slack: AsyncWebClient
    # The asking user is a Slack Connect guest (ALLOW_EXTERNAL_USERS): tools that read the workspace
    # are not run for them.
    external: bool = False
    # The function tools the turn offered the model (a channel policy's allowlist); None: all of them.
    offered: frozenset[str] | None = None
    # The turn's workspace (where approvals are kept); None outside a turn.
    keys: Keys | None = None
    # The turn's id (approvals are kept per turn and call); None outside a turn.
    turn_id: str | None = None


ToolFunc = Callable[[Any, ToolContext], Awaitable[object]]
F = TypeVar("F", bound=Callable[..., Awaitable[object]])


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    params: type[BaseModel]
    func: ToolFunc
    reads_workspace: bool = False  # kept from Slack Connect guests

    def spec(self) -> dict[str, Any]:
        return dict(
            openai.pydantic_responses_function_tool(self.params, name=self.name, description=self.description)
        )


@overload
def tool(func: F, /) -> F: ...


@overload
def tool(*, reads_workspace: bool = False) -> Callable[[F], F]: ...


def tool(func: F | None = None, /, *, reads_workspace: bool = False) -> F | Callable[[F], F]:
    """Mark an async function as a tool: `@tool`, or `@tool(reads_workspace=True)` for a tool that reads
    the workspace's data (kept from Slack Connect guests). Its first parameter is a pydantic model (the
    arguments); an optional second one receives the ToolContext."""

    def mark(f: F) -> F:
        return _mark(f, reads_workspace=reads_workspace)

    return mark if func is None else mark(func)


def _mark(func: F, *, reads_workspace: bool) -> F:
    checked: object = func  # (checked apart, so the narrowing keeps `func` an F)
    if not inspect.iscoroutinefunction(checked):
        raise TypeError(f"tool {func.__name__} must be an async function")
    try:
        hints = get_type_hints(func)
    except NameError as exc:
        raise TypeError(f"tool {func.__name__}: cannot resolve its type hints ({exc})") from exc
    params = list(inspect.signature(func).parameters)
    model = hints.get(params[0]) if params else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"tool {func.__name__}: the first parameter must be a pydantic model")
    wants_ctx = len(params) > 1

    async def call(args: Any, ctx: ToolContext) -> object:
        return await (func(args, ctx) if wants_ctx else func(args))

    description = inspect.getdoc(func) or ""
    if not description:
        raise TypeError(f"tool {func.__name__} needs a docstring: it is what the model reads")
    setattr(func, MARK, FunctionTool(func.__name__, description, model, call, reads_workspace))
    return func


def tools_in(module_name: str) -> list[FunctionTool]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"ASSISTANT_TOOL_MODULES: cannot import {module_name}: {exc}") from exc
    return [getattr(obj, MARK) for obj in vars(module).values() if hasattr(obj, MARK)]


class ToolRegistry:
    def __init__(
        self, tools: list[FunctionTool], *, timeout_seconds: float = 30.0, mcp: McpTools | None = None
    ) -> None:
        names = [t.name for t in tools]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ConfigError(f"two tools share the name(s) {', '.join(sorted(duplicates))}")
        self._tools = {t.name: t for t in tools}
        # Sent with every response: built once, with and without the tools that read the workspace.
        self._specs = [t.spec() for t in tools]
        self._guest_specs = [s for t, s in zip(tools, self._specs, strict=True) if not t.reads_workspace]
        self._timeout = timeout_seconds
        self.mcp = mcp if mcp is not None else McpTools([])

    def __bool__(self) -> bool:
        return bool(self._tools) or bool(self.mcp)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self, *, external: bool = False) -> list[dict[str, Any]]:
        """The function tools offered to the model; for a Slack Connect guest, none that read the
        workspace."""
        return list(self._guest_specs if external else self._specs)

    async def mcp_specs(self, labels: list[str]) -> list[dict[str, Any]]:
        """The function tools of these bot-side MCP servers (issue 16). (A Slack Connect guest's turn gets
        none: the runner offers it no server.)"""
        return await self.mcp.specs(labels) if labels else []

    def needs_approval(self, name: str) -> bool:
        """Whether a call of this tool waits for the asker's yes (a bot-side MCP server's setting)."""
        return self.mcp.needs_approval(name)

    async def run(self, name: str, arguments: str, ctx: ToolContext) -> str:
        """The call's output as the model will read it: the tool's result, or an error it can act on."""
        if name not in self._tools and self.mcp.owns(name):
            return await self._run_mcp(name, arguments, ctx)
        found = self._tools.get(name)
        if found is None or (ctx.offered is not None and name not in ctx.offered):
            # Never offered (not a tool, or not allowed in this channel): refused, whatever the model asks.
            return _error(f"there is no tool named {name}")
        if found.reads_workspace and ctx.external:
            # Never offered to a guest's turn; refused here too, whatever the model asks.
            log.warning("tool %s not run: it reads the workspace and the user is external", name)
            return _error(f"the tool {name} is not available to this user")
        try:
            args = found.params.model_validate_json(arguments or "{}")
        except ValidationError as exc:
            return _error(f"invalid arguments: {exc.errors(include_url=False, include_input=False)}")
        try:
            result = await asyncio.wait_for(found.func(args, ctx), self._timeout)
        except TimeoutError:
            log.warning("tool %s timed out after %ss", name, self._timeout)
            return _error(f"the tool did not answer within {self._timeout:g} seconds")
        except Exception as exc:
            # Where it failed, not its message: exception text may carry data or secrets.
            log.warning("tool %s raised %s at %s", name, type(exc).__name__, _where(exc))
            return _error(f"the tool failed ({type(exc).__name__})")
        return result if isinstance(result, str) else json.dumps(result, default=str)

    async def _run_mcp(self, name: str, arguments: str, ctx: ToolContext) -> str:
        if ctx.external or (ctx.offered is not None and name not in ctx.offered):
            return _error(f"there is no tool named {name}")
        try:
            # The timeout is the call's own (connecting has its own bound): a hung server is reset.
            return await self.mcp.call(name, arguments, seconds=self._timeout)
        except TimeoutError:
            log.warning("MCP tool %s timed out after %ss", name, self._timeout)
            return _error(f"the tool did not answer within {self._timeout:g} seconds")
        except ValueError:
            return _error("invalid arguments: a JSON object is expected")
        except McpError as exc:
            log.warning("MCP tool %s failed: %s", name, exc)
            return _error("the tool's server failed or could not be reached")


def _error(message: str) -> str:
    return json.dumps({"error": message})


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"
