"""Pure pieces of the reliability work: key naming, the progress record's parsing, settings."""

from __future__ import annotations

import pytest

from bot.keys import TEAMS_KEY, Keys
from bot.progress import TurnRecord
from bot.settings import Mode, load_settings


def test_workspace_registry_members_round_trip_and_keys_share_one_slot() -> None:
    for keys in (Keys("T1"), Keys("T1", "E1")):
        assert Keys.from_registry_member(keys.registry_member) == keys
        # Every per-workspace key carries the same hash tag, so multi-key scripts stay on one slot.
        tagged = [keys.turns(), keys.queue("c:C1:1.1"), keys.turn("C1:1.1"), keys.runner("c:C1:1.1")]
        tagged += [keys.user_bucket("U1"), keys.team_bucket(), keys.seen_event("Ev1")]
        assert {k.split("}")[0] for k in tagged} == {keys.ns.split("}")[0]}
    assert "{" not in TEAMS_KEY  # the one global key, never used together with others


def test_turn_record_parses_what_redis_returns() -> None:
    assert TurnRecord.parse([]) == TurnRecord()
    record = TurnRecord.parse(
        ["attempts", "2", "response_id", "resp_1,resp_2", "message_ts", "1.1,2.2", "done", "1"]
    )
    assert record == TurnRecord(
        attempts=2, response_ids=["resp_1", "resp_2"], message_ts=["1.1", "2.2"], done=True
    )


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
