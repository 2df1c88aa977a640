"""`slack-assistant check` as a real process against the fake Slack, the fake OpenAI and real Redis servers:
one row per check, a hint under each failure, exit status 1 on any failure, and never a secret."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from bot.preflight.check import Outcome, Report
from bot.preflight.check import Row as CheckRow
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import CLIENT_ID, CLIENT_SECRET, FakeSlack, manifest_bot_scopes
from tests.harness import BOT_TOKEN, SECRETS, TEAM, RedisServer, bot_env, free_port

ROWS = (
    "slack bot token",
    "slack scopes",
    "slack app token",
    "openai key",
    "openai model",
    "knowledge stores",
    "redis",
    "redis persistence",
)
REDIS_PASSWORD = "redis-pw-never-printed"


@dataclass(frozen=True)
class Row:
    outcome: str
    detail: str
    hint: str


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str
    rows: dict[str, Row]


def parse_table(stdout: str) -> dict[str, Row]:
    """The table's rows by check name (columns are where the header puts them), hints attached."""
    lines = stdout.splitlines()
    header = lines[0]
    result_at, detail_at = header.index("RESULT"), header.index("DETAIL")
    rows: dict[str, Row] = {}
    last = ""
    for line in lines[1:]:
        if not line.strip():
            break
        if line.startswith(" "):
            assert line.strip().startswith("hint: ")
            rows[last] = Row(rows[last].outcome, rows[last].detail, line.strip().removeprefix("hint: "))
            continue
        last = line[:result_at].strip()
        rows[last] = Row(line[result_at:detail_at].strip(), line[detail_at:], "")
    return rows


@pytest.fixture(scope="module")
def persistent_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-aof"), appendonly=True).start()
    yield server.url
    server.stop()


@pytest.fixture
def env(slack: FakeSlack, openai_fake: FakeOpenAI, persistent_redis: str) -> dict[str, str]:
    environment = bot_env(
        slack_api_url=slack.api_url, openai_base_url=openai_fake.base_url, redis_url=persistent_redis
    )
    del environment["SLACK_SIGNING_SECRET"]  # the check needs none
    return environment


