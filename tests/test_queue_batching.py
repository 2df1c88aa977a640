"""bot/queue/batching.py against a real Redis: the submits of one moment share a pipeline (one connection),
each still gets its own script's answer, and a script Redis forgot is loaded again."""

from __future__ import annotations

import asyncio

import redis
from redis.asyncio import Redis

from bot.queue.batching import ScriptBatcher

# Each caller's own answer: the counter after its increment, and its own argument echoed.
SCRIPT = "return {redis.call('INCR', KEYS[1]), ARGV[1]}"


async def _burst(url: str, callers: int) -> tuple[list[list[str]], int]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        batcher = ScriptBatcher(client, SCRIPT, "test:registry")
        answers = await asyncio.gather(
            *(batcher.run(["test:counter"], [f"caller-{n}"], f"member-{n % 3}") for n in range(callers))
        )
        connections = len(client.connection_pool._available_connections)  # type: ignore[attr-defined]
        return answers, connections
    finally:
        await client.aclose()


def test_a_burst_of_callers_shares_one_connection_and_each_gets_its_answer(
    rdb: redis.Redis, redis_url: str
) -> None:
    answers, connections = asyncio.run(_burst(redis_url, 200))
    assert [echo for _, echo in answers] == [f"caller-{n}" for n in range(200)]
    assert sorted(int(count) for count, _ in answers) == list(range(1, 201))
    assert connections == 1  # one pipeline at a time, not a connection per caller
    assert rdb.smembers("test:registry") == {"member-0", "member-1", "member-2"}


def test_a_script_redis_forgot_is_loaded_again(rdb: redis.Redis, redis_url: str) -> None:
    asyncio.run(_burst(redis_url, 3))
    rdb.script_flush()  # as after a Redis restart
    answers, _ = asyncio.run(_burst(redis_url, 3))
    assert sorted(int(count) for count, _ in answers) == [4, 5, 6]
