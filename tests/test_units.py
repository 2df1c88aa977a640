"""Pure functions: parsing Slack payloads, text clean-up, splitting, commands and settings."""

from __future__ import annotations

import pytest

from bot.commands import Command, UnknownCommand, parse_command, parse_thread_command
from bot.errors import ConfigError
from bot.markdown import inside_code_block, split_point
from bot.models import IncomingMessage, Workspace, thread_ref
from bot.settings import Mode, load_settings
from bot.slack_events import clean_text, parse_context, parse_user_message

CTX = {"team_id": "T1", "bot_user_id": "UBOT"}


def body(**event: object) -> dict:
    base = {"type": "message", "user": "U1", "text": "hi", "ts": "1.000001", "channel": "C1"}
    return {"team_id": "T1", "event_id": "Ev1", "event": {**base, **event}}


def test_clean_text_unwraps_slack_markup_and_drops_the_bots_mention() -> None:
    text = "<@UBOT> see <https://x.io/a|the doc> and <https://y.io> in <#C9|general>, <!here> &amp; <@U2>"
    assert (
        clean_text(text, "UBOT")
        == "see [the doc](https://x.io/a) and https://y.io in #general, @here & <@U2>"
    )


@pytest.mark.parametrize(
    ("event", "answerable"),
    [
        ({}, True),
        ({"subtype": "file_share"}, True),
        ({"subtype": "thread_broadcast"}, True),
        ({"subtype": "message_changed"}, False),
        ({"subtype": "message_deleted"}, False),
        ({"subtype": "bot_message", "bot_id": "B1"}, False),
        ({"bot_id": "B2"}, False),
        ({"user": "UBOT"}, False),
        ({"user": None}, False),
    ],
)
def test_only_peoples_messages_are_answered(event: dict, answerable: bool) -> None:
    assert (parse_user_message(body(**event), CTX, source="message") is not None) is answerable


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


def test_app_mention_without_channel_type_reads_dm_from_channel_id() -> None:
    event = {"type": "app_mention", "user": "U1", "text": "<@UBOT> yo", "ts": "1.1", "channel": "D1"}
    msg = parse_user_message({"team_id": "T1", "event": event}, CTX, source="mention")
    assert msg is not None and msg.is_dm and msg.text == "yo"


def test_parse_context_keeps_channel_entities_only() -> None:
    entities = [
        {"type": "slack#/types/channel_id", "value": "C1"},
        {"type": "slack#/types/canvas_id", "value": "F1"},
    ]
    assert parse_context({"context": {"entities": entities}}).channel_ids == ["C1"]
    assert parse_context({"context": {}}).channel_ids == []


def test_split_point_prefers_paragraphs_then_lines_then_words() -> None:
    assert split_point("short", 10) == 5
    assert split_point("aaaa bbbb\n\ncccc dddd", 16) == 11
    assert split_point("aaaa bbbb\ncccc dddd", 16) == 10
    assert split_point("aaaa bbbb cccc dddd", 12) == 10
    assert split_point("x" * 30, 12) == 12
    assert inside_code_block("text\n```py\ncode") and not inside_code_block("```a```")


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


def test_metadata_rules_name_the_limit_and_the_excess() -> None:
    from bot.metadata import MetadataError, apply_set, apply_unset

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
