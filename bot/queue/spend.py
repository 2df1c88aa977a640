"""Spend limits: token buckets in Redis, per user and per workspace, shared by every replica.

Everything that costs takes from the same two buckets: a message 1 token plus its files by size (taken by
the submit script in `bot.queue.dispatcher`, which embeds `BUCKETS_LUA` and also takes from the thread's
answer bucket); a slash command that acts on a thread, a message shortcut, a settings save or an App Home
button 1 (`SpendLimits.take`). A bucket holds one window's allowance and refills continuously; a take is
all or nothing across the buckets, and never asks more than a full bucket, so the dearest message can still
pass a full one (it empties it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import (
    SpendLimited,
    StoreUnavailable,
    TeamSpendLimited,
    ThreadCapped,
    ThreadPaused,
    UserSpendLimited,
)
from bot.keys import DEDUPE_TTL, Keys, ms
from bot.models import SharedFile
from bot.settings import Settings

MIB = 1024 * 1024

# spend_take({{key, cap, cost[, window_ms]}, ...}, window_ms): 0 when every bucket with a cap (> 0) held its
# cost (at most its cap) and gave it; else the index of the first bucket that was short, and nothing was
# taken. A bucket refills over its own window (the shared one unless it names one), is full again one
# window after a take, so it expires then (absent = full).
BUCKETS_LUA = """
local function spend_take(buckets, window_ms)
  local now_ms
  local left = {}
  for i, b in ipairs(buckets) do
    local cap = tonumber(b[2])
    local window = tonumber(b[4]) or window_ms
    if cap > 0 then
      if not now_ms then  -- the clock only when some bucket has a cap
        local t = redis.call('TIME')
        now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      local state = redis.call('HMGET', b[1], 'tokens', 'at')
      local tokens = tonumber(state[1]) or cap
      local at = tonumber(state[2]) or now_ms
      local level = math.min(cap, tokens + math.max(0, now_ms - at) * cap / window)
      local cost = math.min(tonumber(b[3]), cap)
      if level < cost then return i end
      left[i] = level - cost
    end
  end
  for i, b in ipairs(buckets) do
    if left[i] then
      redis.call('HSET', b[1], 'tokens', tostring(left[i]), 'at', tostring(now_ms))
      redis.call('PEXPIRE', b[1], tonumber(b[4]) or window_ms)
    end
  end
  return 0
end
"""

# KEYS: 1 user bucket, 2 team bucket, 3.. dedupe keys (a message carried out outside the queue: a command).
# ARGV: 1 user cap, 2 team cap, 3 cost, 4 window_ms, 5 dedupe_ttl_ms.
# Returns 0 duplicate, 1 taken, -2 user limit, -3 workspace limit. A refused message stays claimed, so a
# Slack retry of it is a duplicate (and is not told again).
_TAKE = (
    BUCKETS_LUA
    + """
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 3, #KEYS do redis.call('SET', KEYS[i], '1', 'PX', ARGV[5]) end
if tonumber(ARGV[3]) <= 0 then return 1 end
local short = spend_take({{KEYS[1], ARGV[1], ARGV[3]}, {KEYS[2], ARGV[2], ARGV[3]}}, tonumber(ARGV[4]))
if short == 1 then return -2 end
if short == 2 then return -3 end
return 1
"""
)


class Spent(StrEnum):
    TAKEN = "taken"
    DUPLICATE = "duplicate"
    USER_LIMITED = "user_limited"
    TEAM_LIMITED = "team_limited"
    # Only from the submit script: the thread had its answers for this window.
    THREAD_PAUSED = "thread_paused"
    # ... or had its answers for the day.
    THREAD_CAPPED = "thread_capped"


_REFUSALS: dict[str, type[SpendLimited]] = {
    Spent.USER_LIMITED: UserSpendLimited,
    Spent.TEAM_LIMITED: TeamSpendLimited,
    Spent.THREAD_PAUSED: ThreadPaused,
    Spent.THREAD_CAPPED: ThreadCapped,
}


def refusal_of(outcome: str, detail: str = "") -> SpendLimited | None:
    """The error (with its user message) for a refused take or submit (`Spent` / `Submitted` values share
    their names), or None when it was not refused."""
    kind = _REFUSALS.get(str(outcome))
    return kind(detail or str(outcome)) if kind is not None else None


class SpendLimits:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._take = redis.register_script(_TAKE)

    @property
    def window_ms(self) -> int:
        return max(1, int(self._settings.rate_limit_window_seconds * 1000))

    def caps(self, *, limited: bool = True) -> tuple[int, int, int]:
        """(user, workspace, thread answers) allowances per window; 0 = no limit."""
        s = self._settings
        if not limited:
            return 0, 0, 0
        return s.rate_limit_user_per_minute, s.rate_limit_team_per_minute, s.thread_answers_per_minute

    def thread_day_cap(self, *, limited: bool = True) -> int:
        """Answers one thread may get per day (THREAD_DAY_WINDOW); 0 = no limit."""
        return self._settings.thread_answers_per_day if limited else 0

    def message_cost(self, files: Sequence[SharedFile]) -> int:
        """1 for the answer, plus one per started RATE_LIMIT_MB_PER_TOKEN MB of the files it shares, all
        together. A file counts up to FILE_MAX_MB (a larger one is refused before any download); one of
        unknown size (a Slack Connect stub) counts as that much."""
        if self._settings.rate_limit_mb_per_token <= 0:
            return 1
        most = self._settings.file_max_bytes
        total = sum(most if f.size is None else min(max(f.size, 0), most) for f in files)
        return 1 + math.ceil(total / (self._settings.rate_limit_mb_per_token * MIB))

    async def take(self, keys: Keys, user: str, cost: int = 1, *, seen: Sequence[str] = ()) -> Spent:
        """Take `cost` tokens from the user's and the workspace's buckets (all or nothing), first claiming
        the `seen` dedupe keys when given. Raises StoreUnavailable."""
        user_cap, team_cap, _ = self.caps()
        script_keys = [keys.user_bucket(user), keys.team_bucket(), *seen]
        args = [user_cap, team_cap, cost, self.window_ms, ms(DEDUPE_TTL)]
        try:
            result = await self._take(keys=script_keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {type(exc).__name__}") from exc
        return {0: Spent.DUPLICATE, -2: Spent.USER_LIMITED, -3: Spent.TEAM_LIMITED}.get(
            int(result), Spent.TAKEN
        )

    async def first_notice(self, key: str) -> bool:
        """True the first time in a window for `key` (a person, a paused thread): tell them; else keep
        quiet. Without Redis, quiet too."""
        try:
            return bool(await self._redis.set(key, "1", nx=True, px=self.window_ms))
        except RedisError:
            return False
