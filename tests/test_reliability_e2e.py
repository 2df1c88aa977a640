"""Reliability, end to end: the bot as real processes (several replicas, HTTP and Socket Mode), real Redis
servers that are stopped and restarted, processes killed with SIGKILL or stopped with SIGTERM, and faults
injected at the fake Slack and the fake OpenAI. Never a patch of the project's own code.

What each test asserts is what a user would see (the fake Slack's messages), what OpenAI holds (the fake's
conversations and model inputs), and what Redis holds.
"""

from __future__ import annotations

import itertools
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack
from tests.harness import (
    TEAM,
    BotProcess,
    RedisServer,
    SlackSender,
    mention,
    message,
)
from tests.redis_topologies import on_topologies
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers, user_texts

# A dead worker's lock frees, and its turns are reclaimed, within about two seconds.
FAST = {"RUNNER_LOCK_SECONDS": "2", "RECOVERY_INTERVAL_SECONDS": "0.5"}
NO_LIMITS = {
    "RATE_LIMIT_USER_PER_MINUTE": "0",
    "RATE_LIMIT_TEAM_PER_MINUTE": "0",
    "THREAD_ANSWERS_PER_MINUTE": "0",
    "THREAD_ANSWERS_PER_DAY": "0",
}
NS = f"sa:{{-:{TEAM}}}"

Spawn = Callable[..., BotProcess]


@pytest.fixture
def spawn(start_bot: Spawn) -> Spawn:
    """Bot processes (HTTP, or Socket Mode with http=False) on the test Redis or another one."""
    return start_bot


