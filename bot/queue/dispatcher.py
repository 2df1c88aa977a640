"""The durable turn queue: dedupe -> Redis Stream -> one turn at a time per assistant thread, on any replica.

Shape (all keys of one workspace share a Redis Cluster hash tag, so every script below is one-slot):

- `turns` (STREAM, consumer group `workers`): one entry per turn (a user message to answer, or a reset).
  An entry is acked, and deleted, only once its turn is done.
- `queue:<thread>` (ZSET): the index of one assistant thread's unfinished turns, `ts|entry id`, in Slack
  ts order.
- `runner:<thread>` (lock with a TTL, refreshed while held): the worker running that thread now.
- `turn:<channel>:<ts>` (HASH): the turn's progress record (see `bot.queue.progress`).

`submit` (the listener, before Slack's ack): one Lua script claims the event id AND the (channel, ts)
pair (Slack retries, and the app_mention/message twin), takes the message's cost from the spend-limit
buckets and one answer from the thread's (`bot.queue.spend`), XADDs the entry and indexes it under its
thread. With appendonly Redis, an acked message is on disk.

Workers (every replica, HTTP or Socket Mode) XREADGROUP new entries. For each, the worker tries the
thread's lock. With it, the worker *drains the thread*: it runs the index head (the oldest unfinished turn,
which may be an earlier entry than the one it read), then atomically marks it done, acks and deletes its
entry and drops it from the index, and goes on with the next head; the lock is released only by the script
that finds the index empty, so a turn queued meanwhile is never stranded. Without the lock, the worker
leaves the entry pending: the holder will run it in its turn, since it is in the index.

Invariant: every unfinished turn has a pending (delivered, unacked) stream entry. A worker that dies, or
is stopped, leaves its entries pending and its lock expiring; a sweep on every replica XAUTOCLAIMs entries
idle longer than the lock's TTL and offers them again: whoever takes the thread's lock drains it, the
interrupted turn first. So turns are delivered at least once and, per thread, one at a time in ts order;
the progress record makes running a turn again safe: a created response is resumed, not re-created, and
the Slack messages already posted are rewritten, not posted again.

Takeover: a worker that stalls past its lock's TTL (a long GC, SIGSTOP, a starved CPU) loses the thread
to whoever reclaims it. Every progress write is fenced by the lock token, whole-message Slack writes check
that the turn is neither done nor held by another worker, and the heartbeat cancels a drain whose lock
another worker holds; so the stale worker stops without overwriting the new owner's answer.

Known limits: a worker killed between OpenAI accepting `responses.create` and the response id reaching
Redis (milliseconds) leaves a response nobody resumes, and the retried turn creates another one; killed
between Slack creating a message and its ts reaching Redis, it leaves that partial message behind.

On a Redis Cluster every script above stays in one slot (the workspace's hash tag); the one global key,
`TEAMS_KEY`, is only ever used alone; the read of new entries is split per slot (`bot.queue.streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.errors import StoreUnavailable, TurnInterrupted
from bot.keys import (
    DEDUPE_TTL,
    RECENT_THREADS_KEPT,
    TEAMS_KEY,
    THREAD_DAY_WINDOW,
    THREAD_TTL,
    TURN_GROUP,
    TURN_RECORD_TTL,
    Keys,
    ms,
)
from bot.models import IncomingMessage, Turn, thread_ref
from bot.ops.logs import log_context
from bot.ops.metrics import Metrics
from bot.queue.batching import ScriptBatcher
from bot.queue.connection import is_cluster, patiently, raise_if_cancelling
from bot.queue.progress import ProgressScripts, TurnProgress
from bot.queue.spend import BUCKETS_LUA, SpendLimits, Spent
from bot.queue.streams import Batch, TurnStreams
from bot.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# KEYS: 1 seen_event, 2 seen_message, 3 thread, 4 alias, 5 stream, 6 thread index, 7 user bucket,
#       8 team bucket, 9 the user's recent threads, 10 the thread's answer bucket, 11 its day bucket
# ARGV: 1 dedupe_ttl_ms, 2 turn_json, 3 now, 4 thread_ttl_ms, 5 alias_target, 6 channel, 7 user,
#       8 require_known, 9 thread ref, 10 ts, 11 group, 12 user limit, 13 team limit, 14 spend window_ms,
#       15 recent threads kept (0: leave them alone), 16 cost (tokens), 17 thread answers limit,
#       18 thread answers per day, 19 a day in ms
# Returns -1 ignored (unknown thread), 0 duplicate, -2 user limit, -3 workspace limit, -4 thread paused,
# -5 thread capped for the day, 1 queued. A refused message stays claimed: a Slack retry of it is a
# duplicate (and is not told again).
_SUBMIT = (
    BUCKETS_LUA
    + """
