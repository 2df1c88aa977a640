"""End to end on a real three-shard Redis Cluster (REDIS_CLUSTER=true) and a real Sentinel: workspaces whose
keys live on different shards, served by one bot process; `check` on both; a Sentinel failover. The suite's
core tests also run on the cluster (and on a Sentinel), parametrized with `on_topologies`; these are the
cases only those topologies have.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.conftest import BotFactory, RedisTarget
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack
from tests.harness import SlackSender, bot_env, free_port, mention, message
from tests.redis_topologies import RedisClusterServers, RedisSentinelServers
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, answers, user_texts
from tests.test_check_e2e import REDIS_PASSWORD, run_check
from tests.test_reliability_e2e import FAST, healthz

# Workspaces whose hash tags fall in the three shards' slot ranges (0-5460, 5461-10922, 10923-16383).
TEAMS = ("T0TEAM1", "T0OTHER", "T0EXT")

on_the_cluster = pytest.mark.parametrize("redis_kind", ["cluster"], indirect=True)


def shard_of(rdb: redis.Redis, key: str) -> int:
    node = rdb.get_node_from_key(key)  # type: ignore[attr-defined]
    return int(node.port)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in lines
        if line.startswith("slack_assistant_") and " " in line
    }


@on_the_cluster
def test_workspaces_on_every_shard_are_answered_by_one_worker(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    bot = start_bot()
    sender = SlackSender(bot.url)
    openai_fake.script(*[Reply(text=f"answer {i}", first_token_delay=0.2) for i in range(6)])
    # Two threads per workspace, all sent at once: six turns waiting on the model together.
    sent = [
        (team, f"C0{team[2:]}", mention(f"C0{team[2:]}", user, f"{team} from {user}"))
        for team in TEAMS
        for user in (ALICE, BOB)
    ]
    for team, _, event in sent:
        assert sender.send_event(event, team_id=team).status == 200

    for _team, channel, event in sent:
        [reply] = answers(slack, channel, event["ts"])
        assert reply.text.startswith("answer ")
    channels = {channel for _, channel, _e in sent}
    assert sorted(m.text for c in channels for m in slack.messages(c)) == [f"answer {i}" for i in range(6)]
    # Each workspace's thread map and turn stream sit on its own shard; all three shards served.
    streams = [f"sa:{{-:{team}}}:turns" for team in TEAMS]
    assert len({shard_of(rdb, s) for s in streams}) == 3
    for team, channel, event in sent:
        thread = f"sa:{{-:{team}}}:thread:c:{channel}:{event['ts']}"
        assert rdb.hget(thread, "conversation_id") in openai_fake.conversations
        assert shard_of(rdb, thread) == shard_of(rdb, f"sa:{{-:{team}}}:turns")
    assert set(rdb.smembers("sa:teams")) == {f"-:{team}" for team in TEAMS}
    # Every turn finished: acked and deleted from its stream, the queue read across the shards as empty.
    slack.wait_for(lambda: all(rdb.xlen(s) == 0 for s in streams))
    with urllib.request.urlopen(f"{bot.url}/readyz", timeout=5) as resp:
        assert resp.status == 200
    metrics = scrape(bot.url)
    assert metrics["slack_assistant_redis_up"] == 1.0
    assert metrics["slack_assistant_queue_depth"] == 0.0


@on_the_cluster
def test_orphans_of_workspaces_on_every_shard_are_swept(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    """The sweep SCANs every primary: ledgers of workspaces on different shards are all found."""
    long_ago = json.dumps({"kind": "vector_store", "created_at": 1_000_000_000})
    stores = {}
    for team in TEAMS:
        stores[team] = openai_fake.add_vector_store({f"{team}.txt": team.encode()})
        rdb.hset(f"sa:{{-:{team}}}:uploads:c:C0OLD:1.000001", stores[team], long_ago)
    ledgers = [f"sa:{{-:{team}}}:uploads:c:C0OLD:1.000001" for team in TEAMS]
    assert len({shard_of(rdb, key) for key in ledgers}) == 3

    start_bot(orphan_sweep_hours="0.0005")  # about every 2 s
    slack.wait_for(lambda: not set(stores.values()) & set(openai_fake.vector_stores), timeout=20)
    slack.wait_for(lambda: all(rdb.exists(key) == 0 for key in ledgers))


@pytest.mark.parametrize("redis_kind", ["cluster", "sentinel"], indirect=True)
def test_check_reaches_the_cluster_or_the_sentinels_primary(
    slack: FakeSlack, openai_fake: FakeOpenAI, redis_target: RedisTarget, redis_kind: str, tmp_path: Path
) -> None:
    url = redis_target.url
    if redis_kind == "sentinel":  # two Sentinels named, the first of them down: the second answers
        url = url.replace("redis+sentinel://", f"redis+sentinel://127.0.0.1:{free_port()},")
    env = bot_env(
        slack_api_url=slack.api_url, openai_base_url=openai_fake.base_url, redis_url=url, **redis_target.env
    )
    del env["SLACK_SIGNING_SECRET"]
    row = run_check(env, tmp_path).rows["redis"]
    assert row.outcome == "pass"
    if redis_kind == "cluster":
        assert row.detail.endswith("(a node of the cluster) (cluster)")
        return
    assert row.detail.endswith(f" at mymaster via Sentinel {url.split('//')[1].split('/')[0]}")
    # A Sentinel URL that names no service is a configuration problem, told without the URL's password.
    env["REDIS_URL"] = "redis+sentinel://:redis-pw-never-printed@127.0.0.1:1"
    env.pop("REDIS_CLUSTER", None)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("slack-assistant")), "check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "REDIS_URL: a Sentinel URL names its service" in done.stdout + done.stderr
    assert REDIS_PASSWORD not in done.stdout + done.stderr


def test_a_sentinel_failover_is_followed_and_the_thread_continues(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, tmp_path: Path
) -> None:
    """The primary dies (SIGKILL); the Sentinel promotes its replica; the bot, which only knows the
    Sentinel's address, finds the new primary and continues the thread from the replicated map."""
    servers = RedisSentinelServers(tmp_path / "sentinel", replica=True).start()
    try:
        bot = start_bot(servers.url)
        sender = SlackSender(bot.url)
        root = mention(CHANNEL, ALICE, "remember: the code word is heron")
        sender.send_event(root)
        answers(slack, CHANNEL, root["ts"])
        primary = servers.client()
        assert primary.wait(1, 5000) == 1  # everything written so far is on the replica
        primary.close()
        assert servers.primary.proc is not None
        servers.primary.proc.kill()
        slack.wait_for(lambda: servers.primary_port() == servers.replica_port, timeout=30)

        # The Sentinel names the promoted replica: the next connection the bot makes goes there.
        assert (
            sender.send_event(message(CHANNEL, BOB, "what is the code word?", thread_ts=root["ts"])).status
            == 200
        )
        msgs = answers(slack, CHANNEL, root["ts"], count=2, timeout=30)
        assert msgs[-1].text == "Echo: what is the code word?"
        assert len(openai_fake.conversations) == 1
        assert user_texts(openai_fake.model_inputs[-1]["input_items"])[0] == (
            "user: remember: the code word is heron"
        )
    finally:
        servers.stop()


