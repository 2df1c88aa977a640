"""Assistant threads held in Redis (issue 17), end to end, on each Redis-held backend: the history sent is
trimmed to HISTORY_TOKEN_BUDGET, a worker killed mid-answer still answers once and adds nothing twice,
what only OpenAI hosts is refused clearly (at start-up, and in the thread). The conversation behaviour
every backend shares is in test_backend_contract_e2e.py."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.errors import ConfigError, NotOnThisServer
from bot.keys import Keys
from bot.settings import Mode, load_settings
from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import TEAM, SlackSender, mention, message
from tests.redis_topologies import on_topologies
from tests.test_backend_contract_e2e import THREAD, ask, sent
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, DM, answers, user_texts
from tests.test_files_e2e import PNG, share
from tests.test_reliability_e2e import FAST, all_turns_done
from tests.test_tools_e2e import TEAM_TOOLS

HELD = ("responses", "chat_completions")


@pytest.fixture(params=HELD)
def backend(request: pytest.FixtureRequest, openai_fake: FakeOpenAI) -> str:
    openai_fake.set_api_style(str(request.param))
    return str(request.param)


def held_items(rdb: redis.Redis, conversation_id: str) -> list[dict[str, Any]]:
    return [json.loads(e)["item"] for e in rdb.lrange(Keys(TEAM).held_items(conversation_id), 0, -1)]


def test_the_history_sent_is_trimmed_to_the_budget_oldest_first(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(ASSISTANT_BACKEND=backend, HISTORY_TOKEN_BUDGET="1000").url)
    # Each turn is about 600 tokens (o200k: " alpha" is one token; its echo doubles it): two fit, three not.
    first, second = "one" + " alpha" * 300, "two" + " alpha" * 300
    ask(slack, sender, first)
    ask(slack, sender, second)
    assert sent(openai_fake) == [f"user: {first}", f"assistant: Echo: {first}", f"user: {second}"]
    ask(slack, sender, "three?")
    # The oldest turn went out of what the model reads, whole; the newer one and the question stayed.
    assert sent(openai_fake) == [f"user: {second}", f"assistant: Echo: {second}", "user: three?"]
    # The instructions always go.
    assert "helpful assistant inside Slack" in str(openai_fake.model_inputs[-1]["instructions"])
    # Trimming is what is sent, not what is kept: the thread still holds every turn.
    conversation_id = str(rdb.hget(THREAD, "conversation_id"))
    assert len(user_texts(held_items(rdb, conversation_id))) == 6


def test_a_turn_over_the_budget_on_its_own_is_told_to_start_over(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(ASSISTANT_BACKEND=backend, HISTORY_TOKEN_BUDGET="1000").url)
    answer = ask(slack, sender, "alpha " * 1200)
    assert "grown too long" in answer
    assert openai_fake.model_inputs == []


def test_a_tool_output_over_the_budget_is_told_and_the_thread_goes_on(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    """A tool round whose output doesn't fit HISTORY_TOKEN_BUDGET (with the question and call it answers)
    is told to start over, and the output still joins the thread: the call is answered, so the next
    message is answered too (before, the call stayed open and every later request was refused)."""
    sender = SlackSender(start_bot(ASSISTANT_BACKEND=backend, HISTORY_TOKEN_BUDGET="1000", **TEAM_TOOLS).url)
    city = "alpha " * 700  # the tool's output repeats it: with the call's arguments, over 1,000 tokens
    weather = ToolCall("get_weather", {"city": city, "unit": "celsius"}, call_id="call_big")
    openai_fake.script(Reply(tool_calls=(weather,)))
    assert "grown too long" in ask(slack, sender, "weather?")
    assert len(openai_fake.model_inputs) == 1  # the round with the output was never sent
    conversation_id = str(rdb.hget(THREAD, "conversation_id"))
    kinds = [(i["type"], i.get("call_id")) for i in held_items(rdb, conversation_id)]
    assert kinds == [("message", None), ("function_call", "call_big"), ("function_call_output", "call_big")]
    assert ask(slack, sender, "thanks") == "Echo: thanks"
    # The tool round, over the budget, went out of what the model reads, whole.
    assert sent(openai_fake) == ["user: thanks"]


@on_topologies("cluster")  # the commit script's keys share the workspace's slot
def test_kill_9_mid_answer_answers_once_and_adds_nothing_twice(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    doomed = start_bot(ASSISTANT_BACKEND=backend, **FAST)
    text = "".join(f"word{i} " for i in range(60))
    # The killed response is run again from the history (a server that kept nothing can't resume it):
    # the same model answers the same question the same way.
    openai_fake.script(Reply(text=text, chunk_size=8, chunk_delay=0.06), Reply(text=text))
    root = mention(CHANNEL, ALICE, "a long answer please")
    sender = SlackSender(doomed.url)
    sender.send_event(root)
    slack.wait_for(lambda: any(m.streaming and len(m.text) > 40 for m in slack.messages(CHANNEL, root["ts"])))
    sender.send_event(message(CHANNEL, BOB, "and then this", thread_ts=root["ts"]))
    doomed.stop(signal.SIGKILL)

    start_bot(ASSISTANT_BACKEND=backend, **FAST)
    msgs = answers(slack, CHANNEL, root["ts"], count=2, timeout=30)
    assert [m.text for m in msgs] == [text, "Echo: and then this"]
    # The re-run read the same history as the killed run: the question, once.
    assert sent(openai_fake, 1) == sent(openai_fake, 0) == ["user: a long answer please"]
    assert sent(openai_fake, 2) == [
        "user: a long answer please",
        f"assistant: {text}",
        "user: and then this",
    ]
    thread = f"sa:{{-:{TEAM}}}:thread:c:{CHANNEL}:{root['ts']}"
    conversation_id = str(rdb.hget(thread, "conversation_id"))
    assert user_texts(held_items(rdb, conversation_id)) == [
        "user: a long answer please",
        f"assistant: {text}",
        "user: and then this",
        "assistant: Echo: and then this",
    ]


def test_kill_9_after_a_tool_round_reruns_only_the_unfinished_round(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    doomed = start_bot(ASSISTANT_BACKEND=backend, **FAST)
    text = "".join(f"word{i} " for i in range(60))
    openai_fake.script(
        Reply(tool_calls=(ToolCall("current_time", {}, call_id="call_now"),)),
        Reply(text=text, chunk_size=8, chunk_delay=0.06),
        Reply(text=text),
    )
    root = mention(CHANNEL, ALICE, "what time is it, at length")
    SlackSender(doomed.url).send_event(root)
    slack.wait_for(lambda: any(m.streaming and len(m.text) > 40 for m in slack.messages(CHANNEL, root["ts"])))
    doomed.stop(signal.SIGKILL)

    start_bot(ASSISTANT_BACKEND=backend, **FAST)
    # The retry stops the stream it adopts before it writes the answer again: wait for the turn's end.
    slack.wait_for(lambda: all_turns_done(rdb), timeout=30)
    [answer] = answers(slack, CHANNEL, root["ts"], timeout=30)
    assert answer.text == text
    # The first round had ended: it was not asked again, and its tool did not run again. The second was
    # run again with the same input (the call's output, from the record).
    assert len(openai_fake.model_inputs) == 3

    def read(index: int) -> list[dict[str, Any]]:  # what the model read (the fake gives items new ids)
        return [
            {k: v for k, v in i.items() if k != "id"} for i in openai_fake.model_inputs[index]["input_items"]
        ]

    assert read(2) == read(1)
    assert [i["type"] for i in read(2)] == ["message", "function_call", "function_call_output"]
    thread = f"sa:{{-:{TEAM}}}:thread:c:{CHANNEL}:{root['ts']}"
    items = held_items(rdb, str(rdb.hget(thread, "conversation_id")))
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output", "message"]
    assert user_texts(items) == ["user: what time is it, at length", f"assistant: {text}"]


def test_a_dropped_stream_is_asked_again_and_the_thread_holds_the_question_once(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(ASSISTANT_BACKEND=backend).url)
    # The server kept nothing to resume: the answer is asked again, and rewritten in place.
    openai_fake.script(Reply(text="a first try that breaks", chunk_size=4, drop_after_chunks=2))
    event = message(DM, ALICE, "hello there")
    sender.send_event(event)
    slack.wait_for(lambda: len(openai_fake.model_inputs) == 2 and all_turns_done(rdb))
    [answer] = answers(slack, DM, event["ts"])
    assert answer.text == "Echo: hello there"
    assert sent(openai_fake, 0) == sent(openai_fake, 1) == ["user: hello there"]
    conversation_id = str(rdb.hget(THREAD, "conversation_id"))
    assert user_texts(held_items(rdb, conversation_id)) == [
        "user: hello there",
        "assistant: Echo: hello there",
    ]


def test_a_shared_file_asks_for_file_search_and_is_refused_clearly(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(ASSISTANT_BACKEND=backend).url)
    pdf = slack.add_file("report.pdf", b"%PDF-1.4 launch is in May", mimetype="application/pdf")
    event = share(DM, ALICE, "When is the launch?", [pdf])
    assert sender.send_event(event).status == 200
    [reply] = answers(slack, DM, event["ts"])
    assert reply.text == f":warning: {NotOnThisServer.user_message}"
    # Nothing was uploaded anywhere, and no model was asked.
    assert openai_fake.files == {} and openai_fake.model_inputs == []
    # The thread goes on answering what the server can.
    assert ask(slack, sender, "hello") == "Echo: hello"


@pytest.mark.parametrize("name", HELD)
@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("ASSISTANT_TOOLS", "current_time,web_search", "web_search"),
        ("ASSISTANT_TOOLS", "code_interpreter", "code_interpreter"),
        ("KNOWLEDGE_VECTOR_STORE_IDS", "vs_team", "KNOWLEDGE_VECTOR_STORE_IDS"),
    ],
)
def test_hosted_tools_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, setting: str, value: str, named: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret")
    monkeypatch.setenv("ASSISTANT_BACKEND", name)
    monkeypatch.setenv(setting, value)
    with pytest.raises(ConfigError) as refused:
        load_settings(Mode.HTTP)
    assert named in str(refused.value) and f"ASSISTANT_BACKEND={name}" in str(refused.value)
    monkeypatch.setenv("ASSISTANT_BACKEND", "conversations")  # OpenAI hosts them: fine there
    assert load_settings(Mode.HTTP).assistant_backend == "conversations"


@pytest.mark.parametrize("name", HELD)
def test_a_hosted_mcp_server_is_refused_at_start_up(tmp_path: Path, name: str) -> None:
    """The command itself stops with a clear line (exit 2) when a hosted MCP server is configured on a
    Redis-held backend: OpenAI's Responses API calls those, and this server has no such tool."""
    hosted = [{"label": "ops", "transport": "hosted", "url": "https://mcp.example.com/mcp"}]
    env = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-x", "OPENAI_API_KEY": "sk-x"}
    env |= {"SLACK_SIGNING_SECRET": "s", "ASSISTANT_BACKEND": name, "MCP_SERVERS": json.dumps(hosted)}
    exe = Path(sys.executable).with_name("slack-assistant")
    cmd = [str(exe), "--http", "--port", "1"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "MCP server ops: a hosted server needs OpenAI" in result.stderr
    assert f"ASSISTANT_BACKEND={name}" in result.stderr and "Traceback" not in result.stderr


def test_a_shared_image_goes_inline_as_an_image_input(
    backend: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(ASSISTANT_BACKEND=backend).url)
    png = slack.add_file("chart.png", PNG, mimetype="image/png")
    event = share(DM, ALICE, "What does this chart show?", [png])
    assert sender.send_event(event).status == 200
    [reply] = answers(slack, DM, event["ts"])
    assert reply.text.startswith("Echo: What does this chart show?")
    # No Files API on such a server: the image went with the message, as a data URL.
    assert openai_fake.files == {}
    [item] = openai_fake.model_inputs[-1]["input_items"]
    [image] = [p for p in item["content"] if p["type"] == "input_image"]
    assert image["image_url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    if backend == "chat_completions":  # the request itself carried an image_url part
        [_, user_message] = openai_fake.model_inputs[-1]["messages"]
        assert [p["type"] for p in user_message["content"]] == ["text", "image_url"]
    # The thread keeps it: a later turn sends it again.
    assert ask(slack, sender, "And the trend?") == "Echo: And the trend?"
    earlier = openai_fake.model_inputs[-1]["input_items"][0]
    assert any(p["type"] == "input_image" for p in earlier["content"])
