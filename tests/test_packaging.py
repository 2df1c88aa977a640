"""Packaging: the Dockerfile, docker-compose.yml and the Slack CLI's `.slack/` hooks.

No Docker engine here (nor in CI), so `docker compose config` cannot run: the compose file is validated
against the official Compose Specification schema instead, vendored as tests/compose-spec.json from
github.com/compose-spec/compose-spec, schema/compose-spec.json at commit
170098ba07d9f53c383a41bfd4c5166b0a4529a6 (2026-06-23; Apache-2.0)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, one string each (continuation lines joined, comments dropped)."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(i.split()) for i in "\n".join(lines).replace("\\\n", " ").splitlines() if i.strip()]


def _stages(instructions: list[str]) -> list[list[str]]:
    stages: list[list[str]] = []
    for ins in instructions:
        if ins.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _healthcheck_url(test: list[str]) -> str:
    match = re.search(r"https?://[^'\"\s]+", " ".join(test))
    assert match, test
    return match.group(0)


# --- docker-compose.yml ------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(_compose())]
    assert errors == []


def test_compose_schema_rejects_a_broken_file() -> None:
    """The vendored schema really checks: a misspelt key and a wrong type are errors."""
    broken = _compose()
    broken["services"]["worker"]["restart_policy"] = "always"
    broken["services"]["redis"]["volumes"] = "redis-data:/data"
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    errors = sorted(e.message for e in validator.iter_errors(broken))
    assert len(errors) == 2 and "'restart_policy'" in errors[1] and "not of type 'array'" in errors[0]


def test_compose_runs_a_front_a_worker_and_a_persistent_redis() -> None:
    services = _compose()["services"]
    assert set(services) == {"front", "worker", "redis"}
    front, worker, redis = services["front"], services["worker"], services["redis"]

    assert front["command"] == ["slack-assistant", "--http", "--port", "3000"]
    assert str(front["environment"]["WORKER_CONCURRENCY"]) == "0"
    assert "3000:3000" in front["ports"]
    assert worker["command"] == ["slack-assistant", "worker", "--port", "3001"]
    assert "ports" not in worker  # scaled with --scale worker=N: no host port to fight over
    for bot in (front, worker):
        assert bot["env_file"] == ".env"
        assert bot["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
        assert bot["build"] == "."

    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    (volume,) = redis["volumes"]
    name, target = volume.split(":")
    assert target == "/data" and name in _compose()["volumes"]  # a named volume, not the container's layer


def test_compose_every_service_has_a_healthcheck_and_a_restart_policy() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        assert service["restart"] in {"always", "unless-stopped", "on-failure"}, name
        assert service["healthcheck"]["test"][0] == "CMD", name
    # Each bot checks /healthz on the port its own command serves.
    for name in ("front", "worker"):
        service = services[name]
        port = service["command"][service["command"].index("--port") + 1]
        assert _healthcheck_url(service["healthcheck"]["test"]) == f"http://127.0.0.1:{port}/healthz"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


# --- Dockerfile --------------------------------------------------------------------------------------


def test_dockerfile_builds_with_uv_and_runs_slim_as_a_user() -> None:
    builder, runtime = _stages(_dockerfile())
    assert builder[0].startswith("FROM ghcr.io/astral-sh/uv:python3.11-")
    assert builder[0].endswith(" AS builder")
    syncs = [i for i in builder if "uv sync" in i]
    assert syncs and all("--frozen" in i and "--no-dev" in i for i in syncs)

    assert runtime[0].startswith("FROM python:3.11-slim")
    assert "COPY --from=builder /app/.venv /app/.venv" in runtime
    assert not any("uv " in i for i in runtime[1:])  # no uv, no compilers at run time
    (user,) = [i for i in runtime if i.startswith("USER ")]
    assert user.split()[1] not in {"root", "0"}
    assert runtime.index(user) < len(runtime) - 1  # set before the command
    assert any(i.startswith("COPY manifest.yml") for i in runtime)  # `slack-assistant check` reads it


def test_dockerfile_checks_healthz_and_runs_the_http_front() -> None:
    runtime = _stages(_dockerfile())[-1]
    (health,) = [i for i in runtime if i.startswith("HEALTHCHECK ")]
    exec_form = json.loads(health.split(" CMD ", 1)[1])
    assert _healthcheck_url(exec_form) == "http://127.0.0.1:3000/healthz"
    (cmd,) = [i for i in runtime if i.startswith("CMD ")]
    assert json.loads(cmd[4:]) == ["slack-assistant", "--http", "--port", "3000"]


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".git", "data"} <= ignored


def test_the_image_command_is_a_real_cli_invocation() -> None:
    """The commands the image and compose run parse as the CLI's own arguments (help exits 0)."""
    cli = shutil.which("slack-assistant", path=str(Path(sys.executable).parent))
    assert cli is not None
    result = subprocess.run([cli, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--http" in result.stdout and "worker" in result.stdout


# --- Slack CLI -----------------------------------------------------------------------------------------


def _hooks() -> dict[str, Any]:
    data = json.loads((ROOT / ".slack" / "hooks.json").read_text())
    assert isinstance(data, dict)
    return data


def _clean_env() -> dict[str, str]:
    """No token, key or Redis of the developer's shell reaches the hook processes."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR"}
    return {k: v for k, v in os.environ.items() if k in keep}


def _run_hook(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=60)


def test_slack_hooks_name_get_hooks_and_our_manifest() -> None:
    hooks = _hooks()
    assert set(hooks["hooks"]) == {"get-hooks", "get-manifest"}
    assert shlex.split(hooks["hooks"]["get-hooks"])[-2:] == ["-m", "slack_cli_hooks.hooks.get_hooks"]
    assert hooks["config"]["watch"]["manifest"]["paths"] == ["manifest.yml"]
    for path in hooks["config"]["watch"]["app"]["paths"]:
        assert (ROOT / path).exists(), path


def test_get_hooks_gives_an_sdk_managed_start_hook() -> None:
    """slack-cli-hooks' answer (merged with ours by the CLI): `slack run` leaves the Socket Mode connection
    to the start hook, which runs ./app.py."""
    result = _run_hook([sys.executable, "-m", "slack_cli_hooks.hooks.get_hooks"], ROOT)
    assert result.returncode == 0, result.stderr
    sdk = json.loads(result.stdout)
    assert sdk["config"]["sdk-managed-connection-enabled"] is True
    assert "slack_cli_hooks.hooks.start" in sdk["hooks"]["start"]
    assert "start" not in _hooks()["hooks"]  # ours does not override it


@pytest.mark.parametrize("protocol", ["message-boundaries", "default"])
def test_get_manifest_hook_answers_manifest_yml_as_json(protocol: str) -> None:
    script = str(ROOT / ".slack" / "get_manifest.py")
    result = _run_hook([sys.executable, script, f"--protocol={protocol}", "--boundary=b0undary"], ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    if protocol == "message-boundaries":
        assert out.startswith("b0undary") and out.endswith("b0undary")
        out = out.removeprefix("b0undary").removesuffix("b0undary")
    manifest = json.loads(out)
    assert manifest == yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert manifest["settings"]["socket_mode_enabled"] is True


def test_start_hook_runs_app_py_into_the_bot_in_socket_mode(tmp_path: Path) -> None:
    """slack-cli-hooks' start hook, run as `slack run` runs it, reaches our CLI in Socket Mode: without the
    tokens it stops at once naming them (so it neither parsed the hook's flags nor started anything). A copy
    of app.py in an empty folder: no developer's .env is read."""
    shutil.copy(ROOT / "app.py", tmp_path / "app.py")
    # As get-hooks names it (`python -X dev -m slack_cli_hooks.hooks.start`), with the CLI's flags.
    hook = [sys.executable, "-X", "dev", "-m", "slack_cli_hooks.hooks.start"]
    result = _run_hook([*hook, "--protocol=message-boundaries", "--boundary=b0undary"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "SLACK_BOT_TOKEN is not set" in result.stderr
    assert "SLACK_APP_TOKEN is not set (needed for Socket Mode" in result.stderr
    assert "Traceback" not in result.stderr
