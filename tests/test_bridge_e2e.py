"""End to end: the bot as a real `slack-assistant --http` process, signed requests from "Slack", the fake
Slack Web API and the stateful fake OpenAI on 127.0.0.1, and a real Redis."""

from __future__ import annotations

import json
import time

import redis

from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack, Message
from tests.harness import BOT_USER, TEAM, BotProcess, SlackSender, mention, message, new_ts
from tests.redis_topologies import on_topologies

CHANNEL = "C0GENERAL"
DM = "D0ALICE"
ALICE = "U0ALICE"
BOB = "U0BOB"


def answers(
    slack: FakeSlack, channel: str, thread_ts: str, count: int = 1, timeout: float = 15
) -> list[Message]:
    """Wait until `count` finished bot messages are in the thread, and return them in order."""

    def done() -> bool:
        msgs = slack.messages(channel, thread_ts)
        return len(msgs) >= count and not any(m.streaming for m in msgs)

    slack.wait_for(done, timeout=timeout)
    return slack.messages(channel, thread_ts)


def user_texts(items: list[dict]) -> list[str]:
    out = []
    for item in items:
        for part in item.get("content") or []:
            if part.get("type") in ("input_text", "output_text"):
                out.append(f"{item.get('role')}: {part['text']}")
    return out


@on_topologies("cluster", "sentinel")
def test_mention_gets_streamed_reply_in_its_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    openai_fake.script(Reply(text="Hello **Alice**! Here is a longer streamed answer.", chunk_size=5))
    event = mention(CHANNEL, ALICE, "hi there")
    assert sender.send_event(event).status == 200

    [reply] = answers(slack, CHANNEL, event["ts"])
    assert reply.kind == "stream"
    assert reply.text == "Hello **Alice**! Here is a longer streamed answer."
    start = slack.calls_to("chat.startStream")[0].args
    assert start["thread_ts"] == event["ts"]
    assert start["recipient_user_id"] == ALICE and start["recipient_team_id"] == TEAM
    # The user saw the thread's agent session working while the model worked, then waiting again.
    slack.wait_for(lambda: getattr(slack.session(CHANNEL, event["ts"]), "status", None) == "active")
    assert slack.session(CHANNEL, event["ts"]).statuses == ["processing", "active"]  # type: ignore[union-attr]

    # The assistant thread: one conversation with the bot's own metadata, holding both turns.
    [conv_id] = list(openai_fake.conversations)
    conv = openai_fake.conversation(conv_id)
    assert conv["metadata"] == {
        "slack_team": TEAM,
        "slack_channel": CHANNEL,
        "slack_thread_ts": event["ts"],
        "slack_user": ALICE,
    }
    assert user_texts(conv["items"]) == ["user: hi there", f"assistant: {reply.text}"]
    # The bot's mention is not part of what the model reads.
    assert BOT_USER not in json.dumps(openai_fake.model_inputs[0]["input_items"])
    # Redis maps the Slack thread to it, namespaced by workspace.
    keys = rdb.keys(f"sa:{{-:{TEAM}}}:thread:*")
    assert keys == [f"sa:{{-:{TEAM}}}:thread:c:{CHANNEL}:{event['ts']}"]
    assert rdb.hget(keys[0], "conversation_id") == conv_id


