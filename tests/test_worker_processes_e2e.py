"""The README's command as it ships (WORKER_PROCESSES unset: a worker per core, at most 4): the process
that takes Slack's requests only acks and queues; `slack-assistant worker` children it starts and
supervises run the turns. They are stopped with it, restarted when one dies, never outlive it, and use its
embedded Redis when there is no REDIS_URL.

(The rest of the suite runs the bot in one process, WORKER_PROCESSES=0, to save a start-up per test.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import redis

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.harness import DEFAULT_SHAPE_VARS, TEAM, BotProcess, SlackSender, bot_env, mention
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, answers

STREAM = f"sa:{{-:{TEAM}}}:turns"


def readme_env(
    slack: FakeSlack, openai_fake: FakeOpenAI, redis_url: str | None, **extra: str
) -> dict[str, str]:
    env = bot_env(
        slack_api_url=slack.api_url, openai_base_url=openai_fake.base_url, redis_url=redis_url or ""
    )
    for name in DEFAULT_SHAPE_VARS:
        env.pop(name)
    if redis_url is None:
        del env["REDIS_URL"]  # the embedded Redis
    env.update(extra)
    return env


def expected_workers() -> int:
    """WORKER_PROCESSES unset: one per core this process may use, at most 4 (bot.settings)."""
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def worker_children(bot: BotProcess) -> list[psutil.Process]:
    assert bot.proc is not None
    return [
        p
        for p in psutil.Process(bot.proc.pid).children()
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "worker" in p.cmdline()
    ]


def wait_children(slack: FakeSlack, bot: BotProcess, count: int) -> list[psutil.Process]:
    slack.wait_for(lambda: len(worker_children(bot)) == count, timeout=30)
    return worker_children(bot)


def consumer_pids(rdb: redis.Redis) -> set[int]:
    """The pids in the names of the turn stream's consumers (host-pid-random): who read turns."""
    return {int(c["name"].split("-")[-2]) for c in rdb.xinfo_consumers(STREAM, "workers")}


def test_the_one_command_answers_from_a_worker_child_it_restarts_and_that_never_outlives_it(
    slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    one = readme_env(slack, openai_fake, redis_url, WORKER_PROCESSES="1")
    bot = BotProcess(one, workdir=tmp_path).start()
    assert bot.proc is not None
    [child] = wait_children(slack, bot, 1)
    sender = SlackSender(bot.url)

    first = mention(CHANNEL, ALICE, "who answers?")
    assert sender.send_event(first).status == 200
    [reply] = answers(slack, CHANNEL, first["ts"], timeout=30)
    assert reply.text == "Echo: who answers?"
    # The turn was read from the queue by the child alone: the front runs none.
    assert consumer_pids(rdb) == {child.pid}

    # A worker that dies is started again, and answers what comes next.
    child.send_signal(signal.SIGKILL)
    slack.wait_for(lambda: [c.pid for c in worker_children(bot)] not in ([], [child.pid]), timeout=30)
    [second_child] = worker_children(bot)
    second = mention(CHANNEL, BOB, "after the restart")
    assert sender.send_event(second).status == 200
    [reply] = answers(slack, CHANNEL, second["ts"], timeout=30)
    assert reply.text == "Echo: after the restart"
    assert second_child.pid in consumer_pids(rdb)
    assert "worker process 0 exited" in bot.logs()

    # Killed outright, the parent can't stop its child: the child stops by itself.
    bot.stop(signal.SIGKILL)
    gone, alive = psutil.wait_procs([second_child], timeout=30)
    assert gone and not alive
    assert "the parent process is gone; stopping" in bot.logs()


def test_the_worker_children_use_the_embedded_redis_and_stop_with_sigterm(
    slack: FakeSlack, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    bot = BotProcess(readme_env(slack, openai_fake, None), workdir=tmp_path).start()
    children = wait_children(slack, bot, expected_workers())
    event = mention(CHANNEL, ALICE, "no REDIS_URL")
    assert SlackSender(bot.url).send_event(event).status == 200
    [reply] = answers(slack, CHANNEL, event["ts"], timeout=30)
    assert reply.text == "Echo: no REDIS_URL"
    assert bot.stop(signal.SIGTERM) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    logs = bot.logs()
    assert "started embedded Redis" in logs and "Traceback" not in logs
    assert (tmp_path / "data" / "redis.db").exists()
