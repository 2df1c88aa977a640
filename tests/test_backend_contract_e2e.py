"""The assistant backends' contract (issue 17): the same conversation tests, end to end, against every
ASSISTANT_BACKEND, each on a fake playing a server of its API style: OpenAI itself (Conversations +
Responses), a store-less Responses server, a Chat Completions-only server. So the backends cannot drift.

What each test asserts is what the user sees in Slack, what the model was sent (the fake's model inputs,
which it records in the Responses input shape whatever the API), and what the assistant thread holds
(the fake's conversation, or the Redis list of a held thread).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bot.keys import Keys
from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, mention, message
from tests.test_agent_e2e import LONG_ANSWER, stream_chunks, task_statuses, wait_active
from tests.test_bridge_e2e import ALICE, CHANNEL, DM, answers, user_texts
from tests.test_commands_e2e import command
from tests.test_feedback_e2e import click
from tests.test_follow_e2e import deleted
from tests.test_tools_e2e import TEAM_TOOLS

BACKENDS = ("conversations", "responses", "chat_completions")
THREAD = f"sa:{{-:{TEAM}}}:thread:u:{ALICE}"  # Alice's top-level DM thread


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, openai_fake: FakeOpenAI) -> str:
    """The backend under test; the fake plays a server of its API style (and nothing more)."""
    name = str(request.param)
    openai_fake.set_api_style("openai" if name == "conversations" else name)
    return name


@pytest.fixture
def launch(start_bot: BotFactory, backend: str) -> Callable[..., SlackSender]:
    """Start a bot on the backend under test (extra settings as keywords); a sender to it."""

    def start(**env: str) -> SlackSender:
        return SlackSender(start_bot(ASSISTANT_BACKEND=backend, **env).url)

    return start


@pytest.fixture
def sender(launch: Callable[..., SlackSender]) -> SlackSender:
    return launch()


def ask(slack: FakeSlack, sender: SlackSender, text: str) -> str:
    """Alice asks in her DM; the answer's text once it is finished."""
    event = message(DM, ALICE, text)
    assert sender.send_event(event).status == 200
    [reply] = answers(slack, DM, event["ts"])
    return reply.text


def thread_items(
    backend: str, openai_fake: FakeOpenAI, rdb: redis.Redis, thread: str = THREAD
) -> list[dict[str, Any]]:
    """What an assistant thread (Alice's DM by default) holds: the OpenAI conversation's items, or the
    held thread's."""
    conversation_id = rdb.hget(thread, "conversation_id")
    assert conversation_id is not None
    if backend == "conversations":
        return list(openai_fake.conversation(str(conversation_id))["items"])
    held = rdb.lrange(Keys(TEAM).held_items(str(conversation_id)), 0, -1)
    return [json.loads(entry)["item"] for entry in held]


def sent(openai_fake: FakeOpenAI, index: int = -1) -> list[str]:
    """The messages the model read in one request (the history and the new input)."""
    return user_texts(openai_fake.model_inputs[index]["input_items"])


