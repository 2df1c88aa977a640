"""The App Home tab: the model and tools, the user's recent assistant threads, and buttons for the user's
own DM thread (its settings, a reset)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.keys import POLICY_WORKSPACE
from bot.models import Workspace
from bot.slack.client import slack_error
from bot.slack.ephemeral import Ephemeral
from bot.slack.inert import escape_mrkdwn
from bot.threads.admin import RESET_QUEUED, ThreadAdmin, slack_date, user_text
from bot.threads.guests import Guests
from bot.threads.policy import ChannelPolicies
from bot.threads.spending import Spending
from bot.threads.store import ThreadStore
from bot.threads.targets import Targets, ThreadTarget
from bot.threads.usage import Totals, UsageReport, describe

log = logging.getLogger(__name__)

HOME_RESET_ACTION = "home_reset_dm_thread"
HOME_SETTINGS_ACTION = "home_dm_thread_settings"
HOME_THREADS_SHOWN = 10
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")

View = dict[str, Any]


@dataclass(frozen=True)
class RecentThread:
    label: str
    url: str
    last_active: float


class AppHome:
    def __init__(
        self,
        *,
        model: str,
        tool_names: list[str],
        store: ThreadStore,
        admin: ThreadAdmin,
        targets: Targets,
        client: AsyncWebClient,
        spending: Spending,
        ephemeral: Ephemeral,
        guests: Guests,
        usage: UsageReport | None = None,
        policies: ChannelPolicies | None = None,
    ) -> None:
        self._policies = policies
        self._usage = usage
        self._model = model
        self._tool_names = tool_names
        self._store = store
        self._admin = admin
        self._targets = targets
        self._client = client
        self._spending = spending
        self._ephemeral = ephemeral
        self._guests = guests
        self._workspace_urls: dict[Workspace, str] = {}

    async def publish(self, workspace: Workspace, user: str) -> None:
        try:
            recent = await self._store.recent(workspace.keys, user, HOME_THREADS_SHOWN)
        except RedisError:
            log.warning("App Home: Redis unavailable; showing no threads")
            recent = []
        base = await self._workspace_base(workspace)
        threads = [_recent_thread(workspace, thread, when, record, base) for thread, when, record in recent]
        view = home_view(
            model=self._model,
            tools=self._tool_names,
            threads=threads,
            date=slack_date,
            usage=await self._own_usage(workspace, user),
            policies=await self._policies.listing(workspace, user) if self._policies is not None else None,
        )
        try:
            await self._client.views_publish(user_id=user, view=view)
        except SlackApiError as exc:
            log.warning("views.publish failed: %s", slack_error(exc))

    async def _own_usage(self, workspace: Workspace, user: str) -> list[tuple[str, Totals]]:
        """The user's tokens today and over the last 30 days (none shown when Redis is down)."""
        if self._usage is None:
            return []
        try:
            windows = await self._usage.own(workspace, user)
        except RedisError:
            log.warning("App Home: Redis unavailable; showing no usage")
            return []
        return [windows[0], windows[-1]]

    async def reset_dm_thread(
        self, workspace: Workspace, user: str, *, request_id: str, external: bool = False
    ) -> None:
        """The reset button (it costs a spend-limit token): queue a reset of the user's DM thread, then show
        the tab again. A refusal (over the limit, storage down, a Slack Connect guest not served) is told
        in the DM, to the user only."""
        target = await self._targets.of_dm(workspace, user)
        if target is not None and self._guests.refuses(external):
            await self._guests.turn_away(workspace, target.channel, user, None)
        elif target is not None:
            told = await user_text(self._paid_reset(target, request_id=request_id))
            if told != RESET_QUEUED:
                await self._ephemeral.whisper(target.channel, user, told, None)
        await self.publish(workspace, user)

    async def _paid_reset(self, target: ThreadTarget, *, request_id: str) -> str:
        await self._spending.pay(target.workspace, target.user)
        return await self._admin.queue_reset(target, request_id=request_id)

    async def _workspace_base(self, workspace: Workspace) -> str:
        """The workspace's own URL, for permalinks (asked once per workspace: it does not change while we
        run; installed with OAuth, each workspace has its own)."""
        url = self._workspace_urls.get(workspace)
        if url is None:
            try:
                url = str((await self._client.auth_test())["url"])
            except (SlackApiError, KeyError):
                return "https://slack.com/"
            self._workspace_urls[workspace] = url
        return url