if ARGV[8] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
-- Claimed with SET NX (one command a key). The message's twin delivery under a new event id leaves that id
-- claimed too: harmless, a retry of it is a duplicate all the same.
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if KEYS[2] ~= KEYS[1] and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end

-- Spend limits (bot/queue/spend.py): the user's and the workspace's buckets pay the message's cost, the
-- thread's answer bucket one answer; all or nothing.
local short = spend_take(
  {{KEYS[7], ARGV[12], ARGV[16]}, {KEYS[8], ARGV[13], ARGV[16]}, {KEYS[10], ARGV[17], 1},
   {KEYS[11], ARGV[18], 1, ARGV[19]}},
  tonumber(ARGV[14]))
if short > 0 then return -1 - short end

if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[5], ARGV[11], '0', 'MKSTREAM')
end
local id = redis.call('XADD', KEYS[5], '*', 'thread', ARGV[9], 'turn', ARGV[2])
redis.call('ZADD', KEYS[6], 0, ARGV[10] .. '|' .. id)
-- registered_at, channel and user are written once, together, by the thread's first turn.
if redis.call('HSETNX', KEYS[3], 'registered_at', ARGV[3]) == 1 then
  redis.call('HSET', KEYS[3], 'channel', ARGV[6], 'user', ARGV[7], 'last_turn_at', ARGV[3])
else
  redis.call('HSET', KEYS[3], 'last_turn_at', ARGV[3])
end
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if ARGV[5] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[4]) end
-- The App Home's "recent threads", in the same round trip.
local kept = tonumber(ARGV[15])
if kept > 0 then
  redis.call('ZADD', KEYS[9], ARGV[3], ARGV[9])
  redis.call('ZREMRANGEBYRANK', KEYS[9], 0, -kept - 1)
  redis.call('PEXPIRE', KEYS[9], ARGV[4])
end
return 1
"""
)

# KEYS: index, runner, stream. ARGV: token, ttl_ms.
# The thread's next turn while this worker holds its lock (re-taken if it expired and nobody took it):
# {'turn', index member, entry id, turn json}; {'empty'} after releasing the lock; {'lost'}.
_NEXT = """
local holder = redis.call('GET', KEYS[2])
local fresh = false
if holder ~= ARGV[1] then
  if holder then return {'lost'} end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  fresh = true
