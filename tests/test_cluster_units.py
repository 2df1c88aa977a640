"""Redis Cluster and Sentinel, piece by piece: every key of a workspace in its one slot, REDIS_URL's Sentinel
form and the settings around it, and the per-slot stream reads against the suite's real three-shard cluster.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from bot.errors import ConfigError
from bot.keys import INSTALLS_KEY, ORPHAN_SWEEP_LOCK, PREFIX, TEAMS_KEY, Keys, installation, rotation_lock
from bot.queue.connection import SENTINEL_PORT, SentinelURL, open_redis
from bot.queue.streams import TurnStreams
from bot.settings import Mode, load_settings
from tests.redis_topologies import RedisClusterServers


def _every_key(keys: Keys) -> dict[str, str]:
    """Every key `Keys` names for this workspace (each method called with placeholder arguments)."""
    found: dict[str, str] = {}
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or isinstance(inspect.getattr_static(Keys, name), staticmethod):
            continue
        if isinstance(member, property) or not callable(member):
            continue
        params = list(inspect.signature(member).parameters)[1:]
        built = getattr(keys, name)(*(f"x{i}" for i in range(len(params))))
        if isinstance(built, str) and built.startswith(f"{PREFIX}:"):  # a key (not e.g. a predicate)
            found[name] = built
    return found


@pytest.mark.parametrize("keys", [Keys("T0TEAM1"), Keys("T0TEAM1", "E0ORG"), Keys("T:odd}{", "E")])
def test_every_key_of_a_workspace_is_in_the_workspace_slot(keys: Keys) -> None:
    every = _every_key(keys)
    assert len(every) >= 25  # the introspection found the key builders
    # The installation and its token-rotation lock (module functions of bot.keys) too.
    every["installation"] = installation(keys.enterprise_id, keys.team_id)
    every["rotation_lock"] = rotation_lock(keys.enterprise_id, keys.team_id)
    slots = {name: key_slot(key.encode()) for name, key in every.items()}
    assert set(slots.values()) == {key_slot(keys.turns().encode())}, slots
    # Another workspace's keys are elsewhere (the hash tag holds the workspace, not a constant).
    assert key_slot(Keys("T0OTHER").turns().encode()) != key_slot(Keys("T0TEAM1").turns().encode())
    # The global keys carry no hash tag: each is only ever used alone.
    assert "{" not in TEAMS_KEY + ORPHAN_SWEEP_LOCK + INSTALLS_KEY


def test_the_sentinel_url_form() -> None:
    url = "redis+sentinel://app:p%40ss@s1:26380,s2,[::1]:26381/my%20service/2?sentinel_password=sp"
    target = SentinelURL.parse(url)
    assert target.sentinels == [("s1", 26380), ("s2", SENTINEL_PORT), ("::1", 26381)]
    assert (target.service, target.db, target.username, target.password) == ("my service", 2, "app", "p@ss")
    assert target.sentinel_password == "sp" and not target.tls
    plain = SentinelURL.parse("rediss+sentinel://sentinel.internal/cache")
    assert plain == SentinelURL([("sentinel.internal", SENTINEL_PORT)], "cache", tls=True)
    for bad in (
        "redis+sentinel://user:hunter2@s1:26379",  # no service
        "redis+sentinel://user:hunter2@s1:26379/svc/zero",
        "redis+sentinel://user:hunter2@s1:port/svc",
        "redis+sentinel://user:hunter2@s1/svc?socket_timeout=1",
    ):
        with pytest.raises(ValueError) as err:
            SentinelURL.parse(bad)
        assert "hunter2" not in str(err.value)
    with pytest.raises(ValueError):
        open_redis("redis+sentinel:///svc", cluster=False, options={})  # no Sentinel named


def test_redis_settings_are_checked_at_start_up_without_echoing_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    with pytest.raises(ConfigError, match="REDIS_CLUSTER: needs REDIS_URL"):
        load_settings(Mode.WORKER)
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://:hunter2@s1:26379/svc/0")
    with pytest.raises(ConfigError, match="REDIS_CLUSTER: a Sentinel URL names one primary") as err:
        load_settings(Mode.WORKER)
    assert "hunter2" not in str(err.value)
    monkeypatch.delenv("REDIS_CLUSTER")
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://:hunter2@s1:26379")
    with pytest.raises(ConfigError, match="REDIS_URL: a Sentinel URL names its service") as err:
        load_settings(Mode.WORKER)
    assert "hunter2" not in str(err.value)
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://s1:26379,s2:26379/svc/0")
    assert not load_settings(Mode.WORKER).redis_cluster
    monkeypatch.setenv("REDIS_URL", "redis://node1:6379/0")
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    assert load_settings(Mode.WORKER).redis_cluster


def _same_slot_teams() -> tuple[str, str]:
    """Two workspace ids whose streams hash to one slot (so one XREADGROUP may read both)."""
    seen: dict[int, str] = {}
    for n in itertools.count():
        team = f"T{n:06d}"
        slot = key_slot(Keys(team).turns().encode())
        if slot in seen:
            return seen[slot], team
        seen[slot] = team
    raise AssertionError("unreachable")


def test_stream_reads_are_split_per_slot_and_every_shard_is_read(
    _redis_cluster: RedisClusterServers,
) -> None:
    twin_a, twin_b = _same_slot_teams()
    teams = ["T0TEAM1", "T0OTHER", "T0EXT", twin_a, twin_b]

    async def scenario() -> tuple[set[int], dict[str, int], list[tuple[str, str]], dict[str, Any]]:
        cluster = RedisCluster.from_url(_redis_cluster.url, decode_responses=True)
        try:
            await cluster.flushdb()
            streams = [Keys(team).turns() for team in teams]
            for stream in streams:
                await cluster.xgroup_create(stream, "workers", id="0", mkstream=True)
            nodes = {cluster.get_node_from_key(s).port for s in streams}
            await cluster.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
            reader = TurnStreams(cluster, "workers", "consumer-1", block_ms=200)
            # Nothing yet: a read waits for its block time and comes back empty.
            assert await reader.read(streams, 10) == []
            for stream in streams:
                await cluster.xadd(stream, {"thread": stream})
            got: list[tuple[str, str]] = []
            while len(got) < len(streams):
                for stream, entries in await reader.read(streams, 10):
                    got += [(stream, fields["thread"]) for _, fields in entries]
            reader.close()
            stats = await cluster.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
            pending = {s: int((await cluster.xpending(s, "workers"))["pending"]) for s in streams}
            return nodes, pending, got, stats
        finally:
            await cluster.aclose()

    nodes, pending, got, stats = asyncio.run(scenario())
    assert len(nodes) == 3  # the workspaces' streams are on all three shards
    # Every entry came back once, from its own stream, and is pending for the reader (delivered, unacked).
    assert sorted(got) == sorted((Keys(t).turns(), Keys(t).turns()) for t in teams)
    assert set(pending.values()) == {1}
    # Each read went straight to its slot's node: the client never asked a node which arguments are keys
    # (COMMAND GETKEYS); one read at least per slot.
    assert not any("cmdstat_command" in node for node in stats.values())
    reads = sum(int(node.get("cmdstat_xreadgroup", {}).get("calls", 0)) for node in stats.values())
    assert reads >= 4
