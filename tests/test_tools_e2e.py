"""Tools end to end: the bot as a real process runs the function calls the fake OpenAI scripts (a team's
own module, tests/sample_tools.py, loaded through ASSISTANT_TOOL_MODULES), the code interpreter's files
reach the Slack thread, and web search answers carry their links."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import ContainerFile, ToolCall
from tests.fakes.slack_api import FakeSlack
from tests.harness import SlackSender, bot_env, mention
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, answers, user_texts
from tests.test_files_e2e import PNG, share

ROOT = Path(__file__).resolve().parents[1]
TEAM_TOOLS = {"assistant_tool_modules": "tests.sample_tools", "pythonpath": str(ROOT)}


def tool_names(request_tools: list[dict]) -> list[str]:
    return [t.get("name") or t["type"] for t in request_tools]


def statuses(slack: FakeSlack, thread_ts: str) -> list[str]:
    return [s.status for s in slack.statuses(CHANNEL, thread_ts)]


def test_function_call_round_trip(slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory) -> None:
    sender = SlackSender(start_bot(**TEAM_TOOLS).url)
    openai_fake.script(
        Reply(
            tool_calls=(
                ToolCall("get_weather", {"city": "Lisbon", "unit": "celsius"}, call_id="call_lisbon"),
                ToolCall("get_weather", {"city": "Oslo"}, call_id="call_oslo"),  # "unit" missing
            )
        ),
        Reply(echo_tool_outputs=True),
    )
    event = mention(CHANNEL, ALICE, "Weather in Lisbon and Oslo?")
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])

    first, second = openai_fake.model_inputs
    # Every declared tool is a strict function tool, the team's beside the built-ins.
    assert tool_names(first["tools"]) == [
        "current_time", "slack_user_profile", "get_weather", "open_ticket", "nap",
    ]  # fmt: skip
    weather = next(t for t in first["tools"] if t.get("name") == "get_weather")
    assert weather["strict"] is True and weather["parameters"]["required"] == ["city", "unit"]
    # Both calls went back together, in the same conversation, arguments checked.
    outputs = {o["call_id"]: json.loads(o["output"]) for o in openai_fake.tool_outputs}
    assert outputs["call_lisbon"] == {"city": "Lisbon", "temperature": 21, "unit": "celsius", "sky": "clear"}
    assert "invalid arguments" in outputs["call_oslo"]["error"] and "unit" in outputs["call_oslo"]["error"]
    assert {o["response_id"] for o in openai_fake.tool_outputs} == {second["response_id"]}
    assert second["conversation"] == first["conversation"]
    # The final answer is what the model made of the outputs; the status said what ran.
    assert answer.text.startswith('Tool said: {"city": "Lisbon", "temperature": 21')
    assert "is calling get_weather…" in statuses(slack, event["ts"])


def test_a_tool_that_raises_gives_the_model_an_error_and_the_user_an_answer(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    bot = start_bot(**TEAM_TOOLS)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("open_ticket", {"ticket_id": "T-42"}),)),
        Reply(text="The ticket system is down right now, sorry."),
    )
    event = mention(CHANNEL, BOB, "What's the status of ticket T-42?")
    SlackSender(bot.url).send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])

    [output] = openai_fake.tool_outputs
    assert output["name"] == "open_ticket"
    assert json.loads(output["output"]) == {"error": "the tool failed (RuntimeError)"}
    assert answer.text == "The ticket system is down right now, sorry."
    logs = bot.logs()
    assert "tool open_ticket raised RuntimeError at" in logs and "sample_tools.py" in logs
    assert "ticket backend down" not in logs  # the exception's own text stays out of the log


def test_the_round_limit_stops_a_tool_loop_and_the_thread_still_works(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(tool_max_rounds="2", **TEAM_TOOLS).url)
    again = Reply(tool_calls=(ToolCall("get_weather", {"city": "Lisbon", "unit": "celsius"}),))
    openai_fake.script(again, again, again, Reply(text="Here I am."))
    event = mention(CHANNEL, ALICE, "Keep checking the weather")
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])

    assert answer.text.endswith(
        "I stopped after 2 rounds of tool calls without reaching an answer. Try a narrower question."
    )
    assert len(openai_fake.model_inputs) == 3  # two rounds of calls ran; the third round's was not
    conversation = openai_fake.model_inputs[0]["conversation"]
    items = openai_fake.conversation(conversation)["items"]
    calls = [i["call_id"] for i in items if i["type"] == "function_call"]
    closed = {i["call_id"]: i["output"] for i in items if i["type"] == "function_call_output"}
    assert len(calls) == 3 and set(calls) == set(closed)  # every call answered, the last with an error
    assert "limit on tool calls" in closed[calls[-1]]

    # The conversation stays usable: the next message in the thread is answered.
    follow_up = mention(CHANNEL, ALICE, "ok, thanks", thread_ts=event["ts"])
    sender.send_event(follow_up)
    answers(slack, CHANNEL, event["ts"], count=2)
    assert slack.messages(CHANNEL, event["ts"])[-1].text == "Here I am."
    assert openai_fake.model_inputs[-1]["conversation"] == conversation


def test_the_time_limit_stops_a_slow_tool_loop(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(tool_loop_seconds="1.5", **TEAM_TOOLS).url)
    nap = Reply(tool_calls=(ToolCall("nap", {"seconds": 2}),))
    openai_fake.script(nap, nap)
    event = mention(CHANNEL, ALICE, "take your time")
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])
    assert answer.text.endswith("took too long for this message. Try a narrower question.")
    assert [o["output"] for o in openai_fake.tool_outputs] == ["rested"]  # the second nap never ran


def test_a_worker_killed_mid_tool_loop_is_carried_on_without_asking_the_model_again(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    fast = {"runner_lock_seconds": "2", "recovery_interval_seconds": "0.5", **TEAM_TOOLS}
    doomed = start_bot(**fast)
    openai_fake.script(
        Reply(text="Let me check.", tool_calls=(ToolCall("nap", {"seconds": 1.5}),)),
        Reply(echo_tool_outputs=True),
    )
    event = mention(CHANNEL, ALICE, "check something slowly")
    SlackSender(doomed.url).send_event(event)
    # Killed while its tool runs: the first response is recorded, its call not answered yet.
    slack.wait_for(lambda: "is calling nap…" in statuses(slack, event["ts"]))
    doomed.stop(signal.SIGKILL)

    start_bot(**fast)
    final = "Let me check.\n\nTool said: rested"
    slack.wait_for(lambda: [m.text for m in slack.messages(CHANNEL, event["ts"])] == [final], timeout=30)
    # The recorded response was carried on (its call run, its output sent), never created again.
    assert len(openai_fake.model_inputs) == 2
    [conversation] = openai_fake.conversations.values()
    assert user_texts(conversation["items"]) == [
        "user: check something slowly",
        "assistant: Let me check.",
        "assistant: Tool said: rested",
    ]


def test_built_in_tools_use_the_asking_users_slack_profile(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot().url)
    slack.set_user(ALICE, tz="Asia/Tokyo")
    slack.set_user(BOB, profile={"title": "Staff engineer", "real_name": "Bob Builder"})
    openai_fake.script(
        Reply(tool_calls=(ToolCall("current_time"), ToolCall("slack_user_profile", {"user_id": BOB}))),
        Reply(text="done"),
    )
    event = mention(CHANNEL, ALICE, f"What time is it for me, and who is <@{BOB}>?")
    sender.send_event(event)
    answers(slack, CHANNEL, event["ts"])
    now, profile = (json.loads(o["output"]) for o in openai_fake.tool_outputs)
    assert now["time_zone"] == "Asia/Tokyo" and now["iso"].endswith("+09:00")
    assert profile["name"] == "Bob Builder" and profile["title"] == "Staff engineer"


def test_code_interpreter_reads_shared_data_and_its_chart_lands_in_the_thread(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(assistant_tools="code_interpreter").url)
    csv = slack.add_file("sales.csv", b"month,sales\njan,10\nfeb,12\n", mimetype="text/csv")
    openai_fake.script(
        Reply(
            text="Sales grew. Here is the chart: [chart.png](sandbox:/mnt/data/chart.png)",
            code="import pandas as pd\npd.read_csv('/mnt/data/sales.csv').plot().figure.savefig('chart.png')",
            code_files=(ContainerFile("chart.png", PNG, "image/png"),),
            # Python takes a few seconds, as it does (statuses are paced at about one a second per channel).
            chunk_size=30,
            chunk_delay=1.0,
        )
    )
    event = share(CHANNEL, ALICE, "Plot the sales", [csv])
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])

    # The shared CSV was given to the code interpreter's container.
    [run] = openai_fake.code_runs
    csv_file_id = next(i for i, f in openai_fake.files.items() if f["filename"] == "sales.csv")
    assert run["input_file_ids"] == [csv_file_id]
    # The chart it wrote is uploaded into the thread, and the answer links to it (no sandbox path left).
    slack.wait_for(lambda: len(slack.uploads(CHANNEL, event["ts"])) == 1)
    [upload] = slack.uploads(CHANNEL, event["ts"])
    assert upload.filename == "chart.png" and upload.content == PNG
    assert "sandbox:" not in answer.text
    assert answer.text.startswith("Sales grew. Here is the chart: chart.png[1]")
    assert f"1. [chart.png]({upload.permalink})" in answer.text
    assert "is running Python…" in statuses(slack, event["ts"])


def test_data_files_are_refused_while_the_code_interpreter_is_off(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot().url)
    csv = slack.add_file("sales.csv", b"month,sales\njan,10\n", mimetype="text/csv")
    event = share(CHANNEL, ALICE, "Plot the sales", [csv])
    sender.send_event(event)
    msgs = answers(slack, CHANNEL, event["ts"], count=2)
    assert any("sales.csv" in m.text and ".csv" in m.text for m in msgs if m.text.startswith(":warning:"))
    assert openai_fake.files == {} and openai_fake.code_runs == []


def test_web_search_answers_carry_working_links(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(assistant_tools="web_search").url)
    openai_fake.script(
        Reply(
            text="Python 3.14 came out in October 2025.",
            web_results=(("https://www.python.org/downloads/release/python-3140/", "Python 3.14.0"),),
            first_token_delay=1.0,  # the search takes a moment, as it does
        )
    )
    event = mention(CHANNEL, ALICE, "When did Python 3.14 come out?")
    sender.send_event(event)
    [answer] = answers(slack, CHANNEL, event["ts"])
    assert {"type": "web_search"} in openai_fake.model_inputs[0]["tools"]
    assert answer.text.startswith("Python 3.14 came out in October 2025.[1]")
    assert answer.text.endswith(
        "**Sources**\n1. [Python 3.14.0](https://www.python.org/downloads/release/python-3140/)"
        " (www.python.org)"
    )
    assert "is searching the web…" in statuses(slack, event["ts"])


def test_a_tool_module_that_cannot_be_imported_stops_start_up_with_a_clear_message(
    tmp_path: Path, rdb: redis.Redis, redis_url: str
) -> None:
    env = bot_env(
        slack_api_url="http://127.0.0.1:9/api/",
        openai_base_url="http://127.0.0.1:9/v1",
        redis_url=redis_url,
        assistant_tool_modules="mycompany.no_such_tools",
    )
    exe = Path(sys.executable).with_name("slack-assistant")
    done = subprocess.run([str(exe), "--http"], env=env, cwd=tmp_path, capture_output=True, timeout=30)
    assert done.returncode == 2
    assert b"ASSISTANT_TOOL_MODULES: cannot import mycompany.no_such_tools" in done.stderr
    assert b"Traceback" not in done.stderr
