"""bot/slack/budget.py on a real Redis: the shared buckets that keep every replica inside Slack's tiers."""

from __future__ import annotations

import asyncio

import redis

from bot.keys import Keys
from bot.slack.budget import SlackBudget


async def _run(redis_url: str, share: float) -> dict[str, object]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        budget = SlackBudget(client, share=share)
        team, other = Keys("T1"), Keys("T2")
        starts = budget.buckets(team, "chat.startStream")
        # Tier 2 (20 a minute, a minute's worth at once, one call short) at share 1: 19 taken, the 20th waits.
        taken = [await budget.try_take(*starts) for _ in range(19)]
        wait = await budget.try_take(*starts)
        elsewhere = await budget.try_take(*budget.buckets(other, "chat.startStream"))
        # All or none: with startStream spent, a stream (start + stop) takes nothing from stopStream.
        stops = budget.buckets(team, "chat.stopStream")
        both = await budget.try_take(*starts, *stops)
        stop_level = await client.hget(stops[0].key, "tokens")
        # chat.postMessage: per channel (a burst of 3, one short) and per workspace.
        posts = [await budget.try_take(*budget.buckets(team, "chat.postMessage", "C1")) for _ in range(4)]
        other_channel = await budget.try_take(*budget.buckets(team, "chat.postMessage", "C2"))
        ttl = await client.pttl(starts[0].key)
        return {
            "taken": taken,
            "wait": wait,
            "elsewhere": elsewhere,
            "both": both,
            "stop_level": stop_level,
            "posts": posts,
            "other_channel": other_channel,
            "ttl": ttl,
        }
    finally:
        await client.aclose()


def test_buckets_count_per_workspace_and_method_and_take_all_or_none(
    rdb: redis.Redis, redis_url: str
) -> None:
    seen = asyncio.run(_run(redis_url, share=1.0))
    assert seen["taken"] == [0.0] * 19
    assert 2.0 < float(seen["wait"]) <= 3.1  # one call refills every 3 s
    assert seen["elsewhere"] == 0.0  # another workspace has its own budget
    assert float(seen["both"]) > 0 and seen["stop_level"] is None  # nothing taken from stopStream
    posts = seen["posts"]
    assert posts[:2] == [0.0] * 2 and 0 < float(posts[2]) <= 1.0  # a burst of 2, then 1 a second
    assert seen["other_channel"] == 0.0
    assert 0 < int(seen["ttl"]) <= 61_000  # a bucket expires once it would be full again
    keys = sorted(rdb.keys("sa:*"))
    assert keys and all(k.startswith("sa:{-:T1}:slack:") or k.startswith("sa:{-:T2}:slack:") for k in keys)


def test_the_bot_budgets_less_than_slack_allows(rdb: redis.Redis, redis_url: str) -> None:
    seen = asyncio.run(_run(redis_url, share=0.9))
    assert seen["taken"][:17] == [0.0] * 17 and float(seen["taken"][17]) > 0