def test_follow_up_in_thread_reaches_same_conversation_without_mention(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    first = mention(CHANNEL, ALICE, "My favourite colour is teal.")
    sender.send_event(first)
    answers(slack, CHANNEL, first["ts"])

    sender.send_event(message(CHANNEL, BOB, "What is Alice's favourite colour?", thread_ts=first["ts"]))
    msgs = answers(slack, CHANNEL, first["ts"], count=2)
    assert msgs[1].text == "Echo: What is Alice's favourite colour?"

    assert len(openai_fake.conversations) == 1
    second_input = openai_fake.model_inputs[1]
    # The model was given the earlier turns of the thread.
    assert user_texts(second_input["input_items"]) == [
        "user: My favourite colour is teal.",
        "assistant: Echo: My favourite colour is teal.",
        "user: What is Alice's favourite colour?",
    ]
    assert "<@U0BOB>" in second_input["instructions"]


def test_channel_messages_outside_known_threads_are_ignored(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    root = new_ts()
    assert sender.send_event(message(CHANNEL, ALICE, "just chatting", ts=root)).status == 200
    assert sender.send_event(message(CHANNEL, BOB, "still chatting", thread_ts=root)).status == 200
    # A marker turn proves the bot processed events after these two.
    marker = mention(CHANNEL, ALICE, "marker")
    sender.send_event(marker)
    answers(slack, CHANNEL, marker["ts"])
    assert slack.messages(CHANNEL, root) == []
    assert [user_texts(i["input_items"])[-1] for i in openai_fake.model_inputs] == ["user: marker"]


def test_top_level_dms_continue_the_users_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    one = message(DM, ALICE, "Remember the number 42.")
    sender.send_event(one)
    answers(slack, DM, one["ts"])
    two = message(DM, ALICE, "Which number?")
    sender.send_event(two)
    [reply] = answers(slack, DM, two["ts"])
    assert reply.text == "Echo: Which number?"

    assert len(openai_fake.conversations) == 1
    assert user_texts(openai_fake.model_inputs[1]["input_items"])[:2] == [
        "user: Remember the number 42.",
        "assistant: Echo: Remember the number 42.",
    ]
    [conv] = openai_fake.conversations.values()
    assert conv["metadata"]["slack_user"] == ALICE and conv["metadata"]["slack_thread_ts"] == ""
    assert rdb.exists(f"sa:{{-:{TEAM}}}:thread:u:{ALICE}")

    # A reply inside the Slack thread under a top-level DM continues the same assistant thread.
    three = message(DM, ALICE, "And doubled?", thread_ts=two["ts"])
    sender.send_event(three)
    answers(slack, DM, two["ts"], count=2)
    assert len(openai_fake.conversations) == 1
    assert len(user_texts(openai_fake.model_inputs[2]["input_items"])) == 5


def test_dm_thread_started_in_messages_tab_gets_its_own_assistant_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    top = message(DM, ALICE, "top-level")
    sender.send_event(top)
    answers(slack, DM, top["ts"])
    # A Slack thread the bot did not start from a top-level DM (e.g. a new Messages-tab thread root
    # posted by someone else) maps to its own assistant thread.
    root = new_ts()
    sender.send_event(message(DM, ALICE, "in another thread", thread_ts=root))
    answers(slack, DM, root)
    assert len(openai_fake.conversations) == 2


@on_topologies("cluster")
def test_retried_event_gets_exactly_one_reply(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    openai_fake.script(Reply(text="only once", first_token_delay=0.3))
    event = mention(CHANNEL, ALICE, "answer me once")
    body_id = "Ev0RETRY0001"
    assert sender.send_event(event, event_id=body_id).status == 200
    assert sender.send_event(event, event_id=body_id, retry_num=1).status == 200
    assert sender.send_event(event, event_id=body_id, retry_num=2).status == 200
    answers(slack, CHANNEL, event["ts"])
    # And the same message arriving as `message.channels` under another event id.
    twin = message(CHANNEL, ALICE, event["text"], ts=event["ts"])
    sender.send_event(twin)
    marker = mention(CHANNEL, BOB, "marker")
    sender.send_event(marker)
    answers(slack, CHANNEL, marker["ts"])

    assert [m.text for m in slack.messages(CHANNEL, event["ts"])] == ["only once"]
    assert len(openai_fake.model_inputs) == 2


def test_mention_inside_known_thread_arrives_twice_answered_once(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    root = mention(CHANNEL, ALICE, "start")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    ts = new_ts()
    # Slack sends both: the mention event and the channel message event, with different event ids.
    sender.send_event(message(CHANNEL, BOB, f"<@{BOT_USER}> follow-up", ts=ts, thread_ts=root["ts"]))
    sender.send_event(mention(CHANNEL, BOB, "follow-up", ts=ts, thread_ts=root["ts"]))
    msgs = answers(slack, CHANNEL, root["ts"], count=2)
    time.sleep(0.5)
    assert [m.text for m in slack.messages(CHANNEL, root["ts"])] == [m.text for m in msgs]
    assert len(msgs) == 2 and len(openai_fake.model_inputs) == 2


def test_quick_messages_in_one_thread_are_answered_in_order(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    root = mention(CHANNEL, ALICE, "first")
    openai_fake.script(
        Reply(text="first answer", first_token_delay=0.8, chunk_delay=0.05),
        Reply(text="second answer"),
        Reply(text="third answer"),
    )
    sender.send_event(root)
    sender.send_event(message(CHANNEL, ALICE, "second", thread_ts=root["ts"]))
    sender.send_event(message(CHANNEL, BOB, "third", thread_ts=root["ts"]))

    msgs = answers(slack, CHANNEL, root["ts"], count=3, timeout=20)
    assert [m.text for m in msgs] == ["first answer", "second answer", "third answer"]
    # Never two runs at once on the conversation: no request was refused as conversation_locked.
    assert not [r for r in openai_fake.requests if r["path"] == "/v1/responses" and r.get("status") == 400]
    assert user_texts(openai_fake.model_inputs[2]["input_items"]) == [
        "user: first",
        "assistant: first answer",
        "user: second",
        "assistant: second answer",
        "user: third",
    ]


def test_openai_failure_gives_friendly_message_and_bot_keeps_serving(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess
) -> None:
    openai_fake.script(
        Reply(http_status=500, error_type="server_error", error_message="boom internal detail")
    )
    first = mention(CHANNEL, ALICE, "are you there?")
    sender.send_event(first)
    [notice] = answers(slack, CHANNEL, first["ts"])
    assert "couldn't reach the assistant" in notice.text
    for leak in ("500", "boom", "InternalServerError", "Traceback"):
        assert leak not in notice.text

    follow = message(CHANNEL, ALICE, "try again", thread_ts=first["ts"])
    sender.send_event(follow)
    msgs = answers(slack, CHANNEL, first["ts"], count=2)
    assert msgs[1].text == "Echo: try again"
    # The log has the detail.
    assert "InternalServerError" in bot.logs()


def test_stream_dropped_midway_ends_with_notice(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    openai_fake.script(Reply(text="partial answer that never finishes", chunk_size=4, drop_after_chunks=3))
    event = mention(CHANNEL, ALICE, "long question")
    sender.send_event(event)
    [reply] = answers(slack, CHANNEL, event["ts"])
    assert reply.text.startswith("partial answ")
    assert ":warning:" in reply.text and "couldn't reach the assistant" in reply.text


def test_expired_stream_falls_back_to_chat_update(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    text = "word " * 60
    slack.expire_streams(after_appends=1)
    openai_fake.script(Reply(text=text, chunk_size=10, chunk_delay=0.02))
    event = mention(CHANNEL, ALICE, "slow answer")
    sender.send_event(event)

    def complete() -> bool:
        msgs = slack.messages(CHANNEL, event["ts"])
        return len(msgs) == 1 and msgs[0].text == text

    slack.wait_for(complete)
    [reply] = slack.messages(CHANNEL, event["ts"])
    assert reply.expired and reply.updates >= 1
    assert any(c.error == "message_not_in_streaming_state" for c in slack.calls)


def test_long_answers_are_split_over_several_messages(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot
) -> None:
    bot = start_bot(MAX_MESSAGE_CHARS="600")
    paragraph = "This is a sentence of a long answer. " * 5 + "\n\n"
    code = "```python\n" + "\n".join(f"print({i})" for i in range(60)) + "\n```\n"
    text = paragraph * 6 + code + paragraph * 4
    openai_fake.script(Reply(text=text, chunk_size=200))
    event = mention(CHANNEL, ALICE, "write a lot")
    SlackSender(bot.url).send_event(event)

    def finished() -> bool:
        msgs = slack.messages(CHANNEL, event["ts"])
        return sum(len(m.text) for m in msgs) >= len(text) and not any(m.streaming for m in msgs)

    slack.wait_for(finished, timeout=20)
    msgs = slack.messages(CHANNEL, event["ts"])
    assert len(msgs) >= 4
    assert all(len(m.text) <= 600 for m in msgs)
    # Every message renders on its own: code fences are balanced in each.
    assert all(m.text.count("```") % 2 == 0 for m in msgs)
    # Nothing lost or doubled: joined back (minus the fence closed and reopened at a split) it is the answer.
    assert "".join(m.text for m in msgs).replace("\n``````\n", "") == text


def test_requests_with_bad_or_missing_signature_are_refused(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    body = sender.event_body(mention(CHANNEL, ALICE, "sneaky"))
    assert sender.post(body, signature="v0=" + "0" * 64).status == 401
    assert sender.post(body, sign=False).status == 401
    assert sender.post(body, timestamp=int(time.time()) - 3600).status == 401
    other = SlackSender(sender.bot_url, secret="not-the-real-secret")
    assert other.post(body).status == 401
    time.sleep(0.5)
    assert openai_fake.requests == []
    assert [c for c in slack.calls if c.method != "auth.test"] == []
    assert rdb.dbsize() == 0


def test_url_verification_challenge(sender: SlackSender) -> None:
    reply = sender.post(json.dumps({"type": "url_verification", "challenge": "c-123", "token": "x"}))
    assert reply.status == 200 and "c-123" in reply.body


def test_ignores_bots_edits_and_its_own_messages(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    sender.send_event(message(DM, ALICE, "from a bot", bot_id="B0OTHER"))
    sender.send_event(message(DM, BOT_USER, "my own words"))
    sender.send_event(message(DM, ALICE, "edited", subtype="message_changed"))
    sender.send_event(message(DM, ALICE, "gone", subtype="message_deleted"))
    marker = message(DM, ALICE, "marker")
    sender.send_event(marker)
    answers(slack, DM, marker["ts"])
    assert [user_texts(i["input_items"])[-1] for i in openai_fake.model_inputs] == ["user: marker"]


def test_workspaces_never_share_threads(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    ts = new_ts()
    sender.send_event(mention(CHANNEL, ALICE, "secret plan A", ts=ts))
    answers(slack, CHANNEL, ts)
    # Another workspace with the same channel id and thread ts (ids are only unique per workspace).
    sender.send_event(mention(CHANNEL, ALICE, "what was the plan?", ts=ts), team_id="T0OTHER")
    slack.wait_for(lambda: len(openai_fake.model_inputs) == 2)
    assert len(openai_fake.conversations) == 2
    assert user_texts(openai_fake.model_inputs[1]["input_items"]) == ["user: what was the plan?"]
    assert rdb.exists(f"sa:{{-:T0OTHER}}:thread:c:{CHANNEL}:{ts}")


def test_messages_tab_sets_suggested_prompts_and_context_reaches_model(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    opened = {
        "type": "app_home_opened",
        "user": ALICE,
        "channel": DM,
        "tab": "messages",
        "event_ts": new_ts(),
    }
    sender.send_event(opened)
    slack.wait_for(lambda: bool(slack.suggested_prompts()))
    prompts = slack.suggested_prompts()[0]
    assert prompts["channel_id"] == DM and len(prompts["prompts"]) == 3

    context = {
        "type": "app_context_changed",
        "user": ALICE,
        "channel": DM,
        "event_ts": new_ts(),
        "context": {"entities": [{"type": "slack#/types/channel_id", "value": "C0PROJECT", "team_id": TEAM}]},
    }
    sender.send_event(context)
    time.sleep(0.3)
    question = message(DM, ALICE, "what am I looking at?")
    sender.send_event(question)
    answers(slack, DM, question["ts"])
    assert "<#C0PROJECT>" in openai_fake.model_inputs[0]["instructions"]
