"""Dedupe -> queue -> one turn at a time per assistant thread, shared by every replica through Redis.

`submit` is what a listener calls: one atomic Lua script claims the event id and the (channel, ts) pair,
queues the turn and tries to take the thread's runner lock, in a single round trip. Whoever holds the lock
drains the thread's queue in order; a message that arrives while a turn runs waits in the queue, so OpenAI
never sees two responses at once on one conversation (`conversation_locked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import StoreUnavailable
from bot.keys import DEDUPE_TTL, PREFIX, RUNNER_LOCK_TTL, THREAD_TTL, Keys, ms
from bot.models import IncomingMessage, Turn, thread_ref
from bot.thread_store import ThreadStore

log = logging.getLogger(__name__)

T = TypeVar("T")


# KEYS: seen_event, seen_message, queue, thread, runner, alias
# ARGV: dedupe_ttl_ms, turn_json, now, runner_token, runner_ttl_ms, thread_ttl_ms, alias_target,
#       channel, user, require_known
# Returns -1 ignored (unknown thread), 0 duplicate, 1 queued, 2 queued and this caller owns the runner.
_SUBMIT = """
if ARGV[10] == '1' and redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('HSETNX', KEYS[4], 'registered_at', ARGV[3])
redis.call('HSETNX', KEYS[4], 'channel', ARGV[8])
redis.call('HSETNX', KEYS[4], 'user', ARGV[9])
redis.call('HSET', KEYS[4], 'last_turn_at', ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[6])
if ARGV[7] ~= '' then redis.call('SET', KEYS[6], ARGV[7], 'PX', ARGV[6]) end
if redis.call('SET', KEYS[5], ARGV[4], 'NX', 'PX', ARGV[5]) then return 2 end
return 1
"""

# KEYS: queue, runner. ARGV: token, ttl_ms. Pop the next turn while still owning the runner lock, or
# release the lock when the queue is empty; atomic, so a turn queued meanwhile is never stranded.
_NEXT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
local popped = redis.call('ZPOPMIN', KEYS[1])
if popped[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return popped[1]
end
redis.call('DEL', KEYS[2])
return false
"""

# KEYS: runner. ARGV: token, ttl_ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class Submitted(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


TurnHandler = Callable[[Turn], Awaitable[None]]


