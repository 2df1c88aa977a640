"""Thread metadata, history, status, the settings modal and the App Home, against the bot as a process."""

from __future__ import annotations

import json

import pytest
import redis

from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, mention, message, new_trigger_id, new_ts
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers
from tests.test_commands_e2e import command, shortcut
from tests.test_reliability_e2e import all_turns_done

BOT_META = {"slack_team": TEAM, "slack_channel": DM, "slack_thread_ts": "", "slack_user": ALICE}


def metadata_writes(openai_fake: FakeOpenAI) -> list[dict]:
    return [
        r
        for r in openai_fake.requests
        if r["method"] == "POST" and r["path"].count("/") == 3 and "conv_" in r["path"]
    ]


@pytest.fixture
def dm_thread(slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis) -> str:
    """Alice has talked to the bot in her DM, and that turn has ended: returns her conversation id."""
    first = message(DM, ALICE, "hello")
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    # The answer is complete in Slack before the turn records its last run and leaves the queue.
    slack.wait_for(lambda: all_turns_done(rdb))
    [conv_id] = list(openai_fake.conversations)
    return conv_id


def home_button(action_id: str, *, user: str = ALICE, team: str = TEAM) -> dict:
    """A click on one of the App Home's buttons, as Slack posts it (`block_actions` from the home view)."""
    return {
        "type": "block_actions",
        "team": {"id": team, "domain": "acme"},
        "user": {"id": user, "team_id": team},
        "trigger_id": new_trigger_id(),
        "api_app_id": "A0APP",
        "container": {"type": "view", "view_id": "V0HOME"},
        "view": {"id": "V0HOME", "type": "home"},
        "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "action_ts": new_ts()}],
    }


def test_meta_show_set_and_unset(dm_thread: str, openai_fake: FakeOpenAI, sender: SlackSender) -> None:
    shown = command(sender, "meta")
    assert f"`{dm_thread}`" in shown and "`slack_user`: U0ALICE _(set by the bot)_" in shown

    saved = command(sender, "meta set topic=\u201cQ3 launch plan\u201d owner='Ann Lee' priority=high")
    assert saved.startswith("Saved.") and "`topic`: Q3 launch plan" in saved
    assert openai_fake.conversation(dm_thread)["metadata"] == {
        **BOT_META,
        "topic": "Q3 launch plan",
        "owner": "Ann Lee",
        "priority": "high",
    }
    command(sender, "meta unset owner priority")
    assert openai_fake.conversation(dm_thread)["metadata"] == {**BOT_META, "topic": "Q3 launch plan"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("meta set " + "k" * 70 + "=v", "is 70 characters; the limit is 64 (6 too many)"),
        ("meta set note=" + "x" * 600, "is 600 characters; the limit is 512 (88 too many)"),
        ("meta set " + " ".join(f"k{i}=v" for i in range(13)), "17 metadata pairs; the limit is 16"),
        ("meta set slack_user=U0MALLORY", "`slack_user` is set by the bot and can't be changed"),
        ("meta unset slack_team", "`slack_team` is set by the bot and can't be removed"),
        ("meta unset nothing_here", "There is no key `nothing_here` to unset"),
        ("meta set justaword", "`justaword` is not `KEY=VALUE`"),
        ('meta set topic="unclosed', "unclosed quote"),
        ("meta frobnicate", "`/assistant meta` takes `set KEY=VALUE …` or `unset KEY …`"),
        ("history 0", "takes a number from 1 to 50"),
        ("history 999", "takes a number from 1 to 50"),
    ],
)
def test_every_limit_and_malformed_command_is_explained_and_changes_nothing(
    dm_thread: str, openai_fake: FakeOpenAI, sender: SlackSender, text: str, expected: str
) -> None:
    before = openai_fake.conversation(dm_thread)["metadata"]
    assert expected in command(sender, text)
    assert openai_fake.conversation(dm_thread)["metadata"] == before
    assert metadata_writes(openai_fake) == []


