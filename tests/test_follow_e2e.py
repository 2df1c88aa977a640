"""Issue 15 item 5, end to end: the assistant thread follows Slack. A deleted message leaves the conversation,
an edit made before the turn ran is what gets answered, "Forget this message" removes a message and its
answer (for the thread's owner only), and `/assistant history` shows what is left."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import BOT_USER, TEAM, BotProcess, SlackSender, mention, message, new_ts
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers, user_texts
from tests.test_commands_e2e import command, shortcut
from tests.test_tools_e2e import TEAM_TOOLS

NS = f"sa:{{-:{TEAM}}}"


def deleted(msg: dict[str, Any], **previous: Any) -> dict[str, Any]:
    """Slack's `message_deleted` event for `msg` (docs: message/message_deleted; `deleted_ts` names the
    message, `previous_message` is the message as it was)."""
    before = {"type": "message", "user": msg["user"], "text": msg["text"], "ts": msg["ts"], **previous}
    if msg.get("thread_ts"):
        before["thread_ts"] = msg["thread_ts"]
    ts = new_ts()
    return {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": msg["channel"],
        "channel_type": msg.get("channel_type", "channel"),
        "ts": ts,
        "deleted_ts": msg["ts"],
        "event_ts": ts,
        "previous_message": before,
    }


def edited(msg: dict[str, Any], text: str) -> dict[str, Any]:
    """Slack's `message_changed` event: `message` is the new version (same ts, with `edited`)."""
    before = {"type": "message", "user": msg["user"], "text": msg["text"], "ts": msg["ts"]}
    ts = new_ts()
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": msg["channel"],
        "channel_type": msg.get("channel_type", "channel"),
        "ts": ts,
        "event_ts": ts,
        "message": {**before, "text": text, "edited": {"user": msg["user"], "ts": ts}},
        "previous_message": before,
    }


def conversation_texts(openai_fake: FakeOpenAI, conv_id: str) -> list[str]:
    return user_texts(openai_fake.conversation(conv_id)["items"])


def wait_for_log(slack: FakeSlack, bot: BotProcess, line: str) -> None:
    slack.wait_for(lambda: line in bot.logs(), timeout=15)


def test_deleting_a_message_removes_its_item_from_the_conversation(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess, rdb: redis.Redis
) -> None:
    first = message(DM, ALICE, "my card number is 4242")
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    second = message(DM, ALICE, "what is the weather")
    sender.send_event(second)
    answers(slack, DM, second["ts"])
    [conv_id] = list(openai_fake.conversations)
    items = openai_fake.conversation(conv_id)["items"]
    first_item = items[0]["id"]

    # The turn recorded which response each message became (one EVALSHA per turn): the items themselves are
    # looked up only when a message is removed, not on every answer.
    record = rdb.hgetall(f"{NS}:items:u:{ALICE}")
    first_entry = json.loads(record[first["ts"]])
    assert first_entry["responses"] == [openai_fake.model_inputs[0]["response_id"]]
    assert first_entry["in"] == [] and first_entry["out"] == []
    [answer] = slack.messages(DM, first["ts"])
    assert first_entry["answers"] == [answer.ts] and record[f"a:{answer.ts}"] == first["ts"]
    assert rdb.pttl(f"{NS}:items:u:{ALICE}") > 0
    assert not [r for r in openai_fake.requests if r["method"] == "GET" and r["path"].endswith("/items")]

    sender.send_event(deleted(first, channel_type="im"))
    slack.wait_for(lambda: first_item not in [i["id"] for i in openai_fake.conversation(conv_id)["items"]])
    # Looked up then, from the response: the message's item, and (kept, for "Forget") its answer's.
    kept = json.loads(rdb.hget(f"{NS}:items:u:{ALICE}", first["ts"]) or "{}")
    assert kept == {"in": [], "out": [items[1]["id"]], "answers": [answer.ts]}
    assert conversation_texts(openai_fake, conv_id) == [
        "assistant: Echo: my card number is 4242",
        "user: what is the weather",
        "assistant: Echo: what is the weather",
    ]

    third = message(DM, ALICE, "and tomorrow?")
    sender.send_event(third)
    answers(slack, DM, third["ts"])
    seen = openai_fake.model_inputs[-1]["input_items"]
    assert first_item not in [i.get("id") for i in seen]
    assert "user: my card number is 4242" not in user_texts(seen)
    assert user_texts(seen)[-1] == "user: and tomorrow?"

    # Bad input is ignored quietly, with a log line: a message the bot never saw, one in a thread it does not
    # answer, a bot's message, and a deletion without its fields.
    before = openai_fake.conversation(conv_id)["items"]
    sender.send_event(deleted(message(DM, ALICE, "never seen", channel_type="im")))
    sender.send_event(deleted(message(CHANNEL, ALICE, "elsewhere", thread_ts=new_ts())))
    sender.send_event(deleted(message(DM, ALICE, "a bot's", channel_type="im"), bot_id="B0OTHER"))
    sender.send_event(message(DM, ALICE, "gone", subtype="message_deleted"))
    wait_for_log(slack, bot, "the thread holds nothing for it")
    wait_for_log(slack, bot, "not an assistant thread")
    assert openai_fake.conversation(conv_id)["items"] == before
    assert slack.ephemerals(DM) == []


