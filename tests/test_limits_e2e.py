"""Real platform limits, end to end: the context window, the container's file cap, vanished responses,
Slack's rate tiers, its 3-second windows and where ephemerals show (the bot as a real process, the fakes
as strict as the platforms)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import SlackSender, mention, message
from tests.test_bridge_e2e import ALICE, CHANNEL, DM, answers, user_texts
from tests.test_commands_e2e import slash
from tests.test_files_e2e import share
from tests.test_tools_e2e import TEAM_TOOLS

# 1,600 characters: about 400 tokens as the fake counts them.
LONG = "word " * 320


def test_a_thread_past_the_context_window_keeps_answering(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    openai_fake.set_context_window(2_000)
    # Twenty-odd answers in one thread: more than a thread gets per minute by default.
    sender = SlackSender(start_bot(CONTEXT_COMPACT_THRESHOLD="1000", THREAD_ANSWERS_PER_MINUTE="0").url)
    root = mention(CHANNEL, ALICE, LONG)
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    sent = 1
    # Writing on until OpenAI has compacted the thread (it would refuse it past 2,000 tokens), then ten more.
    while not openai_fake.compactions:
        assert sent < 10, "no compaction in ten long messages"
        sender.send_event(message(CHANNEL, ALICE, LONG, thread_ts=root["ts"]))
        sent += 1
        answers(slack, CHANNEL, root["ts"], count=sent)
    for _ in range(10):
        sender.send_event(message(CHANNEL, ALICE, LONG, thread_ts=root["ts"]))
        sent += 1
        answers(slack, CHANNEL, root["ts"], count=sent)
    msgs = slack.messages(CHANNEL, root["ts"])
    assert len(msgs) == sent and not any(m.text.startswith(":warning:") for m in msgs)
    assert all(r["context_management"][0]["type"] == "compaction" for r in _creates(openai_fake))


def test_a_message_too_long_for_the_window_is_answered_with_a_way_out(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    openai_fake.set_context_window(2_000)
    sender = SlackSender(start_bot(CONTEXT_COMPACT_THRESHOLD="1000").url)
    event = mention(CHANNEL, ALICE, LONG * 6)
    sender.send_event(event)
    [msg] = answers(slack, CHANNEL, event["ts"])
    assert msg.text.startswith(":warning: This thread has grown too long")
    assert "`@Assistant reset`" in msg.text and "try again" not in msg.text.lower()


def test_max_output_tokens_is_sent_when_configured(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(MAX_OUTPUT_TOKENS="2048").url)
    event = mention(CHANNEL, ALICE, "hi")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"])
    assert [r["max_output_tokens"] for r in _creates(openai_fake)] == [2048]


def test_a_vanished_response_is_asked_again_without_the_message_twice(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot().url)
    openai_fake.script(
        Reply(text="This answer will be lost halfway through its text.", chunk_size=4),
        Reply(text="The whole answer, the second time."),
    )
    openai_fake.vanish_next_response(after_events=6)
    event = mention(CHANNEL, ALICE, "tell me")
    sender.send_event(event)

    def recovered() -> bool:
        msgs = slack.messages(CHANNEL, event["ts"])
        return any(m.text == "The whole answer, the second time." and not m.streaming for m in msgs)

    slack.wait_for(recovered, timeout=30)
    assert len(openai_fake.vanished) == 1 and len(openai_fake.model_inputs) == 2
    # The answer so far was rewritten in place: one message, the second answer.
    assert [m.text for m in slack.messages(CHANNEL, event["ts"])] == ["The whole answer, the second time."]
    [conv] = openai_fake.conversations.values()
    assert user_texts(conv["items"]) == ["user: tell me", "assistant: The whole answer, the second time."]


def test_sixty_files_give_the_container_the_newest_fifty_and_the_user_is_told(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(assistant_tools="code_interpreter").url)
    first = [slack.add_file(f"old{i:02d}.csv", b"a,b\n1,2\n", mimetype="text/csv") for i in range(10)]
    root = share(CHANNEL, ALICE, "Here is the old data", first)
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    for batch in range(5):
        files = [slack.add_file(f"new{batch}{i}.csv", b"a,b\n3,4\n", mimetype="text/csv") for i in range(10)]
        sender.send_event(share(CHANNEL, ALICE, f"batch {batch}", files, thread_ts=root["ts"]))
        answers(slack, CHANNEL, root["ts"], count=2 + batch + (1 if batch == 4 else 0))
    file_ids = [r["tools"] for r in _creates(openai_fake)]
    containers = [
        t["container"]["file_ids"] for tools in file_ids for t in tools if t["type"] == "code_interpreter"
    ]
    assert [len(ids) for ids in containers] == [10, 20, 30, 40, 50, 50]
    names = {openai_fake.files[i]["filename"] for i in containers[-1]}
    assert names == {f"new{b}{i}.csv" for b in range(5) for i in range(10)}
    notices = [m.text for m in slack.messages(CHANNEL, root["ts"]) if m.text.startswith(":warning:")]
    assert len(notices) == 1 and "newest 50" in notices[0] and "`old00.csv`" in notices[0]
    assert openai_fake.spec_violations == []


def _creates(openai_fake: FakeOpenAI) -> list[dict]:
    return [r["json"] for r in openai_fake.requests if r["method"] == "POST" and r["path"] == "/v1/responses"]


def test_forty_mentions_at_once_in_one_workspace_are_each_answered_once_within_slacks_tiers(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(RATE_LIMIT_USER_PER_MINUTE="0", RATE_LIMIT_TEAM_PER_MINUTE="0").url)
    openai_fake.default_reply = Reply(text="An answer of a few words, streamed in pieces.", chunk_size=6)
    events = [mention(f"C0CH{i % 4:04d}", f"U0P{i:05d}", f"question {i}") for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        assert all(r.status == 200 for r in pool.map(sender.send_event, events))

    def all_answered() -> bool:
        return all(
            [m.text for m in slack.messages(e["channel"], e["ts"]) if not m.streaming]
            == ["An answer of a few words, streamed in pieces."]
            for e in events
        )

    slack.wait_for(all_answered, timeout=120)
    for e in events:  # once each: one message per thread
        assert len(slack.messages(e["channel"], e["ts"])) == 1
    assert len(openai_fake.model_inputs) == 40
    limited = slack.rate_limited()
    assert len(limited) <= 10, [(r.method, r.channel) for r in limited]


def test_status_acks_at_once_while_openai_is_slow_and_then_answers(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot().url)
    first = message(DM, ALICE, "hello", channel_type="im")
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    openai_fake.slow_down("GET", r"^/v1/conversations/", 4.0)
    response_url = sender.response_url()
    started = time.monotonic()
    reply = sender.send_form(slash("status", channel=DM, user=ALICE, response_url=response_url))
    acked = time.monotonic() - started
    assert reply.status == 200 and reply.body == ""
    assert acked < 3.0, f"acked after {acked:.1f}s"
    [answer] = sender.responses(response_url, timeout=30)
    assert answer["text"].startswith("*Assistant thread*") and answer["response_type"] == "ephemeral"


def test_a_command_at_the_top_of_a_channel_is_answered_where_the_user_sees_it(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot().url)
    event = mention(CHANNEL, ALICE, "status")
    sender.send_event(event)
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE)))
    [shown] = slack.ephemerals(CHANNEL, ALICE)
    assert shown.thread_ts is None and "no assistant thread here yet" in shown.text
    assert slack.ephemerals(CHANNEL, ALICE, include_invisible=True) == [shown]


def test_more_tool_outputs_than_items_create_takes_go_in_batches(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(tool_max_rounds="1", **TEAM_TOOLS).url)
    many = Reply(
        tool_calls=tuple(ToolCall("get_weather", {"city": f"C{i}", "unit": "celsius"}) for i in range(25))
    )
    openai_fake.script(many, many)
    event = mention(CHANNEL, ALICE, "The weather everywhere, please")
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"], timeout=30)
    assert answer.text.endswith("Try a narrower question.")
    items = openai_fake.conversation(openai_fake.model_inputs[0]["conversation"])["items"]
    calls = [i["call_id"] for i in items if i["type"] == "function_call"]
    closed = {i["call_id"] for i in items if i["type"] == "function_call_output"}
    # The second round's 25 calls were closed through conversations.items.create, at most 20 a call.
    assert len(calls) == 50 and set(calls) == closed
    creates = [r for r in openai_fake.requests if r["method"] == "POST" and r["path"].endswith("/items")]
    assert [len(r["json"]["items"]) for r in creates] == [20, 5]
