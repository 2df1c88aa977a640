"""The agent session's stop button across processes: the `agent_session_stopped` event reaches a front,
the turn runs on a worker (maybe another process).

The worker running a turn names it in the Slack thread's `session_turn` key while it runs. A stop reads
that key and marks that turn's progress record `stopped` (unless it is done): so a stop only ever hits the
turn that was running when the button was pressed, never a later one, and it is durable (a worker that dies
right after is retried, sees `stopped`, and only ends the message). The worker polls its record every
`STOP_POLL_SECONDS` while it answers; on a stop it cancels the answer in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import AnswerStopped, StoreUnavailable
from bot.keys import SESSION_TURN_TTL, Keys, ms
from bot.models import Workspace

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a running turn looks for a stop: the button's latency, at one HGET per running turn.
STOP_POLL_SECONDS = 0.5

# KEYS: the turn's progress record. Marks it stopped unless it is done (or gone). Returns 1 when marked.
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'done') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'stopped', '1')
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
            marked = bool(await self._mark(keys=[keys.turn(str(turn_id))]))
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


async def until_stopped(
    work: Awaitable[T], stopped: Callable[[], Awaitable[bool]], interval: float = STOP_POLL_SECONDS
) -> T:
    """Await `work`, asking `stopped` every `interval` seconds; on a stop `work` is cancelled and
    `AnswerStopped` raised (unless it had finished by then: its own outcome stands)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            if await stopped():
                task.cancel()
                await asyncio.wait({task})
                if task.cancelled():
                    raise AnswerStopped("stopped by the user")
                return task.result()
    finally:
        if not task.done():  # this turn itself is cancelled (shutdown, lock lost): so is its work
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved (it was raised, or superseded): never logged as lost
