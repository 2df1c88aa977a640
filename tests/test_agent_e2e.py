"""Slack's agent experience end to end (issue 15 items 1 and 2): each assistant thread is an agent session
(`processing` while a turn runs, `active` after, named after its first question), the session's stop button
stops the answer on whichever worker runs it, and tool calls, file and web searches show as task cards in
the streamed message. The bot runs as a real process against the fake Slack and OpenAI and a real Redis."""

from __future__ import annotations

import signal
from typing import Any

import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ToolCall
from tests.fakes.slack_api import FakeSlack, Message
from tests.harness import TEAM, SlackSender, mention
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, answers, user_texts
from tests.test_tools_e2e import TEAM_TOOLS

LONG_ANSWER = " ".join(f"word{i}" for i in range(600))


def session_status(slack: FakeSlack, thread_ts: str) -> str | None:
    session = slack.session(CHANNEL, thread_ts)
    return session.status if session is not None else None


def wait_active(slack: FakeSlack, thread_ts: str, times: int = 1) -> None:
    """Until the thread's session went back to `active` `times` times."""

    def done() -> bool:
        session = slack.session(CHANNEL, thread_ts)
        return session is not None and session.statuses.count("active") >= times

    slack.wait_for(done, timeout=30)


def stream_chunks(slack: FakeSlack, thread_ts: str) -> list[dict[str, Any]]:
    """Every chunk the bot streamed into the thread, in call order."""
    out: list[dict[str, Any]] = []
    for method in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
        assert not any(c.args.get("markdown_text") for c in slack.calls_to(method))
    for call in slack.calls:
        if call.method.startswith("chat.") and call.method.endswith("Stream") and call.ok:
            out += call.args.get("chunks") or []
    return [c for c in out if c]


def task_statuses(chunks: list[dict[str, Any]], task_id: str) -> list[str]:
    return [c["status"] for c in chunks if c["type"] == "task_update" and c["id"] == task_id]