def _recent_thread(
    workspace: Workspace, thread: str, when: float, record: dict[str, str], base: str
) -> RecentThread:
    channel = record.get("channel", "")
    if thread.startswith("u:"):
        url = f"https://slack.com/app_redirect?team={workspace.team_id}&channel={channel}"
        return RecentThread("Your direct-message thread", url, when)
    _, channel, ts = thread.split(":", 2)
    url = f"{base}archives/{channel}/p{ts.replace('.', '')}?thread_ts={ts}&cid={channel}"
    return RecentThread(f"Thread in <#{channel}>", url, when)


def _text(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def home_view(
    *,
    model: str,
    tools: list[str],
    threads: list[RecentThread],
    date: Callable[[float], str],
    usage: Sequence[tuple[str, Totals]] = (),
    policies: Sequence[str] | None = None,
) -> View:
    """The App Home tab. `date` renders an epoch as Slack date markup; `usage`: (label, totals) of the
    user's own tokens."""
    tool_names = escape_mrkdwn(", ".join(tools)) if tools else "none"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your assistant"}},
        {"type": "section", "text": _text(f"*Model:* `{escape_mrkdwn(model)}`\n*Tools:* {tool_names}")},
        {"type": "divider"},
        {"type": "section", "text": _text("*Your recent assistant threads*")},
    ]
    if threads:
        lines = [f"• <{t.url}|{t.label}> · {date(t.last_active)}" for t in threads]
        blocks.append({"type": "section", "text": _text("\n".join(lines))})
    else:
        blocks.append(
            {"type": "context", "elements": [_text("None yet. Mention me in a channel or write to me.")]}
        )
    if usage:
        lines = [f"• {label}: {describe(totals)}" for label, totals in usage]
        blocks += [
            {"type": "divider"},
            {"type": "section", "text": _text("*Your usage* (tokens; days in UTC)\n" + "\n".join(lines))},
            {"type": "context", "elements": [_text("More with `/assistant usage`.")]},
        ]
    if policies is not None:  # shown to those who may change them (issue 15)
        blocks += [{"type": "divider"}, {"type": "section", "text": _text(policy_lines(policies))}]
    blocks += [
        {"type": "divider"},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": HOME_SETTINGS_ACTION,
                    "text": {"type": "plain_text", "text": "My DM thread's settings"},
                },
                {
                    "type": "button",
                    "action_id": HOME_RESET_ACTION,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Reset my DM thread"},
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Reset your DM thread?"},
                        "text": _text("The assistant forgets your direct-message conversation."),
                        "confirm": {"type": "plain_text", "text": "Reset"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                },
            ],
        },
    ]
    return {"type": "home", "blocks": blocks}


def policy_lines(scopes: Sequence[str]) -> str:
    """The channels with a policy (and whether the workspace has a default), for admins."""
    channels = [s for s in scopes if s != POLICY_WORKSPACE]
    lines = ["*Channel policies* (you can change them with `/assistant config` in the channel)"]
    lines.append("• Workspace default: " + ("set" if POLICY_WORKSPACE in scopes else "not set"))
    lines += [f"• <#{c}>" if _CHANNEL_ID.fullmatch(c) else f"• {escape_mrkdwn(c)}" for c in channels]
    if not channels:
        lines.append("• No channel has its own policy.")
    return "\n".join(lines)
