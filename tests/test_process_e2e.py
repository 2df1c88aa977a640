"""The bot as a process: Socket Mode end to end, start-up errors, and a clean SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import RedisTarget
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack
from tests.harness import SECRETS, TEAM, BotProcess, SlackSender, bot_env, mention, message, new_ts
from tests.test_bridge_e2e import ALICE, CHANNEL, DM, answers, user_texts


def test_socket_mode_end_to_end(
    slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis, redis_target: RedisTarget, tmp_path: Path
) -> None:
    env = bot_env(
        slack_api_url=slack.api_url,
        openai_base_url=openai_fake.base_url,
        redis_url=redis_target.url,
        **redis_target.env,
    )
    del env["SLACK_SIGNING_SECRET"]  # Socket Mode needs no signing secret
    del env["WORKER_PROCESSES"]  # the README's shape: the turns run in a worker child process
    bot = BotProcess(env, workdir=tmp_path).start(http=False)
    try:
        slack.wait_socket_connected(timeout=20)
        assert slack.calls_to("apps.connections.open")[0].token == env["SLACK_APP_TOKEN"]

        event = mention(CHANNEL, ALICE, "hello over the socket")
        first = slack.socket_send(slack.event_payload(event, event_id="Ev0SOCK1"))
        slack.wait_socket_ack(first)
        # Slack retries an envelope it thinks was not acked: still one answer.
        retry = slack.socket_send(
            slack.event_payload(event, event_id="Ev0SOCK1"), retry_attempt=1, retry_reason="timeout"
        )
        slack.wait_socket_ack(retry)
        [reply] = answers(slack, CHANNEL, event["ts"])
        assert reply.text == "Echo: hello over the socket"

        follow = message(DM, ALICE, "and a DM")
        slack.wait_socket_ack(slack.socket_send(slack.event_payload(follow)))
        answers(slack, DM, follow["ts"])
        assert len(openai_fake.model_inputs) == 2
    finally:
        assert bot.stop() == 0
    logs = bot.logs()
    assert not [s for s in SECRETS if s in logs]
    assert "Traceback" not in logs


def test_missing_configuration_stops_at_once_naming_each_variable(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("slack-assistant")
    result = subprocess.run(
        [str(exe)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "OPENAI_API_KEY", "SLACK_APP_TOKEN"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr

    bad = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxp-user-token-by-mistake", "OPENAI_API_KEY": "sk-x"}
    result = subprocess.run(
        [str(exe), "--http", "--port", "1"], cwd=tmp_path, env=bad, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN: must be a bot token starting with xoxb-" in result.stderr
    assert "SLACK_SIGNING_SECRET is not set" in result.stderr
    assert "xoxp-user-token-by-mistake" not in result.stderr

    # An empty secret, as .env.example ships it: HTTP mode would refuse every request, so it does not start.
    empty = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-x", "OPENAI_API_KEY": "sk-x"}
    empty["SLACK_SIGNING_SECRET"] = ""
    result = subprocess.run(
        [str(exe), "--http", "--port", "1"],
        cwd=tmp_path,
        env=empty,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "SLACK_SIGNING_SECRET is not set (needed for HTTP mode)" in result.stderr
    assert "Traceback" not in result.stderr

    front_only = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-x", "OPENAI_API_KEY": "sk-x"}
    front_only["WORKER_CONCURRENCY"] = "0"
    result = subprocess.run(
        [str(exe), "worker"], cwd=tmp_path, env=front_only, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "a worker needs WORKER_CONCURRENCY of 1 or more" in result.stderr


def test_sigterm_lets_the_running_turn_finish(slack: FakeSlack, openai_fake: FakeOpenAI, start_bot) -> None:
    bot = start_bot()
    openai_fake.script(Reply(text="finished despite SIGTERM", first_token_delay=1.0, chunk_delay=0.05))
    event = mention(CHANNEL, ALICE, "slow one")
    SlackSender(bot.url).send_event(event)
    slack.wait_for(lambda: len(openai_fake.model_inputs) == 1)
    assert bot.stop(signal.SIGTERM) == 0
    [reply] = slack.messages(CHANNEL, event["ts"])
    assert reply.text == "finished despite SIGTERM" and not reply.streaming
    assert "stopped" in bot.logs()


def test_state_lives_in_redis_so_a_restarted_bot_continues_the_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot
) -> None:
    first_bot = start_bot()
    root = new_ts()
    SlackSender(first_bot.url).send_event(mention(CHANNEL, ALICE, "remember: blue", ts=root))
    answers(slack, CHANNEL, root)
    first_bot.stop()

    second_bot = start_bot()
    SlackSender(second_bot.url).send_event(message(CHANNEL, ALICE, "what colour?", thread_ts=root))
    answers(slack, CHANNEL, root, count=2)
    assert len(openai_fake.conversations) == 1
    assert user_texts(openai_fake.model_inputs[1]["input_items"])[0] == "user: remember: blue"


def test_turns_of_a_killed_process_are_answered_by_another(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot, rdb: redis.Redis
) -> None:
    fast_recovery = {"RUNNER_LOCK_SECONDS": "2", "RECOVERY_INTERVAL_SECONDS": "0.5"}
    doomed = start_bot(**fast_recovery)
    openai_fake.script(Reply(text="answered after the crash", first_token_delay=3))
    root = mention(CHANNEL, ALICE, "first, slow")
    sender = SlackSender(doomed.url)
    sender.send_event(root)
    # Killed once the turn's response is recorded (the id reaches Redis a few ms after OpenAI has it).
    record = f"sa:{{-:{TEAM}}}:turn:{CHANNEL}:{root['ts']}"
    slack.wait_for(lambda: bool(rdb.hget(record, "response_id")))
    waiting = message(CHANNEL, ALICE, "second, queued behind it", thread_ts=root["ts"])
    sender.send_event(waiting)
    doomed.stop(signal.SIGKILL)

    survivor = start_bot(**fast_recovery)
    answers(slack, CHANNEL, root["ts"], count=2, timeout=30)
    assert survivor.proc is not None and survivor.proc.poll() is None
    # The killed turn too, first, from the response it had created (resumed, not run again).
    assert [m.text for m in slack.messages(CHANNEL, root["ts"])] == [
        "answered after the crash",
        "Echo: second, queued behind it",
    ]
    assert len(openai_fake.model_inputs) == 2


def test_a_front_only_queues_and_a_separate_worker_process_answers(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot, rdb: redis.Redis
) -> None:
    front = start_bot(WORKER_CONCURRENCY="0")
    event = mention(CHANNEL, ALICE, "answered by the worker")
    assert SlackSender(front.url).send_event(event).status == 200
    # Acked with the turn recorded and nothing else done: nobody read the entry, no Slack or OpenAI call.
    stream = f"sa:{{-:{TEAM}}}:turns"
    assert rdb.xlen(stream) == 1
    assert rdb.xpending(stream, "workers")["pending"] == 0
    assert [c.method for c in slack.calls if c.method != "auth.test"] == []
    assert openai_fake.requests == []

    worker = start_bot(worker=True)  # no signing secret, no app token: it takes no Slack requests
    [answer] = answers(slack, CHANNEL, event["ts"])
    assert answer.text == "Echo: answered by the worker"
    slack.wait_for(lambda: rdb.xlen(stream) == 0)  # the turn's entry is acked and deleted once done
    assert SlackSender(worker.url).send_event(mention(CHANNEL, ALICE, "to a worker")).status == 404
    assert len(openai_fake.model_inputs) == 1
