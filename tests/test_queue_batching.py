"""bot/queue/batching.py against a real Redis: the submits of one moment share a pipeline (one connection),
each still gets its own script's answer, and a script Redis forgot is loaded again."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def _scripts_of_one_moment(url: str, callers: int) -> tuple[list[Any], int, list[str]]:
    from bot.queue.batching import BatchingRedis

    client = BatchingRedis.from_url(url, decode_responses=True)
    try:
        counter = client.register_script(SCRIPT)
        # Fails for the caller whose argument is "boom" only (a Lua error is that call's own).
        picky = client.register_script(
            "if ARGV[1] == 'boom' then return redis.error_reply('ERR boom') end return ARGV[1]"
        )
        await client.script_flush()  # neither is known to Redis yet: each is loaded once, then resent
        calls = [counter(keys=["test:counter"], args=[f"caller-{n}"]) for n in range(callers)]
        calls += [picky(keys=["test:picky"], args=[arg]) for arg in ("a", "boom", "b")]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        connections = len(client.connection_pool._available_connections)  # type: ignore[attr-defined]
        # Plain commands of one moment share a pipeline too; one that Redis can't be sent (a None argument)
        # fails its own caller only.
        plain = await asyncio.gather(
            *(client.incr("test:plain") for _ in range(100)),
            client.set("test:bad", None),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert sorted(plain[:100]) == list(range(1, 101))  # type: ignore[type-var]
        assert isinstance(plain[100], redis.exceptions.DataError)
        connections = max(connections, len(client.connection_pool._available_connections))  # type: ignore[attr-defined]
        # A script run in a pipeline of the caller's own goes there, as redis-py's does.
        async with client.pipeline(transaction=False) as pipe:
            await counter(keys=["test:counter"], args=["in-pipe"], client=pipe)
            (in_pipe,) = await pipe.execute()
        return answers, connections, in_pipe
    finally:
        await client.aclose()


def test_scripts_run_in_one_moment_share_a_pipeline_and_each_caller_gets_its_own_answer(
    rdb: redis.Redis, redis_url: str
) -> None:
    answers, connections, in_pipe = asyncio.run(_scripts_of_one_moment(redis_url, 150))
    counts, picky = answers[:150], answers[150:]
    assert [echo for _, echo in counts] == [f"caller-{n}" for n in range(150)]
    assert sorted(int(count) for count, _ in counts) == list(range(1, 151))
    assert picky[0] == "a" and picky[2] == "b"
    assert isinstance(picky[1], redis.exceptions.ResponseError) and "boom" in str(picky[1])
    assert connections == 1  # one pipeline for all 153 calls, not a connection (or a round trip) each
    assert in_pipe == [151, "in-pipe"]
    assert rdb.get("test:counter") == "151"
