"""Token usage accounting (issue 13): the tokens of every response, per user, per channel and per workspace,
by UTC day; and what `/assistant usage` and the App Home show of them.

Each response that ends (every round of a tool loop, an incomplete one too) is counted by one Lua script, in
one round trip: a per-response marker (SET NX) first, so a retried turn that resumes a response already
counted adds nothing; then HINCRBY on the day's hashes (workspace, user, channel) and ZINCRBY on the day's
leaderboards (top users, top channels). The day is the response's own creation day (UTC), so a retry on
the next day still counts it on the day it ran. Direct messages count as one channel, `dm`.

Counting is best effort: a Redis failure is logged and the answer goes on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import TokenUsage
from bot.keys import USAGE_COUNTED_TTL, USAGE_TTL, Keys, ms
from bot.models import Workspace
from bot.slack.client import SLACK_CALL_ERRORS, slack_error
from bot.slack.inert import escape_mrkdwn

log = logging.getLogger(__name__)

DM_CHANNEL = "dm"  # every direct message with the bot, as one "channel"
TOP_SHOWN = 5
# (label, days ending today) of the user's own usage.
WINDOWS = (("Today", 1), ("Last 7 days", 7), ("Last 30 days", 30))
ADMIN_WINDOW_DAYS = 30
# Whether someone is a workspace admin is asked of Slack (users.info) at most this often per person (so a
# change of role shows within a minute).
ADMIN_CACHE_SECONDS = 60.0
ADMIN_CACHE_MAX = 10_000
_FIELDS = ("input", "output", "total", "reasoning", "responses")

# KEYS: marker, workspace day hash, user day hash, channel day hash, top users zset, top channels zset.
# ARGV: marker ttl ms, usage ttl ms, user, channel, input, output, total, reasoning ('' when not reported).
# Returns 1 when counted, 0 when this response was counted already. A day's key gets its TTL when the
# script creates it (its first response: `responses` becomes 1; the leaderboards with the workspace's
# hash), not on every response.
_RECORD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local created = {}
for k = 2, 4 do
  redis.call('HINCRBY', KEYS[k], 'input', ARGV[5])
  redis.call('HINCRBY', KEYS[k], 'output', ARGV[6])
  redis.call('HINCRBY', KEYS[k], 'total', ARGV[7])
  if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[k], 'reasoning', ARGV[8]) end
  if redis.call('HINCRBY', KEYS[k], 'responses', 1) == 1 then
    redis.call('PEXPIRE', KEYS[k], ARGV[2])
    created[k] = true
  end
end
redis.call('ZINCRBY', KEYS[5], ARGV[7], ARGV[3])
redis.call('ZINCRBY', KEYS[6], ARGV[7], ARGV[4])
if created[2] then
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
  redis.call('PEXPIRE', KEYS[6], ARGV[2])
end
return 1
"""

# What the bot itself renders as a mention: only ids shaped like Slack's (anything else is shown inert).
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")


@dataclass(frozen=True)
class Totals:
    input: int = 0
    output: int = 0
    total: int = 0
    reasoning: int = 0
    responses: int = 0

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> Totals:
        return cls(**{name: int(fields.get(name, 0) or 0) for name in _FIELDS})

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, n) + getattr(other, n) for n in _FIELDS))


def utc_day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d")


def last_days(now: float, count: int) -> list[str]:
    """The `count` UTC days ending with today's, newest first."""
    today = datetime.fromtimestamp(now, tz=UTC)
    return [(today - timedelta(days=n)).strftime("%Y-%m-%d") for n in range(count)]


def channel_of(channel: str, *, is_dm: bool) -> str:
    return DM_CHANNEL if is_dm else channel


class UsageLedger:
    """Usage in Redis: `record` per response, and the reads the reports need."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)

    async def record(
        self, keys: Keys, *, user: str, channel: str, response_id: str, usage: TokenUsage
    ) -> bool:
        """Count one response's tokens (once: False when it was counted already, or Redis failed)."""
        day = utc_day(usage.created_at)
        try:
            counted = await self._record(
                keys=[
                    keys.usage_counted(response_id),
                    keys.usage_workspace(day),
                    keys.usage_user(day, user),
                    keys.usage_channel(day, channel),
                    keys.usage_top_users(day),
                    keys.usage_top_channels(day),
                ],
                args=[
                    ms(USAGE_COUNTED_TTL),
                    ms(USAGE_TTL),
                    user,
                    channel,
                    usage.input,
                    usage.output,
                    usage.total,
                    "" if usage.reasoning is None else usage.reasoning,
                ],
            )
        except RedisError as exc:
            log.warning("usage of %s not counted: Redis %s", response_id, type(exc).__name__)
            return False
        if not counted:
            log.info("usage of %s was counted already", response_id)
        return bool(counted)

    async def _sum(self, names: list[str]) -> list[Totals]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(name)
            found = await pipe.execute()
        return [Totals.of(h) for h in found]

    async def user_days(self, keys: Keys, user: str, days: list[str]) -> list[Totals]:
        """The user's totals of each day, in the order given."""
        return await self._sum([keys.usage_user(day, user) for day in days])

    async def workspace_days(self, keys: Keys, days: list[str]) -> list[Totals]:
        return await self._sum([keys.usage_workspace(day) for day in days])

    async def top(
        self, keys: Keys, days: list[str], of: Literal["users", "channels"], count: int
    ) -> list[tuple[str, int]]:
        """The `count` users (or channels) with the most tokens over these days, most first."""
        board = keys.usage_top_users if of == "users" else keys.usage_top_channels
        # One slot (the workspace's hash tag): ZUNION over the days is legal on Redis Cluster too.
        scored = await self._redis.zunion([board(day) for day in days], withscores=True)
        pairs = cast("list[tuple[str, float]]", scored)
        ranked = sorted(((str(m), int(s)) for m, s in pairs), key=lambda ms_: (-ms_[1], ms_[0]))
        return ranked[:count]