def test_a_thread_is_an_agent_session_processing_then_active_named_after_its_first_question(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    openai_fake.script(Reply(text="Paris."), Reply(text="About 2.1 million."), Reply(text="Hi again."))
    root = mention(CHANNEL, ALICE, "What is the capital of <https://fr.example|France>?")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    wait_active(slack, root["ts"])
    session = slack.session(CHANNEL, root["ts"])
    assert session is not None
    assert session.statuses == ["processing", "active"]
    # The title is the question, without Slack's markup (a link shows as its label).
    assert session.title == "What is the capital of France?"
    [created] = [
        c.args for c in slack.calls_to("agents.sessions.setStatus") if c.args["status"] == "processing"
    ]
    assert created["thread_ts"] == root["ts"] and created["channel_id"] == CHANNEL
    # The initial "is thinking…" assistant status is the session's now.
    assert not any(s.status == "is thinking…" for s in slack.statuses(CHANNEL, root["ts"]))

    # A follow-up: processing, then active again; the session keeps its name.
    sender.send_event(mention(CHANNEL, ALICE, "And its population?", thread_ts=root["ts"]))
    answers(slack, CHANNEL, root["ts"], count=2)
    wait_active(slack, root["ts"], times=2)
    session = slack.session(CHANNEL, root["ts"])
    assert session is not None and session.statuses == ["processing", "active"] * 2
    assert session.title == "What is the capital of France?" and session.renames == []

    # The thread starts over: its next first question renames the session.
    sender.send_event(mention(CHANNEL, ALICE, "reset", thread_ts=root["ts"]))
    slack.wait_for(lambda: any("reset this thread" in m.text for m in slack.messages(CHANNEL, root["ts"])))
    sender.send_event(mention(CHANNEL, ALICE, "Tell me a joke", thread_ts=root["ts"]))
    wait_active(slack, root["ts"], times=3)
    session = slack.session(CHANNEL, root["ts"])
    assert session is not None and session.renames == ["Tell me a joke"]
    assert session.title == "Tell me a joke"


def test_the_stop_button_cancels_the_response_and_the_thread_answers_its_next_message(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    # The stop reaches a front that runs no turns; the answer runs in a separate worker process.
    sender = SlackSender(start_bot(WORKER_CONCURRENCY="0").url)
    start_bot(worker=True)
    # A long answer, streamed slowly: the stop comes while it is being written.
    openai_fake.script(
        Reply(text=LONG_ANSWER, chunk_size=4, chunk_delay=0.05), Reply(text="Here is a short answer.")
    )
    root = mention(CHANNEL, ALICE, "Write me a very long essay")
    sender.send_event(root)

    def streaming() -> list[Message]:
        return [m for m in slack.messages(CHANNEL, root["ts"]) if m.streaming and m.text]

    slack.wait_for(lambda: bool(streaming()), timeout=30)
    stop = slack.stop_session(CHANNEL, root["ts"], ALICE)
    assert stop["streaming_message_ts"]
    assert sender.send_event(stop).status == 200

    # The response is cancelled at OpenAI...
    [first] = openai_fake.model_inputs
    slack.wait_for(lambda: openai_fake.response(first["response_id"])["status"] == "cancelled", timeout=30)
    # ...the message ends with what was shown and a short note, the session is active again...
    wait_active(slack, root["ts"])
    [answer] = answers(slack, CHANNEL, root["ts"])
    assert answer.stopped_by_user and answer.text.endswith("\n\n_Stopped._")
    assert answer.text.removesuffix("\n\n_Stopped._") in LONG_ANSWER
    assert len(answer.text) < len(LONG_ANSWER)
    # ...and the turn is done: recorded as stopped, never retried.
    record_key = f"sa:{{-:{TEAM}}}:turn:{CHANNEL}:{root['ts']}"
    slack.wait_for(lambda: rdb.hget(record_key, "done") == "1")
    assert rdb.hget(record_key, "stopped") == "1"
    assert rdb.get(f"sa:{{-:{TEAM}}}:session:{CHANNEL}:{root['ts']}") is None

    # The next message in the thread is answered normally, in the same assistant thread.
    follow = mention(CHANNEL, ALICE, "Just a short one then", thread_ts=root["ts"])
    sender.send_event(follow)
    answers(slack, CHANNEL, root["ts"], count=2)
    [_, second] = slack.messages(CHANNEL, root["ts"])
    assert second.text == "Here is a short answer."
    assert len(openai_fake.model_inputs) == 2
    assert openai_fake.model_inputs[1]["conversation"] == first["conversation"]
    wait_active(slack, root["ts"], times=2)


def test_a_stop_recorded_while_its_worker_is_dead_is_final_for_the_retry(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    fast_recovery = {"RUNNER_LOCK_SECONDS": "2", "RECOVERY_INTERVAL_SECONDS": "0.5"}
    sender = SlackSender(start_bot(WORKER_CONCURRENCY="0").url)
    doomed = start_bot(worker=True, **fast_recovery)
    essay = " ".join(f"word{i}" for i in range(3000))
    openai_fake.script(Reply(text=essay, chunk_size=4, chunk_delay=0.05))
    root = mention(CHANNEL, ALICE, "An endless essay please")
    sender.send_event(root)
    record_key = f"sa:{{-:{TEAM}}}:turn:{CHANNEL}:{root['ts']}"
    slack.wait_for(
        lambda: any(m.streaming and m.text for m in slack.messages(CHANNEL, root["ts"])), timeout=30
    )
    # The message is in Slack a moment before its ts is in the turn's record: killed in between, the retry
    # could not know it (and would post another). Killed once it is recorded, as this test means.
    slack.wait_for(lambda: bool(rdb.hget(record_key, "message_ts")))
    doomed.stop(signal.SIGKILL)
    # The user stops the answer while nobody runs it: the front records the stop for that turn.
    assert sender.send_event(slack.stop_session(CHANNEL, root["ts"], ALICE)).status == 200
    slack.wait_for(lambda: rdb.hget(record_key, "stopped") == "1")

    # Another worker takes the turn over: it ends it as stopped, without running or resuming the answer.
    start_bot(worker=True, **fast_recovery)
    slack.wait_for(lambda: rdb.hget(record_key, "done") == "1", timeout=30)
    [first] = openai_fake.model_inputs
    slack.wait_for(lambda: openai_fake.response(first["response_id"])["status"] == "cancelled")
    assert len(openai_fake.model_inputs) == 1
    [answer] = slack.messages(CHANNEL, root["ts"])
    assert answer.stopped_by_user and answer.text in essay
    wait_active(slack, root["ts"])


def test_a_stop_with_no_turn_running_changes_nothing(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender, rdb: redis.Redis
) -> None:
    openai_fake.script(Reply(text="Done."), Reply(text="Still here."))
    root = mention(CHANNEL, BOB, "Quick question")
    sender.send_event(root)
    answers(slack, CHANNEL, root["ts"])
    wait_active(slack, root["ts"])
    stop = slack.stop_session(CHANNEL, root["ts"], BOB)
    assert stop["streaming_message_ts"] == []
    assert sender.send_event(stop).status == 200
    # The stop hit no turn: the next one runs and answers in full.
    sender.send_event(mention(CHANNEL, BOB, "Another", thread_ts=root["ts"]))
    [first, second] = answers(slack, CHANNEL, root["ts"], count=2)
    assert first.text == "Done." and second.text == "Still here."
    assert "stopped" not in rdb.hgetall(f"sa:{{-:{TEAM}}}:turn:{CHANNEL}:{root['ts']}")


def test_stopped_during_a_tool_call_the_call_is_closed_and_the_thread_goes_on(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(**TEAM_TOOLS).url)
    # `nap` sleeps until it is told otherwise: the stop comes while it runs.
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
    # The call the model asked for was answered, so the conversation takes new messages.
    sender.send_event(mention(CHANNEL, ALICE, "Wake up", thread_ts=root["ts"]))
    [_, second] = answers(slack, CHANNEL, root["ts"], count=2)
    assert second.text == "Back to work."
    items = openai_fake.conversation(openai_fake.model_inputs[0]["conversation"])["items"]
    [closed] = [i for i in items if i["type"] == "function_call_output" and i["call_id"] == "call_nap"]
    assert "stopped" in closed["output"]


def test_a_tool_call_appears_as_a_task_that_completes(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(**TEAM_TOOLS).url)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("get_weather", {"city": "Lisbon", "unit": "celsius"}, call_id="call_w"),)),
        Reply(echo_tool_outputs=True),
    )
    event = mention(CHANNEL, ALICE, "Weather in Lisbon?")
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])
    assert answer.text.startswith('Tool said: {"city": "Lisbon"')
    chunks = stream_chunks(slack, event["ts"])
    assert task_statuses(chunks, "call_w") == ["pending", "in_progress", "complete"]
    task = next(c for c in chunks if c["type"] == "task_update")
    assert task["title"] == "Calling get_weather"
    # One step: no plan title; the steps show in a plan block.
    assert not any(c["type"] == "plan_update" for c in chunks)
    assert slack.calls_to("chat.startStream")[0].args["task_display_mode"] == "plan"
    # The answer's text is still all of the message's text.
    assert "".join(c["text"] for c in chunks if c["type"] == "markdown_text") == answer.text


