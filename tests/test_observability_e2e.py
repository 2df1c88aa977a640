"""Observability (issue 13): GET /metrics (Prometheus text, read with prometheus-client's own parser),
GET /readyz, and LOG_FORMAT=json. The bot runs as a real process against the fake Slack, the fake OpenAI
and a real Redis."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, BotProcess, RedisServer, SlackSender, mention
from tests.test_bridge_e2e import ALICE, CHANNEL, answers

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(bot: BotProcess, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"{bot.url}{path}", timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def scrape(bot: BotProcess) -> Samples:
    status, content_type, text = get(bot, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, content_type)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"slack_assistant_{name}", frozenset(labels.items())), 0.0)


def answered(bot: BotProcess, count: int = 1) -> Samples:
    """/metrics once `count` turns were counted answered (a turn is counted just after its last Slack
    call, so the scrape waits for it)."""
    samples: Samples = {}

    def counted() -> bool:
        nonlocal samples
        samples = scrape(bot)
        return value(samples, "turns_total", outcome="answered") >= count

    deadline = time.monotonic() + 15
    while not counted():
        assert time.monotonic() < deadline, f"{count} answered turn(s) not counted: {samples}"
        time.sleep(0.1)
    return samples


def drained(bot: BotProcess) -> Samples:
    """/metrics once the turn queue reads empty."""
    samples = scrape(bot)
    deadline = time.monotonic() + 15
    while value(samples, "queue_depth") != 0:
        assert time.monotonic() < deadline, f"the queue never emptied: {samples}"
        time.sleep(0.1)
        samples = scrape(bot)
    return samples


def test_an_answered_turn_is_counted_with_its_latencies_and_tokens(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    bot = start_bot()
    before = scrape(bot)
    assert value(before, "turns_total", outcome="answered") == 0
    assert value(before, "tokens_total", kind="input") == 0

    event = mention(CHANNEL, ALICE, "count me")
    assert SlackSender(bot.url).send_event(event).status == 200
    [reply] = answers(slack, CHANNEL, event["ts"])
    assert reply.text == "Echo: count me"

    answered(bot)
    # The turn leaves the queue just after it is counted (its entry is acked once the turn's records are
    # written): the queue is empty once it has.
    samples = drained(bot)
    assert value(samples, "turns_total", outcome="answered") == 1
    assert value(samples, "turns_total", outcome="failed") == 0
    assert value(samples, "messages_total", result="queued") == 1
    # One sample in each latency histogram: the ack, the first text and the whole turn.
    assert value(samples, "ack_seconds_count") == 1
    assert value(samples, "first_text_seconds_count") == 1
    assert value(samples, "turn_seconds_count", outcome="answered") == 1
    assert value(samples, "turn_seconds_bucket", outcome="answered", le="+Inf") == 1
    # Tokens, as the fake OpenAI's response reported them in its `usage`.
    assert value(samples, "tokens_total", kind="input") > 0
    assert value(samples, "tokens_total", kind="output") > 0
    assert value(samples, "slack_rate_limited_total", method="chat.startStream") == 0
    assert value(samples, "queue_depth") == 0 and value(samples, "redis_up") == 1


def test_a_slack_429_is_counted_and_the_answer_still_arrives(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    bot = start_bot()
    # Slack's rate limiter answer (HTTP 429, Retry-After, "ratelimited") to the answer's first call.
    slack.fail_next("chat.startStream", "ratelimited", status=429, retry_after=1)
    event = mention(CHANNEL, ALICE, "through a rate limit")
    SlackSender(bot.url).send_event(event)
    [reply] = answers(slack, CHANNEL, event["ts"], timeout=30)
    assert reply.text == "Echo: through a rate limit"

    samples = answered(bot)
    assert value(samples, "slack_rate_limited_total", method="chat.startStream") == 1
    assert value(samples, "slack_errors_total", method="chat.startStream", error="ratelimited") == 1


def test_queue_depth_and_age_show_a_turn_a_front_queued(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    front = start_bot(WORKER_CONCURRENCY="0")  # acks and queues; no worker runs the turn
    event = mention(CHANNEL, ALICE, "wait in line")
    assert SlackSender(front.url).send_event(event).status == 200

    samples = scrape(front)
    assert value(samples, "queue_depth") == 1
    assert value(samples, "queue_oldest_seconds") >= 0
    assert value(samples, "messages_total", result="queued") == 1
    assert value(samples, "ack_seconds_count") == 1
    assert rdb.xlen(f"sa:{{-:{TEAM}}}:turns") == 1  # what the gauge read
    assert get(front, "/readyz")[0] == 200


def test_readyz_says_503_with_a_reason_once_redis_is_gone(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "own-redis").start()
    try:
        bot = start_bot(own.url, WORKER_CONCURRENCY="0")
        status, _, body = get(bot, "/readyz")
        assert (status, json.loads(body)) == (200, {"ready": True})
        own.stop()
        status, content_type, body = get(bot, "/readyz")
        assert status == 503 and content_type.startswith("application/json")
        assert json.loads(body) == {"ready": False, "reason": "redis unreachable"}
        # /metrics still answers, and says Redis could not be read.
        samples = scrape(bot)
        assert value(samples, "redis_up") == 0
    finally:
        own.stop()


def test_json_logs_carry_the_ids_and_never_the_message_text(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    bot = start_bot(LOG_FORMAT="json")
    secret_words = "zebra-quartz-umbrella"
    event = mention(CHANNEL, ALICE, f"please keep {secret_words} out of the log")
    SlackSender(bot.url).send_event(event)
    answers(slack, CHANNEL, event["ts"])
    answered(bot)
    assert bot.stop() == 0

    lines = [json.loads(line) for line in bot.logs().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    turn_lines = [line for line in lines if "turn" in line]
    assert turn_lines, [line["message"] for line in lines]
    for line in turn_lines:
        assert line["team"] == TEAM and line["channel"] == CHANNEL
        assert line["thread"] == f"c:{CHANNEL}:{event['ts']}"
    assert any("answered" in line["message"] for line in turn_lines)
    assert secret_words not in bot.logs()
