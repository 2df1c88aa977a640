"""Approvals against the real Redis and the fake Slack (issue 16 review): a request is keyed by its turn and
call (a call id may repeat across turns, or be empty), a stored request of another asker is never this
one's answer, a click after the deadline ends the request as timed out, the key keeps a TTL when it had
vanished while the turn waited, and an approved call's run is recorded once with its output."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import ApprovalAsk
from bot.keys import Keys
from bot.models import Workspace
from bot.tools.approvals import GONE, ApprovalClick, Approvals, fallback_text
from tests.fakes.slack_api import FakeSlack, live_tokens
from tests.harness import BOT_TOKEN, TEAM

CHANNEL, THREAD = "C0GENERAL", "1700000000.000100"
ALICE, BOB = "U0ALICE", "U0BOB"
KEYS = Keys(TEAM)
T = TypeVar("T")


def run(
    redis_url: str, slack: FakeSlack, work: Callable[[Approvals], Awaitable[T]], seconds: float = 600
) -> T:
    async def main() -> T:
        client = aredis.Redis.from_url(redis_url, decode_responses=True)
        web = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)
        try:
            return await work(Approvals(client, web, seconds=seconds, poll_seconds=0.02))
        finally:
            await client.aclose()

    return asyncio.run(main())


def stored(rdb: redis.Redis, turn: str, call: str, **fields: Any) -> str:
    key = KEYS.approval(turn, call)
    state = {"user": ALICE, "channel": CHANNEL, "thread_ts": THREAD, "server": "tix", "tool": "deploy"}
    rdb.hset(key, mapping={**state, **fields})
    rdb.pexpire(key, 60_000)
    return key


def questions(slack: FakeSlack) -> list[Any]:
    return [m for m in slack.messages(CHANNEL, THREAD) if any(b["type"] == "actions" for b in m.blocks)]


def test_an_old_approval_of_the_same_call_id_does_not_approve_a_new_turns_call(
    rdb: redis.Redis, redis_url: str, slack: FakeSlack
) -> None:
    far = int((time.time() + 600) * 1000)
    stored(rdb, "C0GENERAL:1.1", "0", expires=far, decision="approved", by=ALICE, message_ts="1.2")
    ask = ApprovalAsk("0", "tix", "deploy", '{"service": "web"}')

    async def work(approvals: Approvals) -> str:
        return await approvals.decide(
            KEYS, "C0GENERAL:2.1", ask, user=ALICE, channel=CHANNEL, thread_ts=THREAD
        )

    # A new turn's call "0" is asked about (and, with no answer, times out): never the old "approved".
    assert run(redis_url, slack, work, seconds=0.3) == "timed_out"
    [question] = slack.messages(CHANNEL, THREAD)  # asked anew (the timeout then took its buttons)
    assert "No answer in time" in question.text
    assert rdb.hget(KEYS.approval("C0GENERAL:2.1", "0"), "decision") == "timed_out"
    assert rdb.hget(KEYS.approval("C0GENERAL:1.1", "0"), "decision") == "approved"  # the old one, untouched


def test_a_stored_request_of_another_asker_is_refused_not_taken(
    rdb: redis.Redis, redis_url: str, slack: FakeSlack
) -> None:
    far = int((time.time() + 600) * 1000)
    stored(rdb, "C0GENERAL:1.1", "c1", user=BOB, expires=far, decision="approved", by=BOB)
    ask = ApprovalAsk("c1", "tix", "deploy", "{}")

    async def work(approvals: Approvals) -> str:
        return await approvals.decide(
            KEYS, "C0GENERAL:1.1", ask, user=ALICE, channel=CHANNEL, thread_ts=THREAD
        )

    assert run(redis_url, slack, work) == "denied"
    assert questions(slack) == []


def test_a_click_after_the_deadline_ends_the_request_as_timed_out(
    rdb: redis.Redis, redis_url: str, slack: FakeSlack
) -> None:
    past = int((time.time() - 5) * 1000)
    key = stored(rdb, "C0GENERAL:1.1", "c1", expires=past)
    click = ApprovalClick(Workspace(team_id=TEAM), ALICE, CHANNEL, "1.2", THREAD, "C0GENERAL:1.1", "c1", True)

    async def work(approvals: Approvals) -> None:
        await approvals.clicked(click)

    run(redis_url, slack, work)
    assert rdb.hget(key, "decision") == "timed_out" and rdb.hget(key, "by") is None
    assert [m.text for m in slack.ephemerals(CHANNEL, ALICE, include_invisible=True)] == [GONE]


def test_the_key_keeps_a_ttl_when_it_vanished_while_the_turn_waited(
    rdb: redis.Redis, redis_url: str, slack: FakeSlack
) -> None:
    ask = ApprovalAsk("c1", "tix", "deploy", "{}")
    key = KEYS.approval("C0GENERAL:1.1", "c1")

    async def work(approvals: Approvals) -> str:
        waiting = asyncio.create_task(
            approvals.decide(KEYS, "C0GENERAL:1.1", ask, user=ALICE, channel=CHANNEL, thread_ts=THREAD)
        )
        await asyncio.to_thread(slack.wait_for, lambda: bool(rdb.hget(key, "message_ts")))
        rdb.delete(key)  # evicted, or removed by hand, while the turn waits
        return await waiting

    assert run(redis_url, slack, work) == "timed_out"
    assert rdb.hget(key, "decision") == "timed_out" and rdb.pttl(key) > 0


def test_an_approved_call_runs_once_and_a_retry_reuses_its_output(
    rdb: redis.Redis, redis_url: str, slack: FakeSlack
) -> None:
    stored(rdb, "C0GENERAL:1.1", "c1", decision="approved", by=ALICE)
    stored(rdb, "C0GENERAL:1.1", "c2", decision="approved", by=ALICE)

    async def work(approvals: Approvals) -> list[tuple[str, str]]:
        first = await approvals.run_once(KEYS, "C0GENERAL:1.1", "c1")
        await approvals.ran(KEYS, "C0GENERAL:1.1", "c1", "deployed web")
        again = await approvals.run_once(KEYS, "C0GENERAL:1.1", "c1")
        started = await approvals.run_once(KEYS, "C0GENERAL:1.1", "c2")  # its attempt then died
        lost = await approvals.run_once(KEYS, "C0GENERAL:1.1", "c2")
        return [first, again, started, lost]

    assert run(redis_url, slack, work) == [("run", ""), ("ran", "deployed web"), ("run", ""), ("lost", "")]


def test_the_fallback_text_is_inert() -> None:
    text = fallback_text(ApprovalAsk("c1", "<!channel>", "<@U0BOSS>", "{}"))
    assert live_tokens(text) == []
