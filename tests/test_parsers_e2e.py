"""Odd input end to end (issue 12, "every parser total"): malformed fields in real payloads are dropped or
skipped, never losing the message; a forged settings form changes nothing; what a user types in the
settings modal is stored and shown back exactly. The bot runs as a process against the fakes and a real
Redis; the `start_bot` fixture fails any test whose bot logged a traceback or a secret."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.harness import BOT_USER, TEAM, BotProcess, SlackSender, mention, message
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers
from tests.test_commands_e2e import command, shortcut
from tests.test_files_e2e import PDF
from tests.test_thread_admin_e2e import BOT_META, metadata_writes, settings_submission

NS = f"sa:{{-:{TEAM}}}"


def redis_state(rdb: redis.Redis) -> dict[str, Any]:
    """Every key with its type and value (TTLs left out: they tick)."""
    state: dict[str, Any] = {}
    for key in rdb.scan_iter():
        kind = rdb.type(key)
        if kind == "string":
            value: Any = rdb.get(key)
        elif kind == "hash":
            value = rdb.hgetall(key)
        elif kind == "zset":
            value = rdb.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(rdb.smembers(key))
        elif kind == "list":
            value = rdb.lrange(key, 0, -1)
        else:  # streams and their consumer groups
            value = rdb.xrange(key)
        state[key] = (kind, value)
    return state


def settle(slack: FakeSlack, rdb: redis.Redis) -> None:
    """Wait until the queued turns are done with: their stream entries acked and deleted, and no thread's
    runner lock held any more."""
    slack.wait_for(lambda: rdb.xlen(f"{NS}:turns") == 0 and not list(rdb.scan_iter(f"{NS}:runner:*")))


@pytest.fixture
def dm_thread(slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis) -> str:
    """Alice has talked to the bot in her DM: returns her conversation id (the turn fully done)."""
    first = message(DM, ALICE, "hello")
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    settle(slack, rdb)
    [conv_id] = list(openai_fake.conversations)
    return conv_id


# ---- malformed fields in real event shapes ------------------------------------------------------------


def test_a_file_named_null_is_read_and_malformed_entries_are_skipped_not_the_message(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess
) -> None:
    pdf = slack.add_file("report.pdf", PDF, mimetype="application/pdf")
    unnamed = {**pdf, "name": None, "size": None, "permalink": 42}
    junk: list[Any] = [{"id": 42, "name": "x.pdf"}, "not a file", None, {"name": "no id.txt"}, {"id": ""}]
    event = message(DM, ALICE, "What is in it?", subtype="file_share", files=[*junk, unnamed], upload=True)
    assert sender.send_event(event).status == 200

    [reply] = answers(slack, DM, event["ts"])
    assert not reply.text.startswith(":warning:")
    # The file with a null name was fetched and given to OpenAI under its title; the junk was skipped.
    assert [d.path.rsplit("/", 1)[-1] for d in slack.downloads] == ["report.pdf"]
    [file_id] = openai_fake.files
    assert openai_fake.file_content(file_id) == PDF
    assert openai_fake.files[file_id]["filename"] == "report.pdf"
    logs = bot.logs()
    assert logs.count("skipped malformed file entry") == len(junk)
    assert "ignored event.files" not in logs


def test_a_non_string_thread_ts_is_dropped_and_the_message_still_handled(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess, rdb: redis.Redis
) -> None:
    # A DM message: answered at the top level of the DM, as a message without a thread.
    dm = message(DM, ALICE, "top level after all", thread_ts=12345)  # type: ignore[arg-type]
    assert sender.send_event(dm).status == 200
    [reply] = answers(slack, DM, dm["ts"])
    assert reply.text == "Echo: top level after all"
    # A mention: answered in a new thread under it.
    asked = mention(CHANNEL, ALICE, "in a thread of its own")
    asked["thread_ts"] = {"ts": "1800000000.000001"}
    assert sender.send_event(asked).status == 200
    assert answers(slack, CHANNEL, asked["ts"])[0].text == "Echo: in a thread of its own"
    # A channel message that is not a mention and, without its thread_ts, not a reply: ignored cleanly.
    loose = message(CHANNEL, ALICE, "no thread to follow", thread_ts=["1800000000.000001"])  # type: ignore[arg-type]
    assert sender.send_event(loose).status == 200  # acked once its listener is done with it
    settle(slack, rdb)
    assert not rdb.exists(f"{NS}:turn:{CHANNEL}:{loose['ts']}")
    assert len(openai_fake.model_inputs) == 2
    logs = bot.logs()
    assert "ignored event.thread_ts of type int" in logs and "ignored event.thread_ts of type list" in logs


# ---- what Bolt can't read -----------------------------------------------------------------------------


def test_a_signed_request_bolt_cant_read_is_acked_and_an_unsigned_one_refused(
    sender: SlackSender, bot: BotProcess
) -> None:
    unreadable = [
        "{",  # not JSON
        "[1, 2]",  # not an object
        json.dumps({"type": "event_callback", "team_id": TEAM, "event": None}),
        json.dumps({"type": "event_callback", "team_id": TEAM, "event": "app_mention"}),
        json.dumps({"type": "block_actions", "team": {"id": TEAM}, "actions": None}),
        json.dumps({"type": "view_submission", "team": {"id": TEAM}, "view": {"callback_id": "x"}}),
        json.dumps({"type": "event_callback", "team_id": TEAM, "authorizations": 5, "event": {"type": "x"}}),
    ]
    for body in unreadable:
        assert sender.post(body).status == 200, body
        refused = sender.post(body, sign=False)
        assert (refused.status, json.loads(refused.body)) == (401, {"error": "invalid request"}), body
    # Signature headers that can't even be compared.
    odd = {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=abc"}
    assert sender.post("{}", sign=False, headers=odd).status == 401
    odd = {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=é"}
    assert sender.post("{}", sign=False, headers=odd).status == 401
    # An event no listener takes is acked too (Slack would retry it, and turn events off for a failing app).
    assert sender.send_event({"type": "reaction_added", "user": ALICE, "reaction": "tada"}).status == 200
    logs = bot.logs()
    assert "ignored a signed Slack request Bolt can't read: JSONDecodeError while parsing" in logs
    assert "ignored a signed Slack request Bolt can't read: event is a NoneType" in logs
    assert "no listener for event reaction_added; acked" in logs


# ---- the settings modal -------------------------------------------------------------------------------


def open_settings(slack: FakeSlack, sender: SlackSender, *, count: int = 1) -> dict[str, Any]:
    """Alice opens Thread settings on the bot's first DM message: the settings view shown (the count-th)."""
    reply = slack.messages(DM)[0]
    status = shortcut(
        sender, channel=DM, user=ALICE, ts=reply.ts, thread_ts=reply.thread_ts, callback="thread_settings"
    )
    assert status == 200

    def shown() -> list[dict[str, Any]]:
        return [v for v in slack.views() if v.get("callback_id") == "thread_settings_modal"]

    slack.wait_for(lambda: len(shown()) >= count)
    return shown()[count - 1]


