"""Fixtures: a real Redis, the fake Slack and fake OpenAI on 127.0.0.1, and the bot as a real process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.harness import BotProcess, RedisServer, SlackSender, bot_env
from tests.redis_topologies import RedisClusterServers, RedisSentinelServers

# `fake` and `client` for the fake OpenAI's own tests (a test module may define its own `fake`).
pytest_plugins = ["tests.fakes.openai_fixtures"]

# The suite runs on `-n auto` (pyproject.toml): a worker per core that is free now. Its end-to-end tests
# are mostly bot processes starting and waiting, one core's worth each; on a machine where another process
# keeps a core busy, fewer workers keep each test the core it was written to need.
CPU_SAMPLE_SECONDS = 0.5


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    import psutil

    cores = psutil.cpu_count() or 1
    busy = psutil.cpu_percent(interval=CPU_SAMPLE_SECONDS) / 100 * cores
    return max(1, cores - round(busy))


@pytest.fixture(autouse=True)
def _no_secret_in_any_bot_log() -> Iterator[None]:
    """Every bot process a test started (through `start_bot` or a BotProcess of its own) is stopped at
    teardown, and its log must hold no token and no signing secret (SECRETS, and its environment's)."""
    BotProcess.take_started()
    yield
    bots = BotProcess.take_started()
    for bot in bots:
        bot.stop()
    for bot in bots:
        bot.assert_no_secrets()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def _redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A real three-shard Redis Cluster, started the first time a test asks for it."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def _redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelServers]:
    """A real primary watched by a real Sentinel, started the first time a test asks for it."""
    sentinel = RedisSentinelServers(tmp_path_factory.mktemp("redis-sentinel")).start()
    yield sentinel
    sentinel.stop()


@dataclass
class RedisTarget:
    """The Redis a test's bots use: its REDIS_URL, the other variables that topology needs, and a client
    for the test's own reads."""

    url: str
    client: Callable[[], redis.Redis]
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """What a test is parametrized with (`on_topologies`), else TEST_REDIS_TOPOLOGY ("cluster" or
    "sentinel": every test that uses `start_bot` and `rdb` runs there), else "single" (the session's
    server)."""
    return str(getattr(request, "param", os.environ.get("TEST_REDIS_TOPOLOGY", "single")))


@pytest.fixture
def redis_target(request: pytest.FixtureRequest, redis_kind: str, redis_url: str) -> RedisTarget:
    if redis_kind == "cluster":
        cluster: RedisClusterServers = request.getfixturevalue("_redis_cluster")
        return RedisTarget(cluster.url, cluster.client, {"REDIS_CLUSTER": "true"})
    if redis_kind == "sentinel":
        sentinel: RedisSentinelServers = request.getfixturevalue("_redis_sentinel")
        return RedisTarget(sentinel.url, sentinel.client)
    return RedisTarget(redis_url, lambda: redis.Redis.from_url(redis_url, decode_responses=True))


@pytest.fixture
def rdb(redis_target: RedisTarget) -> Iterator[redis.Redis]:
    client = redis_target.client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def _slack_server() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    # Every SlackSender mints its trigger_ids with this fake and tells it about the users' messages.
    SlackSender.default_trigger_ids = fake.new_trigger_id
    SlackSender.default_on_event = fake.observe_event
    SlackSender.default_response_urls = fake.new_response_url
    SlackSender.default_responses = fake.responses
    yield fake
    SlackSender.default_trigger_ids = SlackSender.default_on_event = None
    SlackSender.default_response_urls = SlackSender.default_responses = None
    fake.stop()


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def slack(_slack_server: FakeSlack) -> FakeSlack:
    _slack_server.reset()
    return _slack_server


@pytest.fixture
def openai_fake(_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    _openai_server.reset()
    yield _openai_server
    # Every request the bot sent must be one the real API accepts.
    assert _openai_server.spec_violations == []


BotFactory = Callable[..., BotProcess]


@pytest.fixture
def start_bot(
    slack: FakeSlack, openai_fake: FakeOpenAI, rdb: redis.Redis, redis_target: RedisTarget, tmp_path: Path
) -> Iterator[BotFactory]:
    """Start bot processes: HTTP mode, Socket Mode with `http=False`, or `slack-assistant worker` with
    `worker=True`; on the test Redis (`redis_target`), or on the one at `url`. Extra keyword arguments
    become environment variables."""
    bots: list[BotProcess] = []

    def start(url: str | None = None, *, http: bool = True, worker: bool = False, **env: str) -> BotProcess:
        environment = bot_env(
            slack_api_url=slack.api_url,
            openai_base_url=openai_fake.base_url,
            redis_url=url or redis_target.url,
            **{**(redis_target.env if url is None else {}), **env},
        )
        if not http or worker:
            del environment["SLACK_SIGNING_SECRET"]  # Socket Mode and workers need none
        if worker:
            del environment["SLACK_APP_TOKEN"]  # nor does a worker need the app token
        bot = BotProcess(environment, workdir=tmp_path).start(http=http, worker=worker)
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        bot.stop()
    for bot in bots:
        bot.assert_no_secrets()
        logs = bot.logs()
        assert "Traceback" not in logs, logs[-3000:]


@pytest.fixture
def bot(start_bot: BotFactory) -> BotProcess:
    return start_bot()


@pytest.fixture
def sender(bot: BotProcess) -> SlackSender:
    return SlackSender(bot.url)