class Admins:
    """Whether a person is a workspace admin or owner (users.info), asked briefly cached."""

    def __init__(self, client: AsyncWebClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._known: dict[tuple[str, str], tuple[bool, float]] = {}

    async def is_admin(self, workspace: Workspace, user: str, *, external: bool) -> bool:
        # A Slack Connect guest may be an admin of their own workspace, never of this one.
        if external:
            return False
        key = (workspace.team_id, user)
        now = self._clock()
        cached = self._known.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            info = (await self._client.users_info(user=user)).get("user") or {}
        except SLACK_CALL_ERRORS as exc:
            log.info("users.info for the usage report failed (%s): not shown as admin", slack_error(exc))
            return False  # not cached: asked again next time
        owner = info.get("is_owner") or info.get("is_primary_owner")
        admin = bool(info.get("is_admin") or owner) and not info.get("deleted") and _ours(info, workspace)
        if len(self._known) >= ADMIN_CACHE_MAX:
            self._known.clear()
        self._known[key] = (admin, now + ADMIN_CACHE_SECONDS)
        return admin


def _ours(info: Mapping[str, Any], workspace: Workspace) -> bool:
    """The user belongs to this workspace (or its Enterprise Grid org): an admin of another organization's
    workspace (Slack Connect) is none of ours, even where no event said they are external."""
    team = info.get("team_id")
    enterprise_user = info.get("enterprise_user")
    org = enterprise_user.get("enterprise_id") if isinstance(enterprise_user, Mapping) else None
    return team == workspace.team_id or (
        workspace.enterprise_id is not None and org == workspace.enterprise_id
    )


class FeedbackLines(Protocol):
    """The answer ratings `/assistant usage` shows (`bot.threads.feedback.Feedback`)."""

    async def usage_lines(self, workspace: Workspace, user: str, *, admin: bool, days: int) -> list[str]: ...


class UsageReport:
    """`/assistant usage` and the App Home's usage lines."""

    def __init__(
        self,
        ledger: UsageLedger,
        admins: Admins,
        *,
        clock: Callable[[], float] = time.time,
        feedback: FeedbackLines | None = None,
    ) -> None:
        self._ledger = ledger
        self._admins = admins
        self._clock = clock
        self._feedback = feedback

    async def own(self, workspace: Workspace, user: str) -> list[tuple[str, Totals]]:
        """The user's totals over each of `WINDOWS`. Raises RedisError."""
        days = last_days(self._clock(), max(n for _, n in WINDOWS))
        per_day = await self._ledger.user_days(workspace.keys, user, days)
        return [(label, sum(per_day[:n], Totals())) for label, n in WINDOWS]

    async def text(self, workspace: Workspace, user: str, *, external: bool) -> str:
        """The answer to `/assistant usage` (mrkdwn). Raises RedisError."""
        lines = ["*Your assistant usage* (tokens; days in UTC)"]
        lines += [f"• {label}: {describe(totals)}" for label, totals in await self.own(workspace, user)]
        admin = await self._admins.is_admin(workspace, user, external=external)
        if self._feedback is not None:
            lines += await self._feedback.usage_lines(workspace, user, admin=admin, days=ADMIN_WINDOW_DAYS)
        if admin:
            lines += ["", *await self._workspace_lines(workspace)]
        return "\n".join(lines)

    async def _workspace_lines(self, workspace: Workspace) -> list[str]:
        keys = workspace.keys
        days = last_days(self._clock(), ADMIN_WINDOW_DAYS)
        total = sum(await self._ledger.workspace_days(keys, days), Totals())
        users = await self._ledger.top(keys, days, "users", TOP_SHOWN)
        channels = await self._ledger.top(keys, days, "channels", TOP_SHOWN)
        lines = [f"*This workspace, last {ADMIN_WINDOW_DAYS} days* (you are an admin): {describe(total)}"]
        if not users:
            return lines
        lines.append(f"*Top {len(users)} users*")
        lines += [f"{n}. {user_ref(u)}: {tokens:,} tokens" for n, (u, tokens) in enumerate(users, 1)]
        lines.append(f"*Top {len(channels)} channels*")
        lines += [f"{n}. {channel_ref(c)}: {tokens:,} tokens" for n, (c, tokens) in enumerate(channels, 1)]
        return lines


def describe(totals: Totals) -> str:
    if not totals.responses:
        return "none"
    reasoning = f", {totals.reasoning:,} of them reasoning" if totals.reasoning else ""
    plural = "" if totals.responses == 1 else "s"
    return (
        f"{totals.total:,} tokens ({totals.input:,} in, {totals.output:,} out{reasoning}) "
        f"in {totals.responses:,} model response{plural}"
    )


def user_ref(member: str) -> str:
    """A user id from the leaderboard as the bot's own mention; anything not shaped like one, inert."""
    return f"<@{member}>" if _USER_ID.fullmatch(member) else escape_mrkdwn(member)


def channel_ref(member: str) -> str:
    if member == DM_CHANNEL:
        return "Direct messages"
    return f"<#{member}>" if _CHANNEL_ID.fullmatch(member) else escape_mrkdwn(member)
