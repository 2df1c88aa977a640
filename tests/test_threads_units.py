"""bot/threads: which assistant thread a message belongs to, command parsing, metadata rules."""

from __future__ import annotations

import pytest

from bot.models import IncomingMessage, Workspace, thread_ref
from bot.threads.commands import Command, UnknownCommand, parse_command, parse_thread_command


def test_thread_ref_follows_the_mapping_table() -> None:
    ws = Workspace(team_id="T1")

    def msg(channel: str, channel_type: str, thread_ts: str | None = None) -> IncomingMessage:
        return IncomingMessage(
            workspace=ws, source="message", channel=channel, channel_type=channel_type, user="U1",
            text="x", ts="5.000001", thread_ts=thread_ts,
        )  # fmt: skip

    assert thread_ref(msg("C1", "channel")) == "c:C1:5.000001"
    assert thread_ref(msg("C1", "channel", "4.000001")) == "c:C1:4.000001"
    assert thread_ref(msg("D1", "im", "4.000001")) == "c:D1:4.000001"
    assert thread_ref(msg("D1", "im")) == "u:U1"
    assert ws.keys.thread("u:U1") == "sa:{-:T1}:thread:u:U1"
    assert Workspace(team_id="T1", enterprise_id="E1").keys.queue("x") == "sa:{E1:T1}:queue:x"


def test_commands_parse_and_explain_mistakes() -> None:
    assert parse_command("").command is Command.HELP
    assert parse_command("  RESET ").command is Command.RESET
    meta = parse_command("meta set topic=\u201cQ3 plan\u201d owner='Ann Lee' empty=")
    assert meta.meta_action == "set" and meta.pairs == {"topic": "Q3 plan", "owner": "Ann Lee", "empty": ""}
    assert parse_command("meta unset a b").keys == ("a", "b")
    assert parse_command("history 25").limit == 25
    for bad in (
        "history 0",
        "history 51",
        "history x",
        "history \u00b2",  # a digit, not a decimal: int() refuses it
        "meta frob",
        "meta set novalue",
        "meta unset",
        "status x",
    ):
        with pytest.raises(UnknownCommand):
            parse_command(bad)
    with pytest.raises(UnknownCommand) as err:
        parse_command("x" * 100)
    assert len(err.value.user_message) < 1000 and "…" in err.value.user_message
    # After a mention: a clean command, else a question for the model (except a garbled `meta`).
    assert parse_thread_command("Reset!") is not None
    assert parse_thread_command("reset the build please") is None
    assert parse_thread_command("history of Rome?") is None
    assert parse_thread_command("what is the status?") is None
    with pytest.raises(UnknownCommand):
        parse_thread_command("meta sett x=1")


def test_metadata_rules_name_the_limit_and_the_excess() -> None:
    from bot.threads.metadata import MetadataError, apply_set, apply_unset

    bot = {"slack_team": "T", "slack_channel": "C", "slack_thread_ts": "", "slack_user": "U"}
    with pytest.raises(MetadataError) as err:
        apply_set(bot, {"k" * 70: "v", "ok": "x" * 600, "slack_user": "me"})
    assert err.value.problems == [
        f"Key `{'k' * 39}…` is 70 characters; the limit is 64 (6 too many).",
        "The value of `ok` is 600 characters; the limit is 512 (88 too many).",
        "`slack_user` is set by the bot and can't be changed.",
    ]
    with pytest.raises(MetadataError) as err:
        apply_set(bot, {f"k{i}": "v" for i in range(13)})
    assert (
        "17 metadata pairs; the limit is 16, including my 4 own keys (1 too many)" in err.value.user_message
    )
    assert len(apply_set(bot, {f"k{i}": "v" for i in range(12)})) == 16
    with pytest.raises(MetadataError):
        apply_unset(bot, ["slack_team"])
    assert apply_unset({**bot, "a": "1"}, ["a"]) == bot
