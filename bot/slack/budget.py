"""Slack's rate limits, shared by every replica: one token bucket per workspace and Web API method in Redis.

Slack counts calls per method, per workspace, per app, in tiers (docs.slack.dev "Rate limits"): Tier 2 is
about 20 calls a minute, Tier 3 about 50, Tier 4 about 100, and chat.postMessage about one message a
second per channel. Every replica takes from the same buckets, so together they stay inside each tier;
a 429 that happens anyway is still honoured by slack-sdk's retry handler (`Retry-After`).

A bucket holds up to a minute's worth of calls (Slack tolerates short bursts) and refills continuously.
The bot budgets `BUDGET_SHARE` of each tier and bursts one call short of Slack's, leaving room for calls
it does not count and for calls that reach Slack later than they were counted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.keys import Keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    per_minute: float
    burst: float  # calls Slack tolerates at once
    per_channel: bool = False  # one bucket per channel (else one per workspace)
    # Calls short of Slack's burst: calls reach Slack a little after they are counted, and a busy event loop
    # can bunch them up. Zero for statuses, which a background task sends (a 429 there delays nobody).
    margin: float = 1.0


# Calls per minute by tier (docs.slack.dev "Rate limits"; java-slack-sdk MethodsRateLimitTier).
TIER_PER_MINUTE = {1: 1.0, 2: 20.0, 3: 50.0, 4: 100.0}


def _tier(n: int) -> tuple[Limit, ...]:
    return (Limit(TIER_PER_MINUTE[n], TIER_PER_MINUTE[n]),)


# Sources: slackapi/java-slack-sdk MethodsRateLimits.java; slack-ruby/slack-api-ref (chat.appendStream `t4`);
# docs.slack.dev chat.postMessage ("1 message per second per channel", bursts allowed, and a workspace
# limit of several hundred a minute); setStatus is a special tier "similar to chat.postMessage".
LIMITS: dict[str, tuple[Limit, ...]] = {
    "chat.startStream": _tier(2),
    "chat.stopStream": _tier(2),
    "chat.update": _tier(3),
    "chat.delete": _tier(3),
    "chat.appendStream": _tier(4),
    "chat.postEphemeral": _tier(4),
    "views.open": _tier(4),
    "views.update": _tier(4),
    "chat.postMessage": (Limit(60, 3, per_channel=True), Limit(300, 300)),
    "assistant.threads.setStatus": (Limit(60, 3, per_channel=True, margin=0.0),),
    # slack-ruby/slack-api-ref agents.sessions.setStatus.json / rename.json: `rate_limits: "t3"`.
    "agents.sessions.setStatus": _tier(3),
    "agents.sessions.rename": _tier(3),
}
BUDGET_SHARE = 0.9
# The longest a finished answer waits for its turn to be written (past it, the call goes out anyway and
# slack-sdk honours any 429's Retry-After).
MAX_WAIT_SECONDS = 60.0

# KEYS: buckets. ARGV: per bucket capacity, refill per ms, cost. Takes every cost or none.
# Returns 0 when taken, else the ms until all of them could be.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local levels = {}
for i = 1, #KEYS do
  local cap, rate, cost = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  levels[i] = tokens
  if tokens < cost then wait = math.max(wait, math.ceil((cost - tokens) / rate)) end
end
if wait > 0 then return wait end
for i = 1, #KEYS do
  local cap, rate, cost = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - cost), 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate) + 1000)
end
return 0
"""


@dataclass(frozen=True)
class Bucket:
    key: str
    capacity: float
    per_ms: float


class SlackBudget:
    def __init__(self, redis: Redis, *, share: float = BUDGET_SHARE) -> None:
        self._share = share
        self._take = redis.register_script(_TAKE)

    def buckets(self, keys: Keys, method: str, channel: str | None = None) -> list[Bucket]:
        out = []
        for limit in LIMITS[method]:
            scope = (channel or "") if limit.per_channel else ""
            per_minute = limit.per_minute * self._share
            burst = max(1.0, limit.burst * self._share - limit.margin)
            out.append(Bucket(keys.slack_budget(method, scope), burst, per_minute / 60_000))
        return out

    async def try_take(self, *buckets: Bucket, calls: int = 1) -> float:
        """Take `calls` calls from each bucket, all or none: 0.0 when taken, else the seconds until they
        could be. With Redis unavailable the call is allowed (Slack's own limit, and the retry handler, still
        hold)."""
        args: list[float] = []
        for b in buckets:
            args += [b.capacity, b.per_ms, calls]
        try:
            wait_ms = await self._take(keys=[b.key for b in buckets], args=args)
        except RedisError as exc:
            log.info("Slack budget unavailable (%s); calling anyway", type(exc).__name__)
            return 0.0
        return int(wait_ms) / 1000

    async def take(self, *buckets: Bucket, patience: float = MAX_WAIT_SECONDS) -> None:
        """Take one call from each bucket, waiting for them (at most `patience` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while (wait := await self.try_take(*buckets)) > 0:
            if loop.time() + wait > deadline:
                log.info("Slack budget: waited %.0fs; calling anyway", patience)
                return
            await asyncio.sleep(wait)


class ChannelPace:
    """The budget as one answer in one channel sees it (what `ReplyStream` asks before each call)."""

    def __init__(self, budget: SlackBudget, keys: Keys, channel: str) -> None:
        self._budget = budget
        self._keys = keys
        self._channel = channel

    def _buckets(self, method: str) -> list[Bucket]:
        return self._budget.buckets(self._keys, method, self._channel)

    async def stream(self) -> bool:
        """A new stream: its chat.startStream and, reserved now so it can always be closed, its
        chat.stopStream. False when there is no room: the message is then posted whole."""
        both = [*self._buckets("chat.startStream"), *self._buckets("chat.stopStream")]
        return await self._budget.try_take(*both) == 0

    async def now(self, method: str) -> float:
        """One call of `method` now: 0.0 when taken, else the seconds until it could be (nothing taken)."""
        return await self._budget.try_take(*self._buckets(method))

    async def reserve(self, method: str, calls: int) -> bool:
        """`calls` calls of `method` now, together (e.g. an agent session's `processing` and the `active`
        that must follow it); False when there is no room for all of them (nothing taken)."""
        return await self._budget.try_take(*self._buckets(method), calls=calls) == 0

    async def wait(self, method: str) -> None:
        """One call of `method`, waiting for room if need be."""
        await self._budget.take(*self._buckets(method))