def run_check(env: dict[str, str], cwd: Path, *args: str, secrets: tuple[str, ...] = ()) -> Result:
    exe = Path(sys.executable).with_name("slack-assistant")
    done = subprocess.run(
        [str(exe), "check", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    leaked = [s for s in (*SECRETS, REDIS_PASSWORD, *secrets) if s in output]
    assert not leaked, "a secret reached check's output"
    assert "Traceback" not in output, output
    return Result(done.returncode, done.stdout, done.stderr, parse_table(done.stdout))


def outcomes(result: Result) -> dict[str, str]:
    return {name: row.outcome for name, row in result.rows.items()}


def test_everything_working_passes_with_exit_0(
    slack: FakeSlack, openai_fake: FakeOpenAI, env: dict[str, str], tmp_path: Path
) -> None:
    store = openai_fake.add_vector_store({"handbook.md": b"# Handbook"})
    env["KNOWLEDGE_VECTOR_STORE_IDS"] = store
    result = run_check(env, tmp_path)

    assert result.status == 0, result.stdout
    assert list(result.rows) == list(ROWS)
    assert set(outcomes(result).values()) == {"pass"}
    rows = result.rows
    assert rows["slack bot token"].detail == f"team Fake Team ({TEAM}), bot @assistant (U0BOT)"
    scopes = len(manifest_bot_scopes())
    assert rows["slack scopes"].detail == f"all {scopes} bot scopes of manifest.yml granted"
    assert rows["openai model"].detail.startswith("gpt-5.1 ")
    assert rows["knowledge stores"].detail == f"1 of 1 usable: {store}"
    assert rows["redis"].detail.startswith("Redis ")
    assert rows["redis persistence"].detail == "append-only file on"
    assert result.stdout.rstrip().endswith("all checks passed")
    # What the services saw: the bot token on auth.test, the app token on apps.connections.open and no
    # socket opened with its URL, the model and the store looked up.
    assert [c.token for c in slack.calls_to("auth.test")] == [BOT_TOKEN]
    assert len(slack.calls_to("apps.connections.open")) == 1
    assert slack.socket_connections == 0
    paths = [(r["method"], r["path"]) for r in openai_fake.requests]
    assert paths == [("GET", "/v1/models/gpt-5.1"), ("GET", f"/v1/vector_stores/{store}")]


def test_needs_neither_the_app_token_nor_the_signing_secret(env: dict[str, str], tmp_path: Path) -> None:
    del env["SLACK_APP_TOKEN"]
    result = run_check(env, tmp_path)
    assert result.status == 0, result.stdout + result.stderr
    assert result.rows["slack app token"] == Row(
        "skip", "SLACK_APP_TOKEN not set (only Socket Mode needs it)", ""
    )
    assert result.rows["knowledge stores"].outcome == "skip"


def test_a_token_slack_refuses(slack: FakeSlack, env: dict[str, str], tmp_path: Path) -> None:
    env["SLACK_BOT_TOKEN"] = "xoxb-revoked-0000-never-printed"
    env["SLACK_APP_TOKEN"] = "xapp-wrong-0000-never-printed"
    result = run_check(env, tmp_path, secrets=(env["SLACK_BOT_TOKEN"], env["SLACK_APP_TOKEN"]))

    assert result.status == 1
    token = result.rows["slack bot token"]
    assert (token.outcome, token.detail) == ("FAIL", "Slack refused it: invalid_auth")
    assert "SLACK_BOT_TOKEN" in token.hint and "OAuth & Permissions" in token.hint
    assert result.rows["slack scopes"].outcome == "skip"
    app = result.rows["slack app token"]
    assert (app.outcome, app.detail) == ("FAIL", "Slack refused it: invalid_auth")
    assert "connections:write" in app.hint
    assert outcomes(result)["openai key"] == "pass"  # the rest is still checked
    assert result.stdout.rstrip().endswith("2 checks failed")
    assert [c.error for c in slack.calls_to("auth.test")] == ["invalid_auth"]


def test_a_missing_scope_is_named(slack: FakeSlack, env: dict[str, str], tmp_path: Path) -> None:
    granted = [s for s in manifest_bot_scopes() if s != "files:write"]
    slack.set_bot_scopes(*granted)
    result = run_check(env, tmp_path)

    assert result.status == 1
    scopes = result.rows["slack scopes"]
    assert scopes.outcome == "FAIL"
    assert scopes.detail == f"missing files:write ({len(granted)} of {len(granted) + 1} granted)"
    assert "reinstall the app" in scopes.hint
    assert [n for n, o in outcomes(result).items() if o == "FAIL"] == ["slack scopes"]


def test_scopes_against_another_manifest(env: dict[str, str], tmp_path: Path) -> None:
    wanted = [*manifest_bot_scopes(), "reactions:write"]
    manifest = tmp_path / "other-manifest.yml"
    manifest.write_text("oauth_config:\n  scopes:\n    bot:\n" + "".join(f"      - {s}\n" for s in wanted))
    result = run_check(env, tmp_path, "--manifest", str(manifest))
    assert result.status == 1
    assert (
        result.rows["slack scopes"].detail
        == f"missing reactions:write ({len(wanted) - 1} of {len(wanted)} granted)"
    )

    manifest.write_text("display_information:\n  name: no scopes here\n")
    result = run_check(env, tmp_path, "--manifest", str(manifest))
    assert result.status == 0  # cannot tell: not a failure
    assert result.rows["slack scopes"].outcome == "unknown"
    assert "--manifest" in result.rows["slack scopes"].hint


def test_an_unknown_model(env: dict[str, str], tmp_path: Path) -> None:
    env["ASSISTANT_MODEL"] = "gpt-4-imaginary"
    result = run_check(env, tmp_path)

    assert result.status == 1
    assert result.rows["openai key"].outcome == "pass"  # a 404 means the key was accepted
    model = result.rows["openai model"]
    assert (model.outcome, model.detail) == ("FAIL", "gpt-4-imaginary: no such model (404)")
    assert "ASSISTANT_MODEL" in model.hint


def test_a_model_the_project_lost_access_to(
    openai_fake: FakeOpenAI, env: dict[str, str], tmp_path: Path
) -> None:
    openai_fake.set_models("gpt-5-mini")
    result = run_check(env, tmp_path)
    assert result.status == 1
    assert result.rows["openai model"].detail == "gpt-5.1: no such model (404)"


def test_an_openai_key_that_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    env["OPENAI_API_KEY"] = "sk-revoked-key-never-printed"
    env["KNOWLEDGE_VECTOR_STORE_IDS"] = "vs_abc"
    result = run_check(env, tmp_path, secrets=(env["OPENAI_API_KEY"],))

    assert result.status == 1
    key = result.rows["openai key"]
    assert (key.outcome, key.detail) == ("FAIL", "refused (401)")
    assert "OPENAI_API_KEY" in key.hint
    assert result.rows["openai model"] == Row("skip", "needs a working OpenAI key", "")
    assert result.rows["knowledge stores"] == Row("skip", "needs a working OpenAI key", "")


def test_redis_down(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env["REDIS_URL"] = f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    result = run_check(env, tmp_path)

    assert result.status == 1
    row = result.rows["redis"]
    assert row.outcome == "FAIL"
    assert row.detail == f"nothing answered at 127.0.0.1:{port} (ConnectionError)"
    assert "REDIS_URL" in row.hint
    assert result.rows["redis persistence"] == Row("skip", "needs a reachable Redis", "")


def test_a_silent_redis_host_fails_within_the_timeout(env: dict[str, str], tmp_path: Path) -> None:
    """A host that takes the connection but never answers (a hung server, a black-holing proxy)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
        port = silent.getsockname()[1]
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        result = run_check(env, tmp_path, "--timeout", "1")

    assert result.status == 1
    row = result.rows["redis"]
    assert row.outcome == "FAIL"
    # The socket timeout or the check's own deadline, whichever fires first: both name the host.
    assert f"127.0.0.1:{port}" in row.detail + row.hint
    assert result.rows["redis persistence"].outcome == "skip"


def test_a_redis_that_keeps_nothing_fails(
    env: dict[str, str], redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    env["REDIS_URL"] = redis_url  # the suite's throwaway Redis: no snapshots, no append-only file
    result = run_check(env, tmp_path)

    assert result.status == 1
    row = result.rows["redis persistence"]
    assert (row.outcome, row.detail) == ("FAIL", "none: append-only off and no snapshots")
    assert "appendonly yes" in row.hint
    rdb.config_set("save", "3600 1")
    try:
        result = run_check(env, tmp_path)
    finally:
        rdb.config_set("save", "")
    assert result.status == 0
    assert result.rows["redis persistence"].detail.startswith("snapshots only (save 3600 1)")


def test_a_managed_redis_without_config_is_unknown_not_a_failure(env: dict[str, str], tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "managed", extra_args=("--rename-command", "CONFIG", "")).start()
    try:
        env["REDIS_URL"] = server.url
        result = run_check(env, tmp_path)
    finally:
        server.stop()

    assert result.status == 0, result.stdout
    row = result.rows["redis persistence"]
    assert (row.outcome, row.detail) == ("unknown", "append-only off; snapshot schedule unreadable")
    assert "provider's console" in row.hint


def test_missing_and_expired_knowledge_stores(
    openai_fake: FakeOpenAI, env: dict[str, str], tmp_path: Path
) -> None:
    good = openai_fake.add_vector_store({"handbook.md": b"# Handbook"})
    old = openai_fake.add_vector_store({"old.md": b"# Old"})
    openai_fake.expire_vector_store(old)
    env["KNOWLEDGE_VECTOR_STORE_IDS"] = f"{good},vs_deleted_long_ago,{old}"
    result = run_check(env, tmp_path)

    assert result.status == 1
    row = result.rows["knowledge stores"]
    assert row.outcome == "FAIL"
    assert row.detail == f"1 of 3 usable; missing: vs_deleted_long_ago; expired: {old}"
    assert "KNOWLEDGE_VECTOR_STORE_IDS" in row.hint and "expired store" in row.hint
    # Only looked at, never changed.
    assert {r["method"] for r in openai_fake.requests} == {"GET"}


def test_the_app_token_check_opens_no_socket_and_respects_slacks_tier_1(
    slack: FakeSlack, env: dict[str, str], tmp_path: Path
) -> None:
    assert run_check(env, tmp_path).status == 0
    # apps.connections.open allows about one call a minute: a second check right away is told so, and that
    # is not the token's fault.
    again = run_check(env, tmp_path)
    assert again.status == 0
    assert again.rows["slack app token"] == Row(
        "unknown", "Slack rate-limited the check", "run it again in a minute"
    )
    assert len(slack.calls_to("apps.connections.open")) == 2
    assert slack.socket_connections == 0


def test_configuration_problems_stop_it_before_any_call(slack: FakeSlack, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("slack-assistant")
    done = subprocess.run(
        [str(exe), "check"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SLACK_BOT_TOKEN is not set" in done.stderr and "OPENAI_API_KEY is not set" in done.stderr
    assert "SLACK_APP_TOKEN" not in done.stderr and "SLACK_SIGNING_SECRET" not in done.stderr
    assert slack.calls == []


def test_the_table_blanks_a_secret_that_slipped_into_a_row() -> None:
    report = Report(
        [CheckRow("redis", Outcome.FAIL, "refused redis://u:hunter2@db", "the password hunter2 is wrong")],
        secrets=("hunter2",),
    )
    table = report.table()
    assert "hunter2" not in table
    assert "redis://u:[redacted]@db" in table and table.endswith("1 check failed")


def test_oauth_mode_checks_the_app_credentials_and_the_requested_scopes(
    slack: FakeSlack, env: dict[str, str], tmp_path: Path
) -> None:
    env.update(SLACK_BOT_TOKEN="", SLACK_CLIENT_ID=CLIENT_ID, SLACK_CLIENT_SECRET=CLIENT_SECRET)
    result = run_check(env, tmp_path, secrets=(CLIENT_SECRET,))
    assert result.status == 0, result.stdout
    assert result.rows["slack app credentials"] == Row(
        "pass", f"client {CLIENT_ID} known to Slack (a made-up code was refused: invalid_code)", ""
    )
    assert result.rows["slack scopes"].outcome == "pass"
    assert "slack bot token" not in result.rows
    (probe,) = slack.calls_to("oauth.v2.access")
    assert probe.error == "invalid_code" and probe.token is None

    env["SLACK_CLIENT_SECRET"] = "wrong-secret-never-printed"
    env["SLACK_SCOPES"] = "chat:write,commands"
    result = run_check(env, tmp_path, secrets=("wrong-secret-never-printed",))
    assert result.status == 1
    credentials, scopes = result.rows["slack app credentials"], result.rows["slack scopes"]
    assert (credentials.outcome, credentials.detail) == ("FAIL", "Slack refused them: bad_client_secret")
    assert "SLACK_CLIENT_SECRET" in credentials.hint
    assert scopes.outcome == "FAIL" and scopes.detail.startswith("SLACK_SCOPES leaves out app_mentions:read")


@pytest.mark.parametrize("style", ["chat_completions", "responses"])
def test_a_held_backend_is_checked_with_the_request_it_makes(
    openai_fake: FakeOpenAI, env: dict[str, str], tmp_path: Path, style: str
) -> None:
    """On a server with no Conversations API (issue 17) the check makes one minimal request of the API
    ASSISTANT_BACKEND names, storing nothing: the models endpoint says nothing about that API."""
    openai_fake.set_api_style(style)
    env["ASSISTANT_BACKEND"] = style
    result = run_check(env, tmp_path)

    assert result.status == 0, result.stdout
    assert list(result.rows) == list(ROWS)
    path = "/v1/chat/completions" if style == "chat_completions" else "/v1/responses"
    model = result.rows["openai model"]
    assert (model.outcome, model.detail) == (
        "pass",
        f"gpt-5.1 answered POST {path} (ASSISTANT_BACKEND={style}, nothing stored)",
    )
    assert result.rows["knowledge stores"].outcome == "skip"
    assert [(r["method"], r["path"]) for r in openai_fake.requests] == [("POST", path)]
    assert openai_fake.spec_violations == []


def test_a_held_backend_naming_an_api_the_server_lacks_or_a_model_it_lacks(
    openai_fake: FakeOpenAI, env: dict[str, str], tmp_path: Path
) -> None:
    openai_fake.set_api_style("chat_completions")
    env["ASSISTANT_BACKEND"] = "responses"  # a chat-only server (Ollama, llama.cpp)
    result = run_check(env, tmp_path)
    assert result.status == 1
    assert result.rows["openai key"].outcome == "pass"
    model = result.rows["openai model"]
    assert (model.outcome, model.detail) == ("FAIL", "gpt-5.1: POST /v1/responses answered 404")
    assert "ASSISTANT_BACKEND" in model.hint and "ASSISTANT_MODEL" in model.hint

    env["ASSISTANT_BACKEND"] = "chat_completions"
    env["ASSISTANT_MODEL"] = "llama-imaginary"
    result = run_check(env, tmp_path)
    model = result.rows["openai model"]
    assert (model.outcome, model.detail) == (
        "FAIL",
        "llama-imaginary: POST /v1/chat/completions answered 404",
    )


def test_a_held_backends_server_refusing_the_key(
    openai_fake: FakeOpenAI, env: dict[str, str], tmp_path: Path
) -> None:
    openai_fake.set_api_style("responses")
    env["ASSISTANT_BACKEND"] = "responses"
    env["OPENAI_API_KEY"] = "sk-wrong-local-key-never-printed"
    result = run_check(env, tmp_path, secrets=(env["OPENAI_API_KEY"],))
    assert result.status == 1
    key = result.rows["openai key"]
    assert key.outcome == "FAIL" and key.detail.endswith("refused it (401)")
    assert "OPENAI_API_KEY" in key.hint
    assert result.rows["openai model"] == Row("skip", "needs a key the server takes", "")
