"""The assistant backends' contract (issue 17): the same conversation tests, end to end, against every
ASSISTANT_BACKEND, each on a fake playing a server of its API style: OpenAI itself (Conversations +
Responses), a store-less Responses server, a Chat Completions-only server. So the backends cannot drift.

What each test asserts is what the user sees in Slack, what the model was sent (the fake's model inputs,
which it records in the Responses input shape whatever the API), and what the assistant thread holds
(the fake's conversation, or the Redis list of a held thread).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from bot.keys import Keys
from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, message
from tests.test_bridge_e2e import ALICE, DM, answers, user_texts
from tests.test_commands_e2e import command

BACKENDS = ("conversations", "responses", "chat_completions")
THREAD = f"sa:{{-:{TEAM}}}:thread:u:{ALICE}"  # Alice's top-level DM thread


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, openai_fake: FakeOpenAI) -> str:
    """The backend under test; the fake plays a server of its API style (and nothing more)."""
    name = str(request.param)
    openai_fake.set_api_style("openai" if name == "conversations" else name)
    return name


@pytest.fixture
def sender(start_bot: BotFactory, backend: str) -> SlackSender:
    return SlackSender(start_bot(ASSISTANT_BACKEND=backend).url)


def ask(slack: FakeSlack, sender: SlackSender, text: str) -> str:
    """Alice asks in her DM; the answer's text once it is finished."""
    event = message(DM, ALICE, text)
    assert sender.send_event(event).status == 200
    [reply] = answers(slack, DM, event["ts"])
    return reply.text


def thread_items(backend: str, openai_fake: FakeOpenAI, rdb: redis.Redis) -> list[dict[str, Any]]:
    """What Alice's assistant thread holds: the OpenAI conversation's items, or the held thread's."""
    conversation_id = rdb.hget(THREAD, "conversation_id")
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