def test_history_newest_first_with_roles_and_long_text_cut(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str
) -> None:
    long = message(DM, ALICE, "word " * 200)
    openai_fake.script(Reply(text="short answer"))
    sender.send_event(long)
    answers(slack, DM, long["ts"])
    history = command(sender, "history 3")
    lines = history.splitlines()
    assert lines[0] == "*The newest 3 item(s), newest first*"
    assert lines[1] == "*Assistant:* short answer"
    assert lines[2].startswith("*User:* word word") and lines[2].endswith("…") and len(lines[2]) < 330
    assert lines[3] == "*Assistant:* Echo: hello"


def test_status_shows_id_size_and_last_run(dm_thread: str, sender: SlackSender) -> None:
    status = command(sender, "status")
    assert f"*Assistant thread* `{dm_thread}`" in status
    assert "• Messages: 2" in status and "• Last run: answered, <!date^" in status
    assert "• Metadata: 4 of 16 pairs" in status


def test_in_a_channel_commands_point_to_the_thread_and_mentions_act_on_it(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    assert "Slash commands can't see threads" in command(sender, "status", channel=CHANNEL)
    root = mention(CHANNEL, ALICE, "let's plan")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    [conv_id] = list(openai_fake.conversations)

    sender.send_event(mention(CHANNEL, BOB, "meta set topic=launch", thread_ts=root["ts"]))
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, BOB)))
    assert openai_fake.conversation(conv_id)["metadata"]["topic"] == "launch"
    sender.send_event(mention(CHANNEL, BOB, "status", thread_ts=root["ts"]))
    slack.wait_for(lambda: len(slack.ephemerals(CHANNEL, BOB)) == 2)
    status = slack.ephemerals(CHANNEL, BOB)[1]
    assert f"`{conv_id}`" in status.text and status.thread_ts == root["ts"]
    sender.send_event(mention(CHANNEL, BOB, "meta sett topic=x", thread_ts=root["ts"]))
    slack.wait_for(lambda: len(slack.ephemerals(CHANNEL, BOB)) == 3)
    assert "`/assistant meta` takes" in slack.ephemerals(CHANNEL, BOB)[2].text
    # Commands never reach the model, and nothing else was posted in the thread.
    assert len(openai_fake.model_inputs) == 1
    assert len(slack.messages(CHANNEL, root["ts"])) == 1


def settings_submission(ref: str, text: str, *, user: str = ALICE, team: str = TEAM) -> str:
    view = {
        "id": "V0SETTINGS",
        "type": "modal",
        "callback_id": "thread_settings_modal",
        "private_metadata": ref,
        "state": {"values": {"meta_block": {"meta_lines": {"type": "plain_text_input", "value": text}}}},
    }
    payload = {
        "type": "view_submission",
        "team": {"id": team, "domain": "acme"},
        "user": {"id": user, "team_id": team},
        "view": view,
        "api_app_id": "A0APP",
        "trigger_id": new_trigger_id(),
    }
    return json.dumps(payload)


