"""`/assistant`, the "Reset this thread" shortcut and `@Assistant reset`, end to end."""

from __future__ import annotations

import json

import redis

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, mention, message, new_trigger_id
from tests.redis_topologies import on_topologies
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers, user_texts

THREAD_KEY = f"sa:{{-:{TEAM}}}:thread:"


def slash(text: str, *, channel: str, user: str, team: str = TEAM, response_url: str) -> dict[str, str]:
    """A `/assistant` slash command payload, as Slack posts it."""
    return {
        "token": "legacy",
        "team_id": team,
        "team_domain": "acme",
        "channel_id": channel,
        "channel_name": "directmessage" if channel.startswith("D") else "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/assistant",
        "text": text,
        "api_app_id": "A0APP",
        "response_url": response_url,
        "trigger_id": new_trigger_id(),
    }


def command(sender: SlackSender, text: str, *, channel: str = DM, user: str = ALICE, team: str = TEAM) -> str:
    """Run `/assistant text`: the answer the user sees, in the ack (help, mistakes) or, for a command that
    needs the thread, posted to the command's response_url after the ack."""
    response_url = sender.response_url()
    reply = sender.send_form(slash(text, channel=channel, user=user, team=team, response_url=response_url))
    assert reply.status == 200
    # Bolt answers an ack(text=...) as the plain text of the ephemeral reply.
    if reply.headers.get("Content-Type", "").startswith("application/json"):
        return str(json.loads(reply.body)["text"])
    if reply.body:
        return reply.body
    [answer] = sender.responses(response_url)
    assert answer["response_type"] == "ephemeral"
    return str(answer["text"])


def shortcut(
    sender: SlackSender,
    *,
    channel: str,
    user: str,
    ts: str,
    thread_ts: str | None = None,
    team: str = TEAM,
    callback: str = "reset_thread",
) -> int:
    msg = {"type": "message", "user": ALICE, "ts": ts, "text": "something"}
    if thread_ts:
        msg["thread_ts"] = thread_ts
    payload = {
        "type": "message_action",
        "callback_id": callback,
        "trigger_id": new_trigger_id(),
        "response_url": "http://127.0.0.1:9/never-used",
        "team": {"id": team, "domain": "acme"},
        "channel": {"id": channel, "name": "general"},
        "user": {"id": user, "name": user.lower(), "team_id": team},
        "message_ts": ts,
        "message": msg,
        "api_app_id": "A0APP",
        "token": "legacy",
    }
    return sender.send_form({"payload": json.dumps(payload)}).status


def test_help_and_unknown_or_malformed_commands(sender: SlackSender, openai_fake: FakeOpenAI) -> None:
    assert "Assistant commands" in command(sender, "help")
    assert "Assistant commands" in command(sender, "")
    unknown = command(sender, "frobnicate now")
    assert unknown.startswith("I don't know `/assistant frobnicate`") and "Assistant commands" in unknown
    assert "unclosed quote" in command(sender, 'reset "oops')
    assert "takes no arguments" in command(sender, "reset everything")
    assert openai_fake.requests == []


def test_history_with_a_digit_that_is_no_number_gets_the_usage_text(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    # "²" is a digit to str.isdigit but not to int(): the slash command gets the usage text, not a 500.
    assert "takes a number from 1 to 50" in command(sender, "history \u00b2")
    assert openai_fake.requests == []
    # After a mention, "history" with anything but a clean count reads as a question ("history of Rome?"):
    # acked and answered, never a crash for Slack to retry.
    root = mention(CHANNEL, ALICE, "history \u00b2")
    assert sender.send_event(root).status == 200
    [reply] = answers(slack, CHANNEL, root["ts"])
    assert reply.text == "Echo: history \u00b2"


def test_reset_by_command_in_dm_starts_a_fresh_assistant_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    first = message(DM, ALICE, "The code word is pineapple.")
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    [old_conv] = list(openai_fake.conversations)

    assert command(sender, "reset") == "Resetting this thread's assistant memory…"
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(DM)))
    assert old_conv not in openai_fake.conversations
    assert rdb.hget(f"{THREAD_KEY}u:{ALICE}", "conversation_id") is None

    second = message(DM, ALICE, "What was the code word?")
    sender.send_event(second)
    answers(slack, DM, second["ts"])
    [new_conv] = list(openai_fake.conversations)
    assert new_conv != old_conv
    assert user_texts(openai_fake.model_inputs[-1]["input_items"]) == ["user: What was the code word?"]