def test_a_cluster_outage_keeps_the_bot_up_tells_users_and_resumes(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, tmp_path: Path
) -> None:
    """Every node down: redis-py's cluster client then fails with its own exception type, not a RedisError;
    the bot must treat it as any Redis outage (ack, tell the user, report unhealthy, recover)."""
    cluster = RedisClusterServers(tmp_path / "flaky-cluster").start()
    try:
        bot = start_bot(cluster.url, REDIS_CLUSTER="true", **FAST)
        sender = SlackSender(bot.url)
        first = mention(CHANNEL, ALICE, "hello cluster")
        sender.send_event(first)
        answers(slack, CHANNEL, first["ts"])
        cluster.stop()

        event = mention(CHANNEL, ALICE, "anyone home?")
        assert sender.send_event(event).status == 200
        slack.wait_for(
            lambda: any("briefly unavailable" in m.text for m in slack.messages(CHANNEL, event["ts"]))
        )
        assert healthz(bot) == 503

        cluster.restart()
        bot.wait_healthy()
        later = mention(CHANNEL, ALICE, "back now?")
        sender.send_event(later)
        assert [m.text for m in answers(slack, CHANNEL, later["ts"], timeout=20)] == ["Echo: back now?"]
        assert bot.proc is not None and bot.proc.poll() is None
        assert openai_fake.model_inputs[-1] and len(openai_fake.model_inputs) == 2
    finally:
        cluster.stop()