def healthz(bot: BotProcess) -> int:
    try:
        with urllib.request.urlopen(f"{bot.url}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def all_turns_done(rdb: redis.Redis) -> bool:
    """Nothing pending in the turn stream and no thread index left: no answer can still come."""
    if rdb.exists(f"{NS}:turns") and rdb.xpending(f"{NS}:turns", "workers")["pending"]:
        return False
    return not rdb.keys(f"{NS}:queue:*")


def texts(slack: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    return [m.text for m in slack.messages(channel, thread_ts)]


# ---- crashes, replicas, shutdown --------------------------------------------------------------------


@on_topologies("cluster")
def test_kill_9_mid_answer_is_answered_once_after_recovery(
    slack: FakeSlack, openai_fake: FakeOpenAI, spawn: Spawn
) -> None:
    doomed = spawn(**FAST)
    text = "".join(f"word{i} " for i in range(60))
    openai_fake.script(Reply(text=text, chunk_size=8, chunk_delay=0.06))
    root = mention(CHANNEL, ALICE, "a long answer please")
    sender = SlackSender(doomed.url)
    sender.send_event(root)
    # Killed mid-stream: part of the answer is already showing in Slack.
    slack.wait_for(lambda: any(m.streaming and len(m.text) > 40 for m in slack.messages(CHANNEL, root["ts"])))
    sender.send_event(message(CHANNEL, BOB, "and then this", thread_ts=root["ts"]))
    doomed.stop(signal.SIGKILL)

    spawn(**FAST)
    msgs = answers(slack, CHANNEL, root["ts"], count=2, timeout=30)
    # The killed turn is finished in the message it had started, then the one queued behind it.
    assert [m.text for m in msgs] == [text, "Echo: and then this"]
    # Its response was resumed, not created again: the user's message is in the conversation once.
    assert len(openai_fake.model_inputs) == 2
    [conv] = openai_fake.conversations.values()
    assert user_texts(conv["items"]) == [
        "user: a long answer please",
        f"assistant: {text}",
        "user: and then this",
        "assistant: Echo: and then this",
    ]


def test_a_stalled_worker_loses_the_turn_and_never_touches_the_answer_again(
    slack: FakeSlack, openai_fake: FakeOpenAI, spawn: Spawn, rdb: redis.Redis
) -> None:
    stalled = spawn(**FAST)
    text = "".join(f"piece{i} " for i in range(90))
    openai_fake.script(Reply(text=text, chunk_size=8, chunk_delay=0.08))
    root = mention(CHANNEL, ALICE, "a long one")
    SlackSender(stalled.url).send_event(root)
    slack.wait_for(lambda: any(m.streaming and m.text for m in slack.messages(CHANNEL, root["ts"])))
    spawn(**FAST)
    assert stalled.proc is not None
    # Frozen mid-answer past its lock's TTL: the other replica takes the turn over and finishes it.
    stalled.proc.send_signal(signal.SIGSTOP)
    try:
        slack.wait_for(
            lambda: all_turns_done(rdb) and texts(slack, CHANNEL, root["ts"]) == [text], timeout=30
        )
    finally:
        stalled.proc.send_signal(signal.SIGCONT)
    # Awake again, it finds the turn done by another worker and stops without writing.
    slack.wait_for(lambda: "interrupted" in stalled.logs() or "lost the lock" in stalled.logs(), timeout=20)
    [answer] = slack.messages(CHANNEL, root["ts"])
    assert answer.text == text and not answer.streaming
    assert len(openai_fake.model_inputs) == 1
    assert len(openai_fake.conversations) == 1


def test_replicas_answer_a_retried_burst_once_each_in_order(
    slack: FakeSlack, openai_fake: FakeOpenAI, spawn: Spawn, rdb: redis.Redis
) -> None:
    http_bots = [spawn(**NO_LIMITS), spawn(**NO_LIMITS)]
    spawn(http=False, **NO_LIMITS)
    slack.wait_socket_connected(timeout=20)
    senders = [SlackSender(bot.url) for bot in http_bots]
    threads, per_thread = 4, 4
    openai_fake.script(*[Reply(chunk_size=4, chunk_delay=0.01)] * (threads * per_thread))
    event_ids = itertools.count(1)

    def via(path: int, event: dict[str, Any], event_id: str, retry: int | None) -> None:
        if path < 2:
            assert senders[path].send_event(event, event_id=event_id, retry_num=retry).status == 200
        else:
            envelope = slack.event_payload(event, event_id=event_id)
            slack.socket_send(envelope, retry_attempt=retry or 0, retry_reason="timeout" if retry else "")

    def deliver(event: dict[str, Any], n: int) -> None:
        """Each event reaches one replica, Slack's retry of it another one, and a message that
        mentions the bot also arrives as its `message` twin."""
        event_id = f"EvBURST{next(event_ids):04d}"
        via(n % 3, event, event_id, None)
        via((n + 1) % 3, event, event_id, 1)
        if event["type"] == "app_mention" and "thread_ts" in event:
            twin = message(
                event["channel"], event["user"], event["text"], ts=event["ts"], thread_ts=event["thread_ts"]
            )
            via((n + 2) % 3, twin, f"EvBURST{next(event_ids):04d}", None)

    roots: list[str] = []

    def conversation(t: int) -> None:
        user = f"U0USER{t}"
        root = mention(CHANNEL, user, f"t{t} m0")
        roots.append(root["ts"])
        deliver(root, t)
        for k in range(1, per_thread):
            if k % 2:
                event = mention(CHANNEL, user, f"t{t} m{k}", thread_ts=root["ts"])
            else:
                event = message(CHANNEL, user, f"t{t} m{k}", thread_ts=root["ts"])
            deliver(event, t + k)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(conversation, range(threads)))

    slack.wait_for(lambda: all_turns_done(rdb), timeout=60)
    for t in range(threads):
        root_ts = next(ts for ts in roots if texts(slack, CHANNEL, ts)[:1] == [f"Echo: t{t} m0"])
        assert texts(slack, CHANNEL, root_ts) == [f"Echo: t{t} m{k}" for k in range(per_thread)]
    assert len(openai_fake.model_inputs) == threads * per_thread
    assert len(openai_fake.conversations) == threads


def test_sigterm_hands_an_unfinished_turn_back_to_another_replica(
    slack: FakeSlack, openai_fake: FakeOpenAI, spawn: Spawn
) -> None:
    stopping = spawn(SHUTDOWN_GRACE_SECONDS="0.5", **FAST)
    openai_fake.script(Reply(text="finished by the other replica", first_token_delay=4))
    event = mention(CHANNEL, ALICE, "slow one")
    SlackSender(stopping.url).send_event(event)
    slack.wait_for(lambda: len(openai_fake.model_inputs) == 1)
    spawn(**FAST)
    assert stopping.stop(signal.SIGTERM) == 0
    assert "1 handed back" in stopping.logs()

    [reply] = answers(slack, CHANNEL, event["ts"], timeout=30)
    assert reply.text == "finished by the other replica"
    assert len(openai_fake.model_inputs) == 1


# ---- Redis ---------------------------------------------------------------------------------------


def test_redis_restart_mid_load_loses_no_mapping_and_no_queued_turn(
    slack: FakeSlack, openai_fake: FakeOpenAI, spawn: Spawn, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "persistent-redis", appendonly=True).start()
    try:
        bot = spawn(server.url, **FAST)
        sender = SlackSender(bot.url)
        openai_fake.script(
            Reply(text="first answer", first_token_delay=1.5),
            Reply(text="second answer"),
            Reply(text="third answer"),
        )
        root = mention(CHANNEL, ALICE, "one")
        sender.send_event(root)
        slack.wait_for(lambda: len(openai_fake.model_inputs) == 1)
        for text in ("two", "three"):
            sender.send_event(message(CHANNEL, ALICE, text, thread_ts=root["ts"]))
        # While "one" is being answered and two more turns wait in the queue.
        server.restart()

        msgs = answers(slack, CHANNEL, root["ts"], count=3, timeout=40)
        assert [m.text for m in msgs] == ["first answer", "second answer", "third answer"]
        # The thread mapping survived: a later reply continues the same conversation.
        sender.send_event(message(CHANNEL, ALICE, "four", thread_ts=root["ts"]))
        answers(slack, CHANNEL, root["ts"], count=4, timeout=20)
        [conv_id] = list(openai_fake.conversations)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.hget(f"{NS}:thread:c:{CHANNEL}:{root['ts']}", "conversation_id") == conv_id
        client.close()
        inputs = [user_texts(i["input_items"])[-1] for i in openai_fake.model_inputs]
        assert inputs == ["user: one", "user: two", "user: three", "user: four"], texts(
            slack, CHANNEL, root["ts"]
        )
        assert [u.split(": ", 1)[1] for u in user_texts(openai_fake.conversation(conv_id)["items"])][::2] == [
            "one",
            "two",
            "three",
            "four",
        ]
    finally:
        server.stop()


def test_redis_outage_keeps_the_bot_up_tells_users_and_resumes(
    slack: FakeSlack, openai_fake: FakeOpenAI, spawn: Spawn, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "flaky-redis", appendonly=True).start()
    try:
        bot = spawn(server.url, **FAST)
        socket_bot = spawn(server.url, http=False, **FAST)
        slack.wait_socket_connected(timeout=20)
        server.stop()

        # HTTP: acked (so Slack does not retry into the outage), and the user is told in the thread.
        event = mention(CHANNEL, ALICE, "anyone home?")
        assert SlackSender(bot.url).send_event(event).status == 200
        slack.wait_for(lambda: any("briefly unavailable" in t for t in texts(slack, CHANNEL, event["ts"])))
        assert healthz(bot) == 503
        # Socket Mode: the envelope is acked and the user told, too.
        dm = message(DM, ALICE, "over the socket")
        slack.wait_socket_ack(slack.socket_send(slack.event_payload(dm)))
        slack.wait_for(lambda: any("briefly unavailable" in t for t in texts(slack, DM, dm["ts"])))
        assert openai_fake.model_inputs == []

        server.start()
        bot.wait_healthy()
        later = mention(CHANNEL, ALICE, "back now?")
        SlackSender(bot.url).send_event(later)
        assert [m.text for m in answers(slack, CHANNEL, later["ts"], timeout=20)] == ["Echo: back now?"]
        again = message(DM, ALICE, "socket again")
        slack.wait_socket_ack(slack.socket_send(slack.event_payload(again)))
        assert [m.text for m in answers(slack, DM, again["ts"], timeout=20)] == ["Echo: socket again"]
        for process in (bot, socket_bot):
            assert process.proc is not None and process.proc.poll() is None
    finally:
        server.stop()


# ---- spend limits ---------------------------------------------------------------------------------


@on_topologies("cluster")
def test_spend_limits_per_user_and_per_workspace(
    slack: FakeSlack, openai_fake: FakeOpenAI, spawn: Spawn
) -> None:
    bot = spawn(RATE_LIMIT_USER_PER_MINUTE="2", RATE_LIMIT_TEAM_PER_MINUTE="3")
    sender = SlackSender(bot.url)
    alice = [mention(CHANNEL, ALICE, f"alice {i}") for i in range(3)]
    for event in alice:
        sender.send_event(event)
    bob = [mention(CHANNEL, BOB, f"bob {i}") for i in range(2)]
    for event in bob:
        sender.send_event(event)
    # Slack retrying a refused message does not repeat the notice.
    sender.send_event(alice[2], event_id="EvLIMITED1")
    sender.send_event(alice[2], event_id="EvLIMITED1", retry_num=1)

    for event in (alice[0], alice[1], bob[0]):
        assert [m.text for m in answers(slack, CHANNEL, event["ts"])] == [
            f"Echo: {event['text'].split('> ')[1]}"
        ]
    # Each told once, ephemerally (at the top: the refused mentions started no thread); nothing public.
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE)) and bool(slack.ephemerals(CHANNEL, BOB)))
    [user_notice] = slack.ephemerals(CHANNEL, ALICE)
    assert "faster than I can answer" in user_notice.text and user_notice.thread_ts is None
    [team_notice] = slack.ephemerals(CHANNEL, BOB)
    assert "workspace has reached its limit" in team_notice.text
    assert texts(slack, CHANNEL, alice[2]["ts"]) == texts(slack, CHANNEL, bob[1]["ts"]) == []
    # Nothing was sent to OpenAI for the refused messages.
    assert sorted(user_texts(i["input_items"])[-1] for i in openai_fake.model_inputs) == [
        "user: alice 0",
        "user: alice 1",
        "user: bob 0",
    ]