end
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)
  if not head[1] then
    redis.call('DEL', KEYS[2])
    return {'empty'}
  end
  local id = string.match(head[1], '|(.+)$')
  local entry = id and redis.call('XRANGE', KEYS[3], id, id) or {}
  if entry[1] then
    local fields = entry[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'turn' then
        if not fresh then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
        return {'turn', head[1], id, fields[i + 1]}
      end
    end
  end
  redis.call('ZREM', KEYS[1], head[1])
end
"""

# KEYS: index, runner, stream, record. ARGV: token, ttl_ms, member, entry id, group, record_ttl_ms.
# A turn is done: all of it at once, so a crash leaves it either fully pending or fully done; then, in the
# same round trip, the thread's next turn as `_NEXT` gives it.
_FINISH_NEXT = (
    """
redis.call('ZREM', KEYS[1], ARGV[3])
redis.call('XACK', KEYS[3], ARGV[5], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], 'done', '1')
redis.call('PEXPIRE', KEYS[4], ARGV[6])
"""
    + _NEXT
)

# KEYS: runner. ARGV: token, ttl_ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: runner. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

READ_BLOCK_MS = 1000
# Turns one read takes at most. A worker that took a whole burst at once would run it on its one core while
# the other workers (cores) idle; in reads of this size the workers share it, a busy worker (its event loop
# slower to come back for more) taking less.
READ_BATCH = 32
RECLAIM_BATCH = 100
BACKOFF_MAX_SECONDS = 5.0


class Submitted(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    # The same values as `bot.queue.spend.Spent`'s refusals (`refusal_of` reads either).
    USER_LIMITED = "user_limited"
    TEAM_LIMITED = "team_limited"
    THREAD_PAUSED = "thread_paused"
    THREAD_CAPPED = "thread_capped"


TurnHandler = Callable[[Turn, TurnProgress], Awaitable[None]]


class ThreadResolver(Protocol):
    """The thread map's alias lookup (`bot.threads.store.ThreadStore`), the one read a submit needs."""

    async def resolve(self, keys: Keys, thread: str) -> str: ...


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Dispatcher:
    def __init__(
        self,
        redis: Redis,
        store: ThreadResolver,
        handle_turn: TurnHandler,
        *,
        settings: Settings,
        limits: SpendLimits,
        metrics: Metrics | None = None,
    ) -> None:
        self._redis = redis
        self._metrics = metrics or Metrics()
        self._store = store
        self._handle_turn = handle_turn
        self._settings = settings
        self._limits = limits
        self._lock_ms = int(settings.runner_lock_seconds * 1000)
        self._consumer = _consumer_name()
        self._submits = ScriptBatcher(redis, _SUBMIT, TEAMS_KEY)
        self._submit = redis.register_script(_SUBMIT)  # on a cluster (no pipelined scripts there)
        self._next = redis.register_script(_NEXT)
        self._finish_next = redis.register_script(_FINISH_NEXT)
        self._extend = redis.register_script(_EXTEND)
        self._release = redis.register_script(_RELEASE)
        self._progress_scripts = ProgressScripts(redis)
        self._streams = TurnStreams(redis, TURN_GROUP, self._consumer, block_ms=READ_BLOCK_MS)
        self._cluster = is_cluster(redis)
        # One drain task per assistant thread this process runs, by (workspace namespace, thread).
        self._drains: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Threads with an entry offered while their drain was registered here (see `_drain`).
        self._offered: set[tuple[str, str]] = set()
        self._slot_freed = asyncio.Event()
        self._released: set[asyncio.Future[Any]] = set()  # locks given back after a cancelled offer
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False

    # ---- the listener side ----------------------------------------------------------------------

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
            external=msg.external,
            user_team=msg.user_team,
        )
        # Replies to a top-level DM land in a Slack thread under it; that thread continues the
        # user's own assistant thread.
        alias = f"c:{msg.channel}:{msg.ts}" if thread.startswith("u:") else None
        seen = [keys.seen_message(msg.channel, msg.ts)]
        if msg.event_id:
            seen.append(keys.seen_event(msg.event_id))
        return await self._enqueue(
            turn,
            seen=seen,
            alias=alias,
            require_known_thread=require_known_thread,
            limited=turn.kind == "message",
            recent=True,
            cost=self._limits.message_cost(msg.files),
        )

    async def claim(self, msg: IncomingMessage, *, cost: int = 0) -> Spent:
        """Claim a message handled outside the queue (a command), with the same dedupe keys as submit, and
        take `cost` tokens from the spend limits (nothing when it is refused). Raises StoreUnavailable."""
        keys = msg.workspace.keys
        seen = [keys.seen_message(msg.channel, msg.ts)]
        if msg.event_id:
            seen.append(keys.seen_event(msg.event_id))
        return await self._limits.take(keys, msg.user, cost, seen=seen)

    async def submit_reset(self, turn: Turn, *, request_id: str) -> Submitted:
        """Queue a reset behind the thread's pending turns. `request_id` (e.g. a trigger id) dedupes it."""
        return await self._enqueue(turn, seen=[turn.workspace.keys.seen_event(f"reset:{request_id}")])

    async def _enqueue(
        self,
        turn: Turn,
        *,
        seen: list[str],
        alias: str | None = None,
        require_known_thread: bool = False,
        limited: bool = False,
        recent: bool = False,
        cost: int = 1,
    ) -> Submitted:
        keys, thread = turn.workspace.keys, turn.thread
        user_cap, team_cap, thread_cap = self._limits.caps(limited=limited)
        script_keys = [
            seen[-1],
            seen[0],
            keys.thread(thread),
            keys.alias(alias) if alias else keys.thread(thread),
            keys.turns(),
            keys.queue(thread),
            keys.user_bucket(turn.user),
            keys.team_bucket(),
            keys.user_threads(turn.user),
            keys.thread_answers(thread),
            keys.thread_answers_day(thread),
        ]
        args = [
            ms(DEDUPE_TTL),
            turn.model_dump_json(),
            f"{turn.received_at:.3f}",
            ms(THREAD_TTL),
            thread if alias else "",
            turn.channel,
            turn.user,
            "1" if require_known_thread else "0",
            thread,
            # Slack may deliver a thread's events out of order: the index is sorted by the
            # message ts (same-score ZSET members sort by their bytes; ts strings sort in time).
            turn.ts,
            TURN_GROUP,
            user_cap,
            team_cap,
            self._limits.window_ms,
            RECENT_THREADS_KEPT if recent else 0,
            cost,
            thread_cap,
            self._limits.thread_day_cap(limited=limited),
            ms(THREAD_DAY_WINDOW),
        ]
        result = await self._guard(self._submit_once(script_keys, args, keys.registry_member))
        submitted = _submitted(result)
        self._metrics.submitted(submitted)
        if result == -1:
            return Submitted.IGNORED
        if result == 0:
            log.info("duplicate %s %s ignored", turn.kind, turn.id)
            return Submitted.DUPLICATE
        refused = {
            -2: Submitted.USER_LIMITED,
            -3: Submitted.TEAM_LIMITED,
            -4: Submitted.THREAD_PAUSED,
            -5: Submitted.THREAD_CAPPED,
        }
        if result in refused:
            log.info("%s %s (cost %d) refused: %s", turn.kind, turn.id, cost, refused[result])
            return refused[result]
        return Submitted.QUEUED

    async def _submit_once(self, script_keys: list[str], args: list[Any], member: str) -> Any:
        """The submit script and the workspace's registration: on one server, pipelined with the other
        submits of this moment (`bot.queue.batching`), so a burst of requests costs a few round trips, not
        one each."""
        if self._cluster:
            # redis-py's cluster pipelines refuse EVALSHA, and the two keys live in different slots: both at
            # once, each to its node. (A worker that sees the workspace before its stream exists creates
            # the stream and group itself, on NOGROUP.)
            result, _ = await asyncio.gather(
                self._submit(keys=script_keys, args=args), self._redis.sadd(TEAMS_KEY, member)
            )
            return result
        return await self._submits.run(script_keys, args, member)

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        try:
            return await call
        except RedisError as exc:
            raise StoreUnavailable(f"Redis: {type(exc).__name__}") from exc

    # ---- the worker side ------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading turns and the sweep that reclaims turns of workers that went away."""
        self._background = [
            asyncio.create_task(self._read_forever(), name="turn reader"),
            asyncio.create_task(self.recover_forever(self._settings.recovery_interval_seconds), name="sweep"),
        ]

    async def _workspaces(self) -> list[Keys]:
        members = await self._redis.smembers(TEAMS_KEY)
        return [Keys.from_registry_member(str(m)) for m in sorted(members)]

    async def _ensure_groups(self, workspaces: list[Keys]) -> None:
        for keys in workspaces:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists, as it should
                await self._redis.xgroup_create(keys.turns(), TURN_GROUP, id="0", mkstream=True)

    async def _read_forever(self) -> None:
        backoff = 0.0
        while not self._stopping:
            free = self._settings.worker_concurrency - len(self._drains)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                workspaces = await self._workspaces()
                if not workspaces:
                    await asyncio.sleep(READ_BLOCK_MS / 1000)
                    continue
                by_stream = {keys.turns(): keys for keys in workspaces}
                # XREADGROUP's COUNT is per stream: the batch is shared out over the workspaces' streams.
                count = max(1, min(free, READ_BATCH) // len(by_stream))
                try:
                    batches = await self._streams.read(list(by_stream), count)
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    await self._ensure_groups(workspaces)
                    continue
                await self._offer_all(by_stream, batches)
                backoff = 0.0
            except RedisError as exc:
                raise_if_cancelling()
                backoff = min(BACKOFF_MAX_SECONDS, backoff * 2 or 0.25)
                log.warning(
                    "turn reader: Redis unavailable (%s); retrying in %.1fs", type(exc).__name__, backoff
                )
                await asyncio.sleep(backoff)

    async def recover_forever(self, interval: float) -> None:
        """Every `interval`, reclaim turns whose worker went silent (died, or was stopped)."""
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.recover_once()
            except RedisError as exc:
                raise_if_cancelling()
                log.warning("recovery sweep skipped: %s", type(exc).__name__)

    async def recover_once(self) -> int:
        """XAUTOCLAIM every entry idle longer than the lock TTL and offer it; returns drains started."""
        started = 0
        for keys in await self._workspaces():
            cursor = "0-0"
            for _ in range(100):  # bounded: 100 batches of RECLAIM_BATCH per workspace and sweep
                try:
                    reply = await self._redis.xautoclaim(
                        keys.turns(), TURN_GROUP, self._consumer, self._lock_ms, cursor, count=RECLAIM_BATCH
                    )
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    await self._ensure_groups([keys])
                    break
                cursor, entries = str(reply[0]), reply[1]
                for entry_id, fields in entries:
                    if entry_id is None or fields is None:
                        continue  # deleted under us (Redis 6.2 still lists it): nothing to run
                    if self._stopping:
                        return 0
                    if await self._offer(keys, str(entry_id), fields):
                        log.info("reclaimed turn entry %s: running its thread here", entry_id)
                        started += 1
                if cursor == "0-0":
                    break
        return started

    async def _offer_all(self, by_stream: dict[str, Keys], batches: list[Batch]) -> None:
        """Offer what one read delivered: the threads at once (their locks and heads are taken in one
        pipeline, not one round trip after another), each thread's entries in their order."""
        by_thread: dict[tuple[str, str], list[tuple[Keys, str, dict[Any, Any]]]] = {}
        for stream, entries in batches:
            keys = by_stream.get(stream)
            if keys is None:  # a workspace gone from TEAMS_KEY mid-read
                continue
            for entry_id, fields in entries:
                thread = str(fields.get("thread") or "")
                by_thread.setdefault((keys.ns, thread), []).append((keys, str(entry_id), fields))

        async def offer_in_order(entries: list[tuple[Keys, str, dict[Any, Any]]]) -> None:
            for keys, entry_id, fields in entries:
                await self._offer(keys, entry_id, fields)

        outcomes = await asyncio.gather(
            *(offer_in_order(entries) for entries in by_thread.values()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # Redis failed: the reader backs off (what was not taken stays pending)

    async def _offer(self, keys: Keys, entry_id: str, fields: dict[Any, Any]) -> bool:
        """A delivered entry: drain its thread if nobody does (True), else leave it pending for the
        lock holder, who runs it in its turn since it is in the thread's index."""
        thread = str(fields.get("thread") or "")
        if not thread or self._stopping:
            return False
        if (keys.ns, thread) in self._drains:
            self._offered.add((keys.ns, thread))
            return False  # this process is draining the thread already
        token = secrets.token_hex(8)
        # Taking the lock and reading the thread's head are one script: one round trip fewer per drain.
        taking = asyncio.ensure_future(self._next_head(keys, thread, token))
        try:
            head = await asyncio.shield(taking)
        except asyncio.CancelledError:
            # Shut down while the script was on its way: a lock it takes has no drain to hold it, so it is
            # given back (else the thread would wait the lock's TTL on every replica).
            taking.add_done_callback(lambda done: self._give_back(keys, thread, token, done))
            raise
        if head[0] != "turn":
            return False  # another worker holds the thread ('lost'), or nothing is left ('empty')
        task = asyncio.create_task(self._drain(keys, thread, token, head), name=f"drain {thread}")
        self._drains[(keys.ns, thread)] = task
        task.add_done_callback(lambda done: self._drain_done(keys.ns, thread, done))
        return True

    def _give_back(self, keys: Keys, thread: str, token: str, taking: asyncio.Future[list[Any]]) -> None:
        if taking.cancelled() or taking.exception() is not None or taking.result()[0] != "turn":
            return
        release = asyncio.ensure_future(self._release(keys=[keys.runner(thread)], args=[token]))
        self._released.add(release)
        release.add_done_callback(self._released.discard)
        release.add_done_callback(lambda done: done.cancelled() or done.exception())  # best effort

    def _drain_done(self, ns: str, thread: str, task: asyncio.Task[None]) -> None:
        if self._drains.get((ns, thread)) is task:  # not a newer drain of the thread
            del self._drains[(ns, thread)]
            self._offered.discard((ns, thread))
        self._slot_freed.set()

    async def _next_head(self, keys: Keys, thread: str, token: str) -> list[Any]:
        head: list[Any] = await self._next(
            keys=[keys.queue(thread), keys.runner(thread), keys.turns()], args=[token, self._lock_ms]
        )
        return head

    async def _drain(self, keys: Keys, thread: str, token: str, first: list[Any]) -> None:
        """Run this thread's unfinished turns in order while holding its runner lock, from `first` (the
        head read when the lock was taken)."""
        drain = asyncio.current_task()
        assert drain is not None
        ended = asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_lock(keys, thread, token, drain, ended))
        release = True
        head: list[Any] | None = first
        try:
            while not self._stopping:
                if head is None:
                    self._offered.discard((keys.ns, thread))
                    head = await self._next_head(keys, thread, token)
                if head[0] == "empty":
                    if (keys.ns, thread) in self._offered:
                        # Read while the script ran: it may have been queued after the script found the
                        # index empty and released the lock. Look again (the script re-takes a free lock).
                        head = None
                        continue
                    # Unregistered before any await: an entry read from now on starts a drain of its own.
                    self._drains.pop((keys.ns, thread), None)
                    self._slot_freed.set()
                    release = False  # the script released it
                    return
                if head[0] == "lost":
                    log.warning("lost the lock of %s to another worker", thread)
                    release = False
                    return
                _, member, entry_id, raw = (str(x) for x in head)
                head = None
                turn = Turn.model_validate_json(raw)
                if not await self._run(keys, thread, token, turn):
                    return  # interrupted: the turn stays pending and is reclaimed later
                # Done, and the next head, in one round trip (safe to send again: both halves are).
                self._offered.discard((keys.ns, thread))
                finish_keys = [keys.queue(thread), keys.runner(thread), keys.turns(), keys.turn(turn.id)]
                finish_args: list[str | int] = [token, self._lock_ms, member, entry_id, TURN_GROUP]
                finish_args.append(ms(TURN_RECORD_TTL))
                finish = functools.partial(self._finish_next, keys=finish_keys, args=finish_args)
                head = await patiently(finish)
        except RedisError as exc:
            log.warning("lost Redis while running %s (%s); its turns stay queued", thread, type(exc).__name__)
        finally:
            ended.set()
            heartbeat.cancel()
            # Bounded: a cancellation that lands together with a Redis timeout can be absorbed by it.
            await asyncio.wait({heartbeat}, timeout=1)
            if release:
                # Stopping, interrupted or cancelled: hand the thread back at once (its pending entries are
                # reclaimed by any replica once idle).
                with contextlib.suppress(RedisError, asyncio.CancelledError):
                    await asyncio.wait_for(self._release(keys=[keys.runner(thread)], args=[token]), 2)
            log.debug("drain of %s ended", thread)

    async def _run(self, keys: Keys, thread: str, token: str, turn: Turn) -> bool:
        """Run one turn; False when it was interrupted and must stay queued."""
        progress = TurnProgress(self._progress_scripts, keys, thread, turn.id, token, self._lock_ms)
        with log_context(team=keys.team_id, channel=turn.channel, thread=thread, turn=turn.id):
            return await self._run_logged(turn, progress)

    async def _run_logged(self, turn: Turn, progress: TurnProgress) -> bool:
        try:
            record = await progress.begin()
            if record.done:
                log.info("turn %s was already done", turn.id)
                return True
            await self._handle_turn(turn, progress)
        except TurnInterrupted as exc:
            log.warning("turn %s interrupted (%s); it stays queued", turn.id, exc)
            return False
        except Exception:
            # The turn handler tells the user itself; whatever escapes is a bug, logged, never fatal.
            log.exception("turn %s failed unexpectedly", turn.id)
        return True

    async def _keep_lock(
        self, keys: Keys, thread: str, token: str, drain: asyncio.Task[Any], ended: asyncio.Event
    ) -> None:
        """Refresh the lock; if it was lost (this process stalled past its TTL and another worker took the
        thread over), stop the drain at once so it no longer writes to Slack."""
        interval = self._lock_ms / 3000
        while not ended.is_set():
            await asyncio.sleep(interval)
            try:
                extended = await self._extend(keys=[keys.runner(thread)], args=[token, self._lock_ms])
            except RedisError:
                raise_if_cancelling()
                log.warning("could not extend the runner lock of %s", thread)
                continue
            if not extended and await self._redis.exists(keys.runner(thread)):
                log.warning("lost the lock of %s to another worker; stopping", thread)
                drain.cancel()
                return

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop taking turns; let running ones finish for up to `grace_seconds`, then hand the rest back
        (cancelled drains release their locks; their unacked entries are reclaimed by another replica)."""
        self._stopping = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._streams.close()
        drains = set(self._drains.values())
        if not drains:
            return
        log.info("shutdown: waiting for %s", ", ".join(sorted(t.get_name() for t in drains)))
        done, pending = await asyncio.wait(drains, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        log.info("shutdown: %d threads finished, %d handed back to the queue", len(done), len(pending))


_SUBMIT_RESULTS = {
    -1: Submitted.IGNORED,
    0: Submitted.DUPLICATE,
    1: Submitted.QUEUED,
    -2: Submitted.USER_LIMITED,
    -3: Submitted.TEAM_LIMITED,
    -4: Submitted.THREAD_PAUSED,
    -5: Submitted.THREAD_CAPPED,
}


def _submitted(result: Any) -> str:
    """The submit script's answer as a metric label."""
    return str(_SUBMIT_RESULTS.get(int(result), "unknown"))
