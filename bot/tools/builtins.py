"""The built-in tools (each switched on in `ASSISTANT_TOOLS`), and the registry the configuration turns on:
the enabled built-ins, then the teams' own modules (`ASSISTANT_TOOL_MODULES`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field
from slack_sdk.errors import SlackApiError

from bot.errors import ConfigError
from bot.settings import Settings
from bot.slack.client import slack_error
from bot.tools.mcp import McpTools
from bot.tools.registry import MARK, FunctionTool, ToolContext, ToolRegistry, tool, tools_in

log = logging.getLogger(__name__)


class NoArgs(BaseModel):
    pass


class UserArgs(BaseModel):
    user_id: str = Field(description="A Slack user id such as U0123ABC (from a <@U0123ABC> mention).")


@tool
async def current_time(args: NoArgs, ctx: ToolContext) -> dict[str, str]:
    """The current date and time in the time zone of the user who is asking."""
    tz_name = "UTC"
    try:
        user = (await ctx.slack.users_info(user=ctx.user_id)).get("user") or {}
        tz_name = str(user.get("tz") or "UTC")
    except SlackApiError as exc:
        log.info("current_time: users.info failed (%s); using UTC", slack_error(exc))
    try:
        zone: Any = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone, tz_name = UTC, "UTC"
    now = datetime.now(zone)
    return {"iso": now.isoformat(timespec="seconds"), "weekday": now.strftime("%A"), "time_zone": tz_name}


@tool(reads_workspace=True)
async def slack_user_profile(args: UserArgs, ctx: ToolContext) -> dict[str, object]:
    """Look up a Slack user's public profile: name, title, time zone and status."""
    user = (await ctx.slack.users_info(user=args.user_id.strip("<@>"))).get("user") or {}
    profile = user.get("profile") or {}
    return {
        "id": user.get("id"),
        "name": profile.get("real_name") or user.get("real_name") or user.get("name"),
        "display_name": profile.get("display_name"),
        "title": profile.get("title"),
        "time_zone": user.get("tz"),
        "status": profile.get("status_text"),
        "is_bot": user.get("is_bot", False),
    }


BUILTIN_TOOLS: dict[str, Callable[..., Awaitable[object]]] = {
    "current_time": current_time,
    "slack_user_profile": slack_user_profile,
}


def builtin(name: str) -> FunctionTool:
    return getattr(BUILTIN_TOOLS[name], MARK)  # type: ignore[no-any-return]


def registry_from(settings: Settings) -> ToolRegistry:
    """The function tools the configuration turns on: the enabled built-ins, then the teams' own modules."""
    found = [builtin(name) for name in settings.assistant_tools if name in BUILTIN_TOOLS]
    for module_name in settings.assistant_tool_modules:
        module_tools = tools_in(module_name)
        if not module_tools:
            raise ConfigError(f"ASSISTANT_TOOL_MODULES: {module_name} defines no @tool functions")
        found += module_tools
    mcp = McpTools(settings.mcp_server_list())
    return ToolRegistry(found, timeout_seconds=settings.tool_timeout_seconds, mcp=mcp)