def test_settings_modal_shows_and_edits_metadata(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str
) -> None:
    command(sender, "meta set topic=old")
    reply = slack.messages(DM)[0]
    assert (
        shortcut(
            sender, channel=DM, user=ALICE, ts=reply.ts, thread_ts=reply.thread_ts, callback="thread_settings"
        )
        == 200
    )
    slack.wait_for(lambda: any(v.get("callback_id") == "thread_settings_modal" for v in slack.views()))
    # views.open came first (its trigger_id lives 3 s), with a loading view; the settings replaced it.
    loading, modal = slack.views()
    assert "Loading" in json.dumps(loading["blocks"]) and modal["id"] == loading["id"]
    assert [c.method for c in slack.calls if c.method.startswith("views.")] == ["views.open", "views.update"]
    assert modal["type"] == "modal" and modal["callback_id"] == "thread_settings_modal"
    [box] = [b for b in modal["blocks"] if b.get("block_id") == "meta_block"]
    assert box["element"]["initial_value"] == "topic=old"
    ref = modal["private_metadata"]

    ok = sender.send_form({"payload": settings_submission(ref, "topic=new plan\n\nowner = Ann\n")})
    assert ok.status == 200 and "errors" not in ok.body
    # Saved after the ack, and the user is told. A value is everything after the "=", spaces included.
    slack.wait_for(lambda: any("Saved this thread's settings" in e.text for e in slack.ephemerals(DM, ALICE)))
    assert openai_fake.conversation(dm_thread)["metadata"] == {
        **BOT_META,
        "topic": "new plan",
        "owner": " Ann",
    }

    bad = sender.send_form({"payload": settings_submission(ref, "topic=" + "x" * 600)})
    assert json.loads(bad.body)["response_action"] == "errors"
    assert "88 too many" in json.loads(bad.body)["errors"]["meta_block"]
    # Bob replays Alice's modal: refused, nothing changed.
    forged = sender.send_form({"payload": settings_submission(ref, "topic=pwned", user=BOB)})
    assert "someone else" in json.loads(forged.body)["errors"]["meta_block"]
    assert openai_fake.conversation(dm_thread)["metadata"]["topic"] == "new plan"


def test_app_home_lists_threads_and_resets_the_dm_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str, rdb: redis.Redis
) -> None:
    root = mention(CHANNEL, ALICE, "channel question")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    sender.send_event(
        {"type": "app_home_opened", "user": ALICE, "channel": DM, "tab": "home", "event_ts": new_ts()}
    )
    slack.wait_for(lambda: bool(slack.views()))
    home = slack.views()[-1]
    text = json.dumps(home["blocks"])
    assert home["type"] == "home" and "gpt-5.1" in text
    link = f"archives/{CHANNEL}/p{root['ts'].replace('.', '')}?thread_ts={root['ts']}"
    assert link in text and "Your direct-message thread" in text
    assert text.index(link) < text.index("Your direct-message thread")  # newest first

    assert sender.send_form({"payload": json.dumps(home_button("home_reset_dm_thread"))}).status == 200
    slack.wait_for(lambda: dm_thread not in openai_fake.conversations)
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(DM)))
    assert len(openai_fake.conversations) == 1  # the channel thread is untouched


def test_nobody_reaches_another_users_thread_by_any_command(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, dm_thread: str
) -> None:
    reply = slack.messages(DM)[0]
    # Bob's own DM has no thread: his commands never land on Alice's.
    for text in ("meta", "meta set topic=pwned", "history", "status", "reset"):
        assert "no assistant thread here yet" in command(sender, text, channel="D0BOB", user=BOB)
    # Bob on Alice's DM messages (a shared link): settings and reset refused.
    shortcut(sender, channel=DM, user=BOB, ts=reply.ts, thread_ts=reply.thread_ts, callback="thread_settings")
    shortcut(sender, channel=DM, user=BOB, ts=reply.ts, thread_ts=reply.thread_ts)
    slack.wait_for(lambda: len(slack.ephemerals(DM, BOB)) == 1)
    assert "Only the person who started" in slack.ephemerals(DM, BOB)[0].text
    # The settings modal opened for Bob says the same, and shows none of Alice's settings.
    slack.wait_for(lambda: len(slack.views()) == 2)
    assert "Only the person who started" in json.dumps(slack.views()[-1]["blocks"])
    # Alice's own ids in another workspace (for this app, a Slack Connect guest's) reach nothing.
    assert "only serves members of the organization" in command(sender, "meta set topic=x", team="T0OTHER")
    assert not any(v.get("callback_id") == "thread_settings_modal" for v in slack.views())
    assert openai_fake.conversation(dm_thread)["metadata"] == BOT_META
    assert dm_thread in openai_fake.conversations