class Dispatcher:
    def __init__(
        self,
        redis: Redis,
        store: ThreadStore,
        handle_turn: TurnHandler,
        *,
        lock_ttl: timedelta = RUNNER_LOCK_TTL,
    ) -> None:
        self._redis = redis
        self._lock_ms = ms(lock_ttl)
        self._store = store
        self._handle_turn = handle_turn
        self._submit = redis.register_script(_SUBMIT)
        self._next = redis.register_script(_NEXT)
        self._extend = redis.register_script(_EXTEND)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, msg: IncomingMessage, *, require_known_thread: bool = False) -> Submitted:
        """Queue a user's message for an answer unless it was seen before. Fast: the listener awaits it."""
        keys = msg.workspace.keys
        thread = thread_ref(msg)
        if msg.is_dm and msg.thread_ts is not None:
            thread = await self._guard(self._store.resolve(keys, thread))
        turn = Turn(
            workspace=msg.workspace,
            thread=thread,
            channel=msg.channel,
            user=msg.user,
            text=msg.text,
            ts=msg.ts,
            reply_thread_ts=msg.reply_thread_ts,
            is_dm=msg.is_dm,
            received_at=time.time(),
            files=msg.files,
        )
        # Replies to a top-level DM land in a Slack thread under it; that thread continues the
        # user's own assistant thread.
        alias = f"c:{msg.channel}:{msg.ts}" if thread.startswith("u:") else None
        seen = [keys.seen_message(msg.channel, msg.ts)]
        if msg.event_id:
            seen.append(keys.seen_event(msg.event_id))
        return await self._enqueue(turn, seen=seen, alias=alias, require_known_thread=require_known_thread)

    async def claim(self, msg: IncomingMessage) -> bool:
        """Claim a message handled outside the queue (a command), with the same dedupe keys as submit."""
        keys = msg.workspace.keys
        seen = [keys.seen_message(msg.channel, msg.ts)]
        if msg.event_id:
            seen.append(keys.seen_event(msg.event_id))
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in seen:
                pipe.set(key, "1", nx=True, px=ms(DEDUPE_TTL))
            claimed = await self._guard(pipe.execute())
        return all(claimed)

    async def submit_reset(self, turn: Turn, *, request_id: str) -> Submitted:
        """Queue a reset behind the thread's pending turns. `request_id` (e.g. a trigger id) dedupes it."""
        return await self._enqueue(turn, seen=[turn.workspace.keys.seen_event(f"reset:{request_id}")])

    async def _enqueue(
        self, turn: Turn, *, seen: list[str], alias: str | None = None, require_known_thread: bool = False
    ) -> Submitted:
        keys, thread = turn.workspace.keys, turn.thread
        token = secrets.token_hex(8)
        result = await self._guard(
            self._submit(
                keys=[
                    seen[-1],
                    seen[0],
                    keys.queue(thread),
                    keys.thread(thread),
                    keys.runner(thread),
                    keys.alias(alias) if alias else keys.thread(thread),
                ],
                args=[
                    ms(DEDUPE_TTL),
                    # Slack may deliver a thread's events out of order: the queue is sorted by the
                    # message ts (same-score ZSET members sort by their bytes; ts strings sort in time).
                    f"{turn.ts}|{turn.model_dump_json()}",
                    f"{turn.received_at:.3f}",
                    token,
                    self._lock_ms,
                    ms(THREAD_TTL),
                    thread if alias else "",
                    turn.channel,
                    turn.user,
                    "1" if require_known_thread else "0",
                ],
            )
        )
        if result == -1:
            return Submitted.IGNORED
        if result == 0:
            log.info("duplicate %s %s ignored", turn.kind, turn.id)
            return Submitted.DUPLICATE
        if result == 2:
            self._spawn(keys, thread, token)
        return Submitted.QUEUED

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        try:
            return await call
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {type(exc).__name__}") from exc

    def _spawn(self, keys: Keys, thread: str, token: str) -> None:
        task = asyncio.create_task(self._drain(keys, thread, token), name=f"drain {thread}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, keys: Keys, thread: str, token: str) -> None:
        """Run this thread's queued turns in order while holding its runner lock."""
        heartbeat = asyncio.create_task(self._keep_lock(keys, thread, token))
        try:
            while True:
                raw = await self._next(
                    keys=[keys.queue(thread), keys.runner(thread)], args=[token, self._lock_ms]
                )
                if raw is None:
                    return
                turn = Turn.model_validate_json(raw.partition("|")[2])
                try:
                    await self._handle_turn(turn)
                except Exception:
                    # The turn handler tells the user itself; whatever escapes is a bug, logged, never fatal.
                    log.exception("turn %s failed unexpectedly", turn.id)
        except RedisError:
            log.exception("lost Redis while draining %s; the lock expires and the queue is kept", thread)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _keep_lock(self, keys: Keys, thread: str, token: str) -> None:
        interval = self._lock_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._extend(keys=[keys.runner(thread)], args=[token, self._lock_ms])
            except RedisError:
                log.warning("could not extend the runner lock of %s", thread)

    async def recover_forever(self, interval: float) -> None:
        """Pick up queues whose runner went away (a process that died): their lock has expired, so
        whoever takes it now answers the waiting turns."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.recover_once()
            except RedisError as exc:
                log.warning("recovery sweep skipped: %s", type(exc).__name__)

    async def recover_once(self) -> int:
        started = 0
        async for key in self._redis.scan_iter(match=f"{PREFIX}:*:queue:*", count=1000):
            parsed = Keys.parse_queue(str(key))
            if parsed is None:
                continue
            keys, thread = parsed
            token = secrets.token_hex(8)
            if await self._redis.set(keys.runner(thread), token, nx=True, px=self._lock_ms):
                log.info("recovering the queue of %s", thread)
                self._spawn(keys, thread, token)
                started += 1
        return started

    async def shutdown(self, grace_seconds: float) -> None:
        """Let in-flight turns finish (up to `grace_seconds`), then cancel what is left."""
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        log.info("shutdown: %d drains finished, %d cancelled", len(done), len(pending))