def text_box(view: dict[str, Any]) -> dict[str, Any]:
    [block] = [b for b in view["blocks"] if b.get("block_id") == "meta_block"]
    return dict(block["element"])


FORGED = [
    "not json",
    "",
    "[1, 2, 3, 4, 5]",  # numbers where ids belong (this raised out of the submit before)
    json.dumps([TEAM, 7, "u:U0ALICE", DM, ALICE]),  # an enterprise id that is no text
    json.dumps([TEAM, None, "u:U0ALICE", CHANNEL, ALICE]),  # a DM thread reached from a channel
    json.dumps([TEAM, None, f"c:C0OTHER:{'1' * 10}.000001", CHANNEL, ALICE]),  # another channel's thread
    json.dumps({"team": TEAM, "thread": "u:U0ALICE"}),
    "[" * 2000,  # nests deeper than the JSON parser goes
    json.dumps([TEAM, None, "u:U0ALICE", DM, ALICE]) + " " * 3000,  # over Slack's 3000 characters
]


@pytest.mark.parametrize("private_metadata", FORGED)
def test_forged_private_metadata_gets_a_clear_error_and_changes_nothing(
    slack: FakeSlack,
    openai_fake: FakeOpenAI,
    sender: SlackSender,
    rdb: redis.Redis,
    dm_thread: str,
    private_metadata: str,
) -> None:
    before = redis_state(rdb)
    reply = sender.send_form({"payload": settings_submission(private_metadata, "topic=pwned")})
    assert reply.status == 200
    answer = json.loads(reply.body)
    assert answer["response_action"] == "errors"
    assert answer["errors"] == {
        "meta_block": "I couldn't tell which thread these settings are for. "
        "Please close this and open Thread settings again."
    }
    command(sender, "help")  # served after: nothing of the submission is left running
    assert redis_state(rdb) == before
    assert openai_fake.conversation(dm_thread)["metadata"] == BOT_META
    assert metadata_writes(openai_fake) == []
    assert slack.ephemerals(DM, ALICE) == []


