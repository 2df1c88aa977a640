"""bot/queue: key naming across workspaces (one Cluster slot each), the progress record's parsing."""

from __future__ import annotations

from bot.keys import TEAMS_KEY, Keys
from bot.queue.progress import TurnRecord


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
