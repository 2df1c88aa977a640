"""A turn's progress record in Redis: what a retry of the turn must not do twice.

One HASH per turn (`Keys.turn`), written as the turn goes:

- `attempts`: how many times a worker started the turn (a turn that keeps failing is given up);
- `response_id`: the OpenAI responses of the turn (one per tool-loop round, comma-separated), each
  recorded as soon as it is created. A retried turn shows the earlier rounds' text again and *resumes*
  the last response (`responses.retrieve`) instead of creating another, so the user's message is never
  added to the conversation twice;
- `message_ts`: the Slack messages the answer was written into. A retried turn rewrites those messages
  (`chat.update`) instead of posting new ones, so the user never sees two answers;
- `stopped`: the user pressed the agent session's stop button (set by whichever front got the event, or
  by the worker when Slack refused the stream as `stopped_by_user`): a terminal state, a retry only ends
  the message;
- `done`: set by the dispatcher, atomically with acking the turn's stream entry.

Writes wait for Redis through a short outage (`patiently`): while Redis is down nobody else can take the
turn over, and giving up right after posting to Slack would make a retry post the answer again. Every
write is fenced by the thread's runner lock: a worker that lost its lock (it stalled past the lock's
TTL and another worker took the thread over) cannot write, and stops the turn (`TurnInterrupted`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import TurnInterrupted
from bot.keys import THREAD_TTL, TURN_RECORD_TTL, Keys, ms
from bot.queue.connection import patiently

# Every script below starts here. KEYS[1]: the thread's runner lock; ARGV[1], ARGV[2]: this worker's token
# and the lock's TTL in ms. Goes on only while this worker holds the lock (re-taking it if it expired and
# nobody took it); returns false (None in Python) when another worker holds it.
_FENCE = """
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then
  if holder then return false end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
"""

# KEYS: runner lock, record. ARGV: token, lock_ttl_ms, record_ttl_ms, field, value, [field, value...].
# Returns 1 when written.
_FENCED_HSET = (
    _FENCE
    + """
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: runner lock, record. ARGV: token, lock_ttl_ms, record_ttl_ms.
# Counts one more attempt and returns the record (flat field/value list).
_BEGIN = (
    _FENCE
    + """
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return redis.call('HGETALL', KEYS[2])
"""
)


# KEYS: runner lock, thread hash. ARGV: token, lock_ttl_ms, conversation_id, now, thread_ttl_ms.
# Binds the conversation unless one is bound already (then returns that one).
_BIND = (
    _FENCE
    + """
local bound = redis.call('HGET', KEYS[2], 'conversation_id')
if bound then return bound end
redis.call('HSET', KEYS[2], 'conversation_id', ARGV[3], 'created_at', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return ARGV[3]
"""
)


@dataclass
class TurnRecord:
    attempts: int = 0
    response_ids: list[str] = field(default_factory=list)
    message_ts: list[str] = field(default_factory=list)
    done: bool = False
    stopped: bool = False

    @classmethod
    def parse(cls, flat: list[str]) -> TurnRecord:
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return cls(
            attempts=int(raw.get("attempts", "0")),
            response_ids=[r for r in raw.get("response_id", "").split(",") if r],
            message_ts=[ts for ts in raw.get("message_ts", "").split(",") if ts],
            done=raw.get("done") == "1",
            stopped=raw.get("stopped") == "1",
        )


class ProgressScripts:
    """The record's scripts, registered once per Redis client rather than once per turn."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.fenced_hset = redis.register_script(_FENCED_HSET)
        self.begin = redis.register_script(_BEGIN)
        self.bind = redis.register_script(_BIND)


class TurnProgress:
    """The record of one turn being run by the worker holding `token` on the thread's lock."""

    def __init__(
        self, scripts: ProgressScripts, keys: Keys, thread: str, turn_id: str, token: str, lock_ms: int
    ) -> None:
        self._redis = scripts.redis
        self._lock_key = keys.runner(thread)
        self._thread_key = keys.thread(thread)
        self._key = keys.turn(turn_id)
        self._token = token
        self._lock_ms = lock_ms
        self._fenced_hset = scripts.fenced_hset
        self._begin = scripts.begin
        self._bind = scripts.bind
        self.record = TurnRecord()

    async def begin(self) -> TurnRecord:
        """Count an attempt and load what earlier attempts did."""
        try:
            flat = await patiently(
                lambda: self._begin(
                    keys=[self._lock_key, self._key], args=[self._token, self._lock_ms, ms(TURN_RECORD_TTL)]
                )
            )
        except RedisError as exc:
            raise TurnInterrupted(f"progress record unavailable: {type(exc).__name__}") from exc
        if flat is None:
            raise TurnInterrupted("another worker holds the thread")
        self.record = TurnRecord.parse([str(x) for x in flat])
        return self.record

    async def bind_conversation(self, conversation_id: str) -> str:
        """Map the thread to a conversation this turn created, unless one is mapped already: the
        conversation to use."""
        try:
            bound = await patiently(
                lambda: self._bind(
                    keys=[self._lock_key, self._thread_key],
                    args=[self._token, self._lock_ms, conversation_id, f"{time.time():.3f}", ms(THREAD_TTL)],
                )
            )
        except RedisError as exc:
            raise TurnInterrupted(f"conversation not bound: {type(exc).__name__}") from exc
        if bound is None:
            raise TurnInterrupted("another worker took the thread over")
        return str(bound)

    async def check_current(self) -> None:
        """Raise TurnInterrupted when this worker's view is stale: the turn was finished by another
        worker, or another worker holds the thread. Guards writes that would overwrite an answer."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self._lock_key)
                pipe.hget(self._key, "done")
                holder, done = await pipe.execute()
        except RedisError as exc:
            raise TurnInterrupted(f"progress record unavailable: {type(exc).__name__}") from exc
        if done == "1" or (holder is not None and holder != self._token):
            raise TurnInterrupted("another worker took the turn over")

    async def save_response(self, response_id: str) -> None:
        if response_id in self.record.response_ids:
            return
        await self._save("response_id", ",".join([*self.record.response_ids, response_id]))
        self.record.response_ids.append(response_id)

    async def forget_responses(self) -> None:
        """The turn's responses are gone at OpenAI: the next attempt creates a new one."""
        await self._save("response_id", "")
        self.record.response_ids = []

    async def add_message(self, ts: str) -> None:
        if ts in self.record.message_ts:
            return
        await self._save("message_ts", ",".join([*self.record.message_ts, ts]))
        self.record.message_ts.append(ts)

    async def mark_stopped(self) -> None:
        """Record the stop: whatever happens next, a retry of this turn does not run it again."""
        await self._save("stopped", "1")
        self.record.stopped = True

    async def _save(self, name: str, value: str) -> None:
        try:
            written = await patiently(
                lambda: self._fenced_hset(
                    keys=[self._lock_key, self._key],
                    args=[self._token, self._lock_ms, ms(TURN_RECORD_TTL), name, value],
                )
            )
        except RedisError as exc:
            raise TurnInterrupted(f"progress not recorded: {type(exc).__name__}") from exc
        if not written:
            raise TurnInterrupted("another worker took the thread over")
