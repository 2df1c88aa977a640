"""bot/settings.py: every configuration problem named at start-up, and the defaults."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.settings import Mode, load_settings


def test_settings_name_every_problem_without_echoing_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-wrong-kind-secret")
    monkeypatch.setenv("STREAM_FLUSH_SECONDS", "-1")
    with pytest.raises(ConfigError) as err:
        load_settings(Mode.SOCKET)
    message = str(err.value)
    for expected in (
        "SLACK_BOT_TOKEN is not set",
        "OPENAI_API_KEY is not set",
        "SLACK_APP_TOKEN: must be",
        "STREAM_FLUSH_SECONDS",
    ):
        assert expected in message
    assert "wrong-kind-secret" not in message

    (tmp_path / ".env").write_text(
        "SLACK_BOT_TOKEN=xoxb-1\nOPENAI_API_KEY=sk-1\nASSISTANT_TOOLS=web_search\n"
    )
    monkeypatch.delenv("SLACK_APP_TOKEN")
    monkeypatch.delenv("STREAM_FLUSH_SECONDS")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    settings = load_settings(Mode.HTTP)
    assert settings.assistant_tools == ["web_search"] and settings.slack_api_url == "https://slack.com/api/"


def test_reliability_settings_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    settings = load_settings(Mode.HTTP)
    assert settings.rate_limit_user_per_minute == 20 and settings.rate_limit_team_per_minute == 300
    assert settings.runner_lock_seconds == 30 and settings.max_turn_attempts == 5
    monkeypatch.setenv("RATE_LIMIT_USER_PER_MINUTE", "0")
    monkeypatch.setenv("WORKER_CONCURRENCY", "4")
    settings = load_settings(Mode.HTTP)
    assert settings.rate_limit_user_per_minute == 0 and settings.worker_concurrency == 4


def test_an_empty_signing_secret_stops_http_mode_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "")  # as .env.example ships it
    with pytest.raises(ConfigError) as err:
        load_settings(Mode.HTTP)
    assert "SLACK_SIGNING_SECRET is not set (needed for HTTP mode)" in str(err.value)