def test_reset_command_outside_dm_or_without_thread_changes_nothing(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    assert "no assistant thread here" in command(sender, "reset")
    root = mention(CHANNEL, ALICE, "hello")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    hint = command(sender, "reset", channel=CHANNEL)
    assert "Reset this thread" in hint and "@Assistant reset" in hint
    assert len(openai_fake.conversations) == 1


def test_reset_shortcut_in_channel_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    root = mention(CHANNEL, ALICE, "remember: the launch is Tuesday")
    sender.send_event(root)
    [reply] = answers(slack, CHANNEL, root["ts"])
    [old_conv] = list(openai_fake.conversations)

    # Used on the bot's reply inside the thread.
    assert shortcut(sender, channel=CHANNEL, user=BOB, ts=reply.ts, thread_ts=root["ts"]) == 200
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(CHANNEL, root["ts"])))
    assert old_conv not in openai_fake.conversations
    [eph] = slack.ephemerals(CHANNEL, BOB)
    assert "Resetting" in eph.text

    # The thread stays known: a plain reply (no mention) starts a new assistant thread.
    sender.send_event(message(CHANNEL, ALICE, "when is the launch?", thread_ts=root["ts"]))
    slack.wait_for(lambda: len(openai_fake.model_inputs) == 2)
    assert user_texts(openai_fake.model_inputs[1]["input_items"]) == ["user: when is the launch?"]
    assert rdb.hget(f"{THREAD_KEY}c:{CHANNEL}:{root['ts']}", "conversation_id") in openai_fake.conversations


@on_topologies("cluster")
def test_reset_by_mention_inside_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    root = mention(CHANNEL, ALICE, "first topic")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    sender.send_event(mention(CHANNEL, BOB, "reset", thread_ts=root["ts"]))
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(CHANNEL, root["ts"])))
    assert openai_fake.conversations == {}
    # "reset" itself never reached the model.
    assert len(openai_fake.model_inputs) == 1


def test_nobody_resets_another_users_dm_thread_or_another_workspace(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    first = message(DM, ALICE, "private notes")
    sender.send_event(first)
    [reply] = answers(slack, DM, first["ts"])
    [conv] = list(openai_fake.conversations)

    # Bob uses the shortcut on a message of Alice's DM thread (a forged or shared link).
    shortcut(sender, channel=DM, user=BOB, ts=reply.ts, thread_ts=first["ts"])
    slack.wait_for(lambda: bool(slack.ephemerals(DM, BOB)))
    assert "Only the person who started" in slack.ephemerals(DM, BOB)[0].text
    # Bob's own /assistant reset acts on his own (empty) thread only.
    assert "no assistant thread here" in command(sender, "reset", channel="D0BOB", user=BOB)
    # The same ids from another workspace (for this app, installed in one, a Slack Connect guest's) reach
    # nothing: the guest is told the bot is not theirs.
    shortcut(sender, channel=DM, user=ALICE, ts=reply.ts, thread_ts=first["ts"], team="T0OTHER")
    slack.wait_for(lambda: len(slack.ephemerals(DM, ALICE)) == 1)
    assert "only serves members of the organization" in slack.ephemerals(DM, ALICE)[0].text
    assert list(openai_fake.conversations) == [conv]
    assert not any("reset this thread" in m.text for m in slack.messages(DM))