# ---- OpenAI faults --------------------------------------------------------------------------------


OPENAI_FAULTS: list[tuple[str, list[Reply], str]] = [
    ("429", [Reply(http_status=429, retry_after=1), Reply(text="after a 429")], "after a 429"),
    ("503", [Reply(http_status=503), Reply(text="after a 503")], "after a 503"),
    (
        "conversation_locked",
        [Reply(http_status=400, error_code="conversation_locked"), Reply(text="after the lock")],
        "after the lock",
    ),
    # OPENAI_TIMEOUT is 1 s: the stream stalls past it twice, is resumed, and completes.
    ("timeout", [Reply(text="slow but sure", first_token_delay=2.5)], "slow but sure"),
    (
        "dropped",
        [
            Reply(
                text="dropped, resumed",
                chunk_size=3,
                chunk_delay=0.05,
                drop_after_chunks=2,
                server_completes=True,
            )
        ],
        "dropped, resumed",
    ),
    (
        "failed",
        [Reply(text="no good", fail_with="invalid_prompt")],
        "no good\n\n:warning: Sorry, the assistant couldn't finish that answer.",
    ),
    (
        "incomplete",
        [Reply(text="half an answ", incomplete_reason="max_output_tokens")],
        "half an answ\n\n:warning: The answer was cut short",
    ),
    ("500", [Reply(http_status=500)], ":warning: Sorry, I couldn't reach the assistant just now."),
]