def test_each_turn_reads_the_earlier_turns_and_the_thread_keeps_them(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    assert ask(slack, sender, "The code word is pineapple.") == "Echo: The code word is pineapple."
    assert ask(slack, sender, "What was the code word?") == "Echo: What was the code word?"
    conversation = [
        "user: The code word is pineapple.",
        "assistant: Echo: The code word is pineapple.",
        "user: What was the code word?",
    ]
    assert sent(openai_fake) == conversation
    assert user_texts(thread_items(backend, openai_fake, rdb)) == [
        *conversation,
        "assistant: Echo: What was the code word?",
    ]
    # Every request went to the API the backend speaks, and nowhere else.
    paths = {r["path"] for r in openai_fake.requests if r["method"] == "POST"}
    expected = {"conversations": "/v1/responses", "responses": "/v1/responses"}
    assert expected.get(backend, "/v1/chat/completions") in paths
    assert ("/v1/conversations" in paths) == (backend == "conversations")


def test_a_streamed_answer_arrives_in_pieces_and_whole(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    text = " ".join(f"word{i}" for i in range(40))
    openai_fake.script(Reply(text=text, chunk_size=5))
    assert ask(slack, sender, "a long one please") == text
    [answer] = slack.messages(DM)
    assert answer.text == text


def test_function_tools_run_in_the_tool_loop_and_the_thread_keeps_call_and_output(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    openai_fake.script(
        Reply(tool_calls=(ToolCall("current_time", {}, call_id="call_now"),)),
        Reply(echo_tool_outputs=True),
    )
    answer = ask(slack, sender, "What time is it?")
    assert answer.startswith("Tool said: ")
    # The second request carried the call and its output, paired.
    second = openai_fake.model_inputs[1]["input_items"]
    assert [i["type"] for i in second] == ["message", "function_call", "function_call_output"]
    assert second[1]["call_id"] == second[2]["call_id"] == "call_now"
    kinds = [i["type"] for i in thread_items(backend, openai_fake, rdb)]
    assert kinds == ["message", "function_call", "function_call_output", "message"]
    # A later turn sends the whole round again, as the model must see it.
    assert ask(slack, sender, "thanks") == "Echo: thanks"
    assert [i["type"] for i in openai_fake.model_inputs[-1]["input_items"]] == [*kinds, "message"]


def test_reset_starts_a_thread_the_model_reads_from_scratch(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    ask(slack, sender, "The code word is pineapple.")
    old = rdb.hget(THREAD, "conversation_id")
    assert command(sender, "reset") == "Resetting this thread's assistant memory…"
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(DM)))
    assert rdb.hget(THREAD, "conversation_id") is None
    if backend != "conversations":  # the held thread is gone from Redis
        assert not rdb.exists(Keys(TEAM).held_items(str(old)), Keys(TEAM).held_thread(str(old)))
    ask(slack, sender, "What was the code word?")
    assert sent(openai_fake) == ["user: What was the code word?"]
    assert rdb.hget(THREAD, "conversation_id") not in (None, old)


def test_metadata_history_and_status_commands(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    ask(slack, sender, "hello")
    conversation_id = str(rdb.hget(THREAD, "conversation_id"))
    shown = command(sender, "meta")
    assert f"`{conversation_id}`" in shown and "`slack_user`: U0ALICE _(set by the bot)_" in shown
    saved = command(sender, "meta set topic=launch owner='Ann Lee'")
    assert saved.startswith("Saved.") and "`topic`: launch" in saved
    assert "`owner`: Ann Lee" in command(sender, "meta")
    # OpenAI's limits hold on every backend, and a refused change changes nothing.
    assert "is 600 characters; the limit is 512" in command(sender, "meta set note=" + "x" * 600)
    assert "`topic`: launch" in command(sender, "meta")
    command(sender, "meta unset owner")
    assert "owner" not in command(sender, "meta")
    lines = command(sender, "history 2").splitlines()
    assert lines == ["*The newest 2 item(s), newest first*", "*Assistant:* Echo: hello", "*User:* hello"]
    status = command(sender, "status")
    assert f"*Assistant thread* `{conversation_id}`" in status and "• Messages: 2" in status


def test_deleting_a_message_removes_it_from_the_thread_and_from_what_the_model_reads(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    first = message(DM, ALICE, "my card number is 4242")
    sender.send_event(first)
    answers(slack, DM, first["ts"])
    ask(slack, sender, "what is the weather")
    sender.send_event(deleted(first, channel_type="im"))
    slack.wait_for(
        lambda: "user: my card number is 4242" not in user_texts(thread_items(backend, openai_fake, rdb))
    )
    assert user_texts(thread_items(backend, openai_fake, rdb)) == [
        "assistant: Echo: my card number is 4242",
        "user: what is the weather",
        "assistant: Echo: what is the weather",
    ]
    ask(slack, sender, "and tomorrow?")
    assert "user: my card number is 4242" not in sent(openai_fake)


def test_the_stop_button_ends_the_answer_and_the_thread_answers_its_next_message(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    openai_fake.script(
        Reply(text=LONG_ANSWER, chunk_size=4, chunk_delay=0.05), Reply(text="Here is a short answer.")
    )
    root = mention(CHANNEL, ALICE, "Write me a very long essay")
    sender.send_event(root)
    slack.wait_for(lambda: any(m.streaming and m.text for m in slack.messages(CHANNEL, root["ts"])))
    assert sender.send_event(slack.stop_session(CHANNEL, root["ts"], ALICE)).status == 200
    wait_active(slack, root["ts"])
    [answer] = answers(slack, CHANNEL, root["ts"])
    assert answer.stopped_by_user and answer.text.endswith("\n\n_Stopped._")
    assert len(answer.text) < len(LONG_ANSWER)
    sender.send_event(mention(CHANNEL, ALICE, "Just a short one then", thread_ts=root["ts"]))
    [_, second] = answers(slack, CHANNEL, root["ts"], count=2)
    assert second.text == "Here is a short answer."
    # The stopped answer's unfinished text is not in the thread: the model never reads it back.
    assert not any(LONG_ANSWER[:40] in line for line in sent(openai_fake))
    assert sent(openai_fake)[-1] == "user: Just a short one then"


def test_stopped_during_a_tool_call_the_call_is_closed_and_the_thread_goes_on(
    backend: str,
    slack: FakeSlack,
    openai_fake: FakeOpenAI,
    launch: Callable[..., SlackSender],
    rdb: redis.Redis,
) -> None:
    sender = launch(**TEAM_TOOLS)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("nap", {"seconds": 30}, call_id="call_nap"),)),
        Reply(text="Back to work."),
    )
    root = mention(CHANNEL, ALICE, "Take a nap first")
    sender.send_event(root)
    slack.wait_for(lambda: "in_progress" in task_statuses(stream_chunks(slack, root["ts"]), "call_nap"))
    sender.send_event(slack.stop_session(CHANNEL, root["ts"], ALICE))
    wait_active(slack, root["ts"])
    [answer] = answers(slack, CHANNEL, root["ts"])
    assert answer.text.endswith("_Stopped._")
    sender.send_event(mention(CHANNEL, ALICE, "Wake up", thread_ts=root["ts"]))
    [_, second] = answers(slack, CHANNEL, root["ts"], count=2)
    assert second.text == "Back to work."
    thread = f"sa:{{-:{TEAM}}}:thread:c:{CHANNEL}:{root['ts']}"
    items = thread_items(backend, openai_fake, rdb, thread)
    [closed] = [i for i in items if i["type"] == "function_call_output" and i["call_id"] == "call_nap"]
    assert "stopped" in closed["output"]


def test_a_rating_of_an_answer_is_kept_in_the_threads_metadata(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    root = mention(CHANNEL, ALICE, "hi")
    sender.send_event(root)
    [answer] = answers(slack, CHANNEL, root["ts"])
    assert click(sender, answer, "good", user=ALICE) == 200
    thread = f"sa:{{-:{TEAM}}}:thread:c:{CHANNEL}:{root['ts']}"
    conversation_id = str(rdb.hget(thread, "conversation_id"))

    def metadata() -> dict[str, str]:
        if backend == "conversations":
            return dict(openai_fake.conversation(conversation_id)["metadata"])
        return dict(json.loads(rdb.hget(Keys(TEAM).held_thread(conversation_id), "metadata") or "{}"))

    slack.wait_for(lambda: metadata().get("feedback_rating") == "good=1 bad=0")
    assert metadata()["slack_user"] == ALICE
    sender.send_event(mention(CHANNEL, ALICE, "meta", thread_ts=root["ts"]))
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE)))
    [shown] = slack.ephemerals(CHANNEL, ALICE)
    assert "`feedback_rating`: good=1 bad=0 _(set by the bot)_" in shown.text
