"""The agent session's stop button across processes: the `agent_session_stopped` event reaches a front,
the turn runs on a worker (maybe another process).

The worker running a turn names it in the Slack thread's `session_turn` key while it runs. A stop reads
that key and marks that turn's progress record `stopped` (unless it is done): so a stop only ever hits the
turn that was running when the button was pressed, never a later one, and it is durable (a worker that dies
right after is retried, sees `stopped`, and only ends the message). The same script adds the turn to its
workspace's `stopping` set: each worker process reads that set once every `STOP_POLL_SECONDS` for all the
turns it runs in the workspace (`StopWatch`), and cancels the answer of a turn found there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import AnswerStopped, StoreUnavailable
from bot.keys import SESSION_TURN_TTL, STOPPING_TTL, Keys, ms
from bot.models import Workspace

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a worker looks for stops: the button's latency, at one ZRANGE per workspace with turns running.
STOP_POLL_SECONDS = 0.5

# KEYS: the turn's progress record, the workspace's stopping set. ARGV: turn id, how long a mark is kept
# (ms). Marks the turn stopped unless it is done (or gone), and names it in the set its worker reads (a ZSET
# scored by time: marks older than that are dropped here, so the set holds only the last hour's stops).
# 1 when marked.
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'done') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'stopped', '1')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: session turn. ARGV: turn id. Removes it only if it still names this turn.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Stops:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.watch = StopWatch(redis)  # the worker's side: this process's running turns
        self._mark = redis.register_script(_MARK)
        self._release = redis.register_script(_RELEASE)

    # ---- the front: the stop button was pressed ----------------------------------------------------

    async def request(self, workspace: Workspace, channel: str, thread_ts: str) -> bool:
        """Stop the turn running in this Slack thread, if any: True when one was marked."""
        keys = workspace.keys
        try:
            turn_id = await self._redis.get(keys.session_turn(channel, thread_ts))
            if turn_id is None:
                log.info("stop in %s:%s: no turn running there", channel, thread_ts)
                return False
            marked = bool(
                await self._mark(
                    keys=[keys.turn(str(turn_id)), keys.stopping()], args=[str(turn_id), ms(STOPPING_TTL)]
                )
            )
        except RedisError as exc:
            raise StoreUnavailable(f"stop not recorded: {type(exc).__name__}") from exc
        log.info("stop in %s:%s: turn %s %s", channel, thread_ts, turn_id, "marked" if marked else "done")
        return marked

    # ---- the worker: a turn runs in a Slack thread ---------------------------------------------------

    async def running(self, keys: Keys, channel: str, thread_ts: str, turn_id: str) -> None:
        await self._redis.set(keys.session_turn(channel, thread_ts), turn_id, px=ms(SESSION_TURN_TTL))

    async def ended(self, keys: Keys, channel: str, thread_ts: str, turn_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self._release(keys=[keys.session_turn(channel, thread_ts)], args=[turn_id])


class StopWatch:
    """The stops of every turn this process runs, looked for together: one pipelined round trip every
    `interval` seconds reads each workspace's `stopping` set (one command per workspace, not one per
    turn); a turn found there has its event set. Polls only while some turn is watched."""

    def __init__(self, redis: Redis, interval: float = STOP_POLL_SECONDS) -> None:
        self._redis = redis
        self._interval = interval
        self._watched: dict[str, dict[str, asyncio.Event]] = {}  # stopping set -> turn id -> event
        self._poller: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watching(self, keys: Keys, turn_id: str) -> Iterator[asyncio.Event]:
        """An event set once a stop names this turn, while the block runs."""
        event = asyncio.Event()
        turns = self._watched.setdefault(keys.stopping(), {})
        turns[turn_id] = event
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="stop watch")
        try:
            yield event
        finally:
            if turns.get(turn_id) is event:
                del turns[turn_id]
            if not turns and self._watched.get(keys.stopping()) is turns:
                del self._watched[keys.stopping()]

    async def _poll(self) -> None:
        while self._watched:
            await asyncio.sleep(self._interval)
            sets = list(self._watched)
            if not sets:
                return
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in sets:
                        pipe.zrange(key, 0, -1)
                    found = await pipe.execute()
            except Exception as exc:  # a blip reads as "no stop": the next poll asks again
                log.debug("stop watch: %s", type(exc).__name__)
                continue
            for key, members in zip(sets, found, strict=True):
                turns = self._watched.get(key, {})
                for turn_id in members:
                    event = turns.get(turn_id.decode() if isinstance(turn_id, bytes) else str(turn_id))
                    if event is not None:
                        event.set()


async def until_stopped(work: Awaitable[T], stopped: asyncio.Event) -> T:
    """Await `work` unless `stopped` is set first: then `work` is cancelled and `AnswerStopped` raised
    (unless it had finished by then: its own outcome stands)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        if task.cancelled():
            raise AnswerStopped("stopped by the user")
        return task.result()
    finally:
        waiter.cancel()
        if not task.done():  # this turn itself is cancelled (shutdown, lock lost): so is its work
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved (it was raised, or superseded): never logged as lost