def test_a_non_text_private_metadata_or_input_value_is_refused_too(
    openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis, dm_thread: str
) -> None:
    before = redis_state(rdb)
    ref = json.dumps([TEAM, None, "u:U0ALICE", DM, ALICE])
    payload = json.loads(settings_submission(ref, "topic=x"))
    payload["view"]["private_metadata"] = {"forged": True}
    answer = json.loads(sender.send_form({"payload": json.dumps(payload)}).body)
    assert answer["errors"]["meta_block"].startswith("I couldn't tell which thread")
    # A value that is no text is never read as an empty box (which would clear the user's keys).
    payload = json.loads(settings_submission(ref, "topic=x"))
    payload["view"]["state"]["values"]["meta_block"]["meta_lines"]["value"] = ["topic=x"]
    assert sender.send_form({"payload": json.dumps(payload)}).status == 200
    command(sender, "help")
    assert redis_state(rdb) == before
    assert metadata_writes(openai_fake) == []


TYPED = (
    "topic=  Q3 plan, spaces kept  \n"
    'note="first line\\n  second line, indented  \\n"\n'
    "emoji=café ☕ 日本語 — «ok» 👍🏽\n"
    'quote=say "hi" = twice\n'
    "tabs=\ta\tb\t\n"
    "empty="
)
STORED = {
    "topic": "  Q3 plan, spaces kept  ",
    "note": "first line\n  second line, indented  \n",
    "emoji": "café ☕ 日本語 — «ok» 👍🏽",
    "quote": 'say "hi" = twice',
    "tabs": "\ta\tb\t",
    "empty": "",
}


def test_modal_values_round_trip_exactly_with_newlines_spaces_and_unicode(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str
) -> None:
    modal = open_settings(slack, sender)
    box = text_box(modal)
    # Within Slack's plain_text_input limit (the fake refuses a view over it), and nothing to edit yet.
    assert box["max_length"] == 3000 and "initial_value" not in box

    ok = sender.send_form({"payload": settings_submission(modal["private_metadata"], TYPED)})
    assert ok.status == 200 and ok.body == ""
    slack.wait_for(lambda: any("Saved this thread's settings" in e.text for e in slack.ephemerals(DM, ALICE)))
    assert openai_fake.conversation(dm_thread)["metadata"] == {**BOT_META, **STORED}

    # Opened again, the box shows the text exactly as typed; saved unchanged, nothing changes.
    again = open_settings(slack, sender, count=2)
    assert text_box(again)["initial_value"] == TYPED
    sender.send_form({"payload": settings_submission(again["private_metadata"], TYPED)})
    slack.wait_for(lambda: len(slack.ephemerals(DM, ALICE)) == 2)
    assert openai_fake.conversation(dm_thread)["metadata"] == {**BOT_META, **STORED}


def test_a_value_set_by_command_with_a_line_break_survives_the_modal(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str
) -> None:
    sender.send_event(message(DM, ALICE, f'<@{BOT_USER}> meta set note="two\nlines" lead=" x"'))
    slack.wait_for(lambda: bool(slack.ephemerals(DM, ALICE)))
    assert openai_fake.conversation(dm_thread)["metadata"] == {**BOT_META, "note": "two\nlines", "lead": " x"}
    modal = open_settings(slack, sender)
    shown = text_box(modal)["initial_value"]
    assert shown == 'note="two\\nlines"\nlead= x'
    sender.send_form({"payload": settings_submission(modal["private_metadata"], shown)})
    slack.wait_for(lambda: any("Saved this thread's settings" in e.text for e in slack.ephemerals(DM, ALICE)))
    assert openai_fake.conversation(dm_thread)["metadata"] == {**BOT_META, "note": "two\nlines", "lead": " x"}


def test_metadata_longer_than_the_text_box_is_explained_not_cut(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str
) -> None:
    pairs = " ".join(f"{f'k{i:02d}' + 'k' * 61}={'v' * 512}" for i in range(12))
    assert command(sender, f"meta set {pairs}").startswith("Saved.")
    reply = slack.messages(DM)[0]
    shortcut(
        sender, channel=DM, user=ALICE, ts=reply.ts, thread_ts=reply.thread_ts, callback="thread_settings"
    )
    slack.wait_for(lambda: len(slack.views()) == 2)
    notice = json.dumps(slack.views()[-1]["blocks"])
    assert "more than a Slack text box holds (3000)" in notice and "meta set" in notice
    assert not any(v.get("callback_id") == "thread_settings_modal" for v in slack.views())
    assert [c.method for c in slack.calls if c.method.startswith("views.")] == ["views.open", "views.update"]


def test_someone_elses_modal_is_still_refused_by_name(
    openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str
) -> None:
    ref = json.dumps([TEAM, None, "u:U0ALICE", DM, ALICE])
    forged = json.loads(sender.send_form({"payload": settings_submission(ref, "topic=x", user=BOB)}).body)
    assert forged["errors"]["meta_block"] == "These settings belong to someone else."
    assert metadata_writes(openai_fake) == []
