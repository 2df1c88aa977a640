"""Real platform limits, end to end: the context window, the container's file cap, vanished responses,
Slack's rate tiers, its 3-second windows and where ephemerals show (the bot as a real process, the fakes
as strict as the platforms)."""

from __future__ import annotations

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.slack_api import FakeSlack
from tests.harness import SlackSender, mention, message
from tests.test_bridge_e2e import ALICE, CHANNEL, answers, user_texts
from tests.test_files_e2e import share

# 1,600 characters: about 400 tokens as the fake counts them.
LONG = "word " * 320


def test_a_thread_past_the_context_window_keeps_answering(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    openai_fake.set_context_window(2_000)
    sender = SlackSender(start_bot(CONTEXT_COMPACT_THRESHOLD="1000").url)
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