def test_an_edit_before_the_turn_ran_is_what_is_answered(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    front = start_bot(WORKER_CONCURRENCY="0")  # acks and queues; the turns wait for a worker
    sender = SlackSender(front.url)
    asked = message(DM, ALICE, "what is 2+2")
    dropped = message(DM, ALICE, "never mind this one")
    sender.send_event(asked)
    sender.send_event(dropped)

    def queued_texts() -> list[str]:
        return [json.loads(fields["turn"])["text"] for _, fields in rdb.xrange(f"{NS}:turns")]

    slack.wait_for(lambda: queued_texts() == ["what is 2+2", "never mind this one"])
    # Slack's language detection sends message_changed with the same text: nothing changes.
    sender.send_event(edited(asked, "what is 2+2"))
    sender.send_event(edited(asked, "what is 3+3"))
    sender.send_event(deleted(dropped, channel_type="im"))
    slack.wait_for(
        lambda: queued_texts()[:1] == ["what is 3+3"] and "never mind this one" not in queued_texts()
    )

    start_bot(worker=True)
    [reply] = answers(slack, DM, asked["ts"])
    assert reply.text == "Echo: what is 3+3"
    [conv_id] = list(openai_fake.conversations)
    assert conversation_texts(openai_fake, conv_id) == ["user: what is 3+3", "assistant: Echo: what is 3+3"]
    slack.wait_for(lambda: not rdb.xrange(f"{NS}:turns"))  # the dropped message's removal ran too
    assert slack.messages(DM, dropped["ts"]) == []
    assert [user_texts(i["input_items"])[-1] for i in openai_fake.model_inputs] == ["user: what is 3+3"]

    # After the turn ran, an edit changes nothing: the thread keeps what was answered.
    sender.send_event(edited({**asked, "text": "what is 3+3"}, "what is 5+5"))
    wait_for_log(slack, front, "after its turn started: nothing changes")
    assert conversation_texts(openai_fake, conv_id) == ["user: what is 3+3", "assistant: Echo: what is 3+3"]


def test_forget_shortcut_removes_a_message_and_its_answer_and_history_shows_it(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(assistant_tools="web_search", **TEAM_TOOLS).url)
    openai_fake.script(
        Reply(text="Hello!"),
        Reply(
            text="Searching.",
            web_results=(("https://weather.example/today", "Weather today"),),
            tool_calls=(ToolCall("get_weather", {"city": "Lisbon", "unit": "celsius"}),),
        ),
        Reply(echo_tool_outputs=True),
        Reply(text="Bye!"),
    )
    first = message(DM, ALICE, "hello")
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    second = message(DM, ALICE, "weather please")
    sender.send_event(second)
    [answer] = answers(slack, DM, second["ts"])
    third = message(DM, ALICE, "bye")
    sender.send_event(third)
    answers(slack, DM, third["ts"])
    [conv_id] = list(openai_fake.conversations)
    kinds = {i["type"] for i in openai_fake.conversation(conv_id)["items"]}
    # The answer is more than its message: a search, a function call and its output, two rounds of text.
    assert {"web_search_call", "function_call", "function_call_output"} <= kinds
    before = command(sender, "history").lower()
    assert "weather please" in before and "function call" in before and "web search call" in before

    # Used on the answer: the question, the search and the answer go.
    assert (
        shortcut(
            sender, channel=DM, user=ALICE, ts=answer.ts, thread_ts=second["ts"], callback="forget_message"
        )
        == 200
    )
    slack.wait_for(lambda: any("no longer remembers" in e.text for e in slack.ephemerals(DM, ALICE)))
    items = openai_fake.conversation(conv_id)["items"]
    assert [i["type"] for i in items] == ["message"] * 4
    assert user_texts(items) == ["user: hello", "assistant: Hello!", "user: bye", "assistant: Bye!"]

    history = command(sender, "history").lower()
    assert "weather please" not in history and "searching" not in history and "tool said" not in history
    assert "web search" not in history and "function call" not in history
    assert "hello" in history and "bye!" in history

    # Used on the user's own message: it and its answer go; once more, there is nothing left to forget.
    assert shortcut(sender, channel=DM, user=ALICE, ts=first["ts"], callback="forget_message") == 200
    slack.wait_for(
        lambda: user_texts(openai_fake.conversation(conv_id)["items"]) == ["user: bye", "assistant: Bye!"]
    )
    assert shortcut(sender, channel=DM, user=ALICE, ts=first["ts"], callback="forget_message") == 200
    slack.wait_for(lambda: any("holds nothing" in e.text for e in slack.ephemerals(DM, ALICE)))

    fourth = message(DM, ALICE, "what did I ask?")
    sender.send_event(fourth)
    answers(slack, DM, fourth["ts"])
    assert user_texts(openai_fake.model_inputs[-1]["input_items"]) == [
        "user: bye",
        "assistant: Bye!",
        "user: what did I ask?",
    ]


def test_only_the_threads_owner_may_forget(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, bot: BotProcess
) -> None:
    root = mention(CHANNEL, ALICE, "plan the offsite")
    sender.send_event(root)
    [answer] = answers(slack, CHANNEL, root["ts"])
    [conv_id] = list(openai_fake.conversations)
    before = openai_fake.conversation(conv_id)["items"]

    assert (
        shortcut(
            sender, channel=CHANNEL, user=BOB, ts=answer.ts, thread_ts=root["ts"], callback="forget_message"
        )
        == 200
    )
    slack.wait_for(
        lambda: any("Only the person who started" in e.text for e in slack.ephemerals(CHANNEL, BOB))
    )
    assert openai_fake.conversation(conv_id)["items"] == before

    # The owner may.
    assert (
        shortcut(
            sender, channel=CHANNEL, user=ALICE, ts=answer.ts, thread_ts=root["ts"], callback="forget_message"
        )
        == 200
    )
    slack.wait_for(lambda: openai_fake.conversation(conv_id)["items"] == [])
    # The confirmation follows the deletions.
    slack.wait_for(lambda: any("no longer remembers" in e.text for e in slack.ephemerals(CHANNEL, ALICE)))
    assert BOT_USER not in " ".join(e.text for e in slack.ephemerals(CHANNEL))


def test_a_message_deleted_while_its_answer_is_written_leaves_the_conversation_after_it(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    """The removal is queued behind the running turn (like reset), so it never cuts into the answer and
    finds the items the turn recorded. Whenever the deletion arrives, the outcome is the same."""
    text = "A long answer. " * 20
    openai_fake.script(Reply(text=text, chunk_size=8, chunk_delay=0.02))
    asked = message(DM, ALICE, "tell me at length")
    sender.send_event(asked)
    slack.wait_for(lambda: any(m.streaming for m in slack.messages(DM, asked["ts"])))
    sender.send_event(deleted(asked, channel_type="im"))
    [answer] = answers(slack, DM, asked["ts"])
    assert answer.text.startswith("A long answer.")
    [conv_id] = list(openai_fake.conversations)
    slack.wait_for(lambda: user_texts(openai_fake.conversation(conv_id)["items"]) == [f"assistant: {text}"])
    slack.wait_for(lambda: not rdb.xrange(f"{NS}:turns"))
    entry = json.loads(rdb.hget(f"{NS}:items:u:{ALICE}", asked["ts"]))
    assert entry["in"] == [] and len(entry["out"]) == 1  # the answer can still be forgotten


def test_forget_on_a_message_being_answered_runs_after_the_answer(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    openai_fake.script(Reply(text="A long answer. " * 20, chunk_size=8, chunk_delay=0.02))
    asked = message(DM, ALICE, "tell me at length")
    sender.send_event(asked)
    slack.wait_for(lambda: any(m.streaming for m in slack.messages(DM, asked["ts"])))
    assert shortcut(sender, channel=DM, user=ALICE, ts=asked["ts"], callback="forget_message") == 200
    answers(slack, DM, asked["ts"])
    slack.wait_for(lambda: any("no longer remembers" in e.text for e in slack.ephemerals(DM, ALICE)))
    [conv_id] = list(openai_fake.conversations)
    assert openai_fake.conversation(conv_id)["items"] == []