def test_openai_faults_end_in_an_answer_or_a_clear_message(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: Spawn
) -> None:
    bot = start_bot(OPENAI_TIMEOUT="1")
    sender = SlackSender(bot.url)
    reached_model = 0
    for name, replies, expected in OPENAI_FAULTS:
        openai_fake.script(*replies)
        event = mention(CHANNEL, ALICE, f"question about {name}")
        sender.send_event(event)
        [reply] = answers(slack, CHANNEL, event["ts"], timeout=30)
        assert reply.text.startswith(expected), name
        # Never run twice: at most one response per turn reached the model.
        reached_model += 0 if name == "500" else 1
        assert len(openai_fake.model_inputs) == reached_model, name


# ---- Slack faults ---------------------------------------------------------------------------------


def test_slack_rate_limits_on_every_method_still_deliver_one_answer(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: Spawn
) -> None:
    bot = start_bot()
    # slack-sdk's retry handler waits for Retry-After (plus up to 1 s of jitter) and tries again.
    slack.fail_next("chat.startStream", "ratelimited", status=429, retry_after=1)
    for method in ("agents.sessions.setStatus", "chat.appendStream", "chat.stopStream"):
        slack.fail_next(method, "ratelimited", status=429, retry_after=0)
    text = "An answer that streams in several pieces despite Slack's rate limits."
    openai_fake.script(Reply(text=text, chunk_size=6, chunk_delay=0.1))
    event = mention(CHANNEL, ALICE, "go")
    SlackSender(bot.url).send_event(event)
    assert [m.text for m in answers(slack, CHANNEL, event["ts"], timeout=30)] == [text]
    limited = {c.method for c in slack.calls if c.error == "ratelimited"}
    assert limited == {
        "agents.sessions.setStatus",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    }


def test_slack_refusing_the_answer_is_retried_later_without_running_it_again(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: Spawn
) -> None:
    bot = start_bot(**FAST)
    slack.fail_next("chat.startStream", "internal_error")
    slack.fail_next("chat.postMessage", "internal_error")
    openai_fake.script(Reply(text="shown on the second attempt"))
    event = mention(CHANNEL, ALICE, "hello?")
    SlackSender(bot.url).send_event(event)
    assert [m.text for m in answers(slack, CHANNEL, event["ts"], timeout=30)] == [
        "shown on the second attempt"
    ]
    assert len(openai_fake.model_inputs) == 1


def test_msg_too_long_splits_into_smaller_messages(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This "Slack" refuses anything over 300 characters in one call, though the bot expects 1,000.
    monkeypatch.setattr(slack, "markdown_text_limit", 300)
    bot = start_bot(MAX_MESSAGE_CHARS="1000")
    text = " ".join(f"Sentence number {i} of a long answer." for i in range(60))
    openai_fake.script(Reply(text=text, chunk_size=400))
    event = mention(CHANNEL, ALICE, "long")
    SlackSender(bot.url).send_event(event)

    def complete() -> bool:
        msgs = slack.messages(CHANNEL, event["ts"])
        return "".join(m.text for m in msgs) == text and not any(m.streaming for m in msgs)

    slack.wait_for(complete, timeout=30)
    msgs = slack.messages(CHANNEL, event["ts"])
    assert len(msgs) >= 5 and all(len(m.text) <= 300 for m in msgs)
    assert any(c.error == "msg_too_long" for c in slack.calls)