def test_a_failing_tool_call_ends_as_a_task_in_error(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(**TEAM_TOOLS).url)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("open_ticket", {"ticket_id": "T-42"}, call_id="call_t"),)),
        Reply(text="The ticket system is down."),
    )
    event = mention(CHANNEL, BOB, "Status of T-42?")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"])
    assert task_statuses(stream_chunks(slack, event["ts"]), "call_t") == ["pending", "in_progress", "error"]


def test_a_web_search_and_a_tool_call_are_steps_of_a_plan_with_sources(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(assistant_tools="web_search,current_time", **TEAM_TOOLS).url)
    url = "https://www.python.org/downloads/release/python-3140/"
    openai_fake.script(
        Reply(
            web_results=((url, "Python 3.14.0"),),
            tool_calls=(ToolCall("current_time", {}, call_id="call_time"),),
            text="Let me check the date.",
        ),
        Reply(text="Python 3.14 came out in October 2025."),
    )
    event = mention(CHANNEL, ALICE, "When did Python 3.14 come out, and what time is it?")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"])
    [created, _] = [
        r["json"] for r in openai_fake.requests if r["method"] == "POST" and r["path"] == "/v1/responses"
    ]
    assert created["include"] == ["web_search_call.action.sources"]
    chunks = stream_chunks(slack, event["ts"])
    searches = [c for c in chunks if c["type"] == "task_update" and c["title"] == "Searching the web"]
    assert [c["status"] for c in searches] == ["in_progress", "complete"]
    assert searches[-1]["sources"] == [{"type": "url", "url": url, "text": "python.org"}]
    assert task_statuses(chunks, "call_time") == ["pending", "in_progress", "complete"]
    # Several steps: the plan has a title while it runs, and a last one when done.
    plans = [c["title"] for c in chunks if c["type"] == "plan_update"]
    assert plans == ["Working through several steps", "Done in 2 steps"]


def test_a_turn_without_steps_sends_no_task_chunks(
    slack: FakeSlack, openai_fake: FakeOpenAI, sender: SlackSender
) -> None:
    openai_fake.script(Reply(text="Plain and simple.", chunk_size=3))
    event = mention(CHANNEL, ALICE, "Say something plain")
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])
    chunks = stream_chunks(slack, event["ts"])
    assert chunks and {c["type"] for c in chunks} == {"markdown_text"}
    # The message looks as before the steps existed: its text, and only the feedback buttons under it.
    assert answer.text == "Plain and simple."
    assert [b["type"] for b in answer.blocks] == ["context_actions"]
    assert user_texts(openai_fake.conversation(openai_fake.model_inputs[0]["conversation"])["items"]) == [
        "user: Say something plain",
        "assistant: Plain and simple.",
    ]
