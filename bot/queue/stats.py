"""The turn queue as an operator sees it, read from Redis on demand (each `/metrics` scrape, `/readyz`):
how many turns are unfinished across every workspace's stream, and how long the oldest has waited.

A stream entry stays until its turn is done (`bot.queue.dispatcher`), so XLEN counts the turns queued
and running, and the first entry's id (its XADD time in ms) dates the oldest one.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from bot.keys import TEAMS_KEY, Keys
from bot.queue.connection import is_cluster


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_seconds: float  # 0 when the queue is empty


async def read_queue_stats(redis: Redis) -> QueueStats:
    """One SMEMBERS, then one pipelined round trip over the workspaces' streams. Raises RedisError
    (unreachable, or a key of the wrong type: the queue is not readable)."""
    members = await redis.smembers(TEAMS_KEY)
    streams = [Keys.from_registry_member(str(m)).turns() for m in sorted(members)]
    cluster = is_cluster(redis)
    async with redis.pipeline(transaction=False) as pipe:
        if not cluster:
            pipe.time()
        for stream in streams:
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
        replies = await pipe.execute()
    if cluster:  # redis-py's cluster pipelines refuse TIME
        replies = [await redis.time(), *replies]
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    depth, oldest_ms = 0, now_ms
    for length, first in zip(replies[1::2], replies[2::2], strict=True):
        depth += int(length)
        if first:
            entry_id = str(first[0][0])
            oldest_ms = min(oldest_ms, int(entry_id.partition("-")[0]))
    return QueueStats(depth, max(0, now_ms - oldest_ms) / 1000)
