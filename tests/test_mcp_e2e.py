"""MCP tools with approvals (issue 16), against the bot as a process: a hosted server (the Responses `mcp`
tool, scripted at the fake OpenAI) is offered only where a channel policy names it; an approval request
becomes Approve / Deny buttons only the asker can answer, whose answer continues or ends the same message
(no answer in time is a Deny, and a worker restart loses nothing); a server only the bot can reach
(tests/mcp_server.py, over stdio or streamable HTTP) is called through the tool loop, and when it dies the
model gets an error and the user an answer. A Slack Connect guest gets no MCP servers. No secret header value
reaches Redis, the logs or Slack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import BotFactory
from tests.fakes.openai_api import FakeOpenAI, Reply
from tests.fakes.openai_tools import McpScript, ToolCall
from tests.fakes.slack_api import FakeSlack, Message
from tests.harness import TEAM, SlackSender, free_port, mention
from tests.test_agent_e2e import stream_chunks, task_statuses
from tests.test_bridge_e2e import ALICE, BOB, CHANNEL, answers
from tests.test_commands_e2e import command
from tests.test_observability_e2e import scrape, value
from tests.test_reliability_e2e import FAST, NO_LIMITS
from tests.test_slack_connect_e2e import PARTNER, SHARED, guest_mention, host_mention
from tests.test_tools_e2e import tool_names

ROOT = Path(__file__).resolve().parents[1]
SERVER = str(ROOT / "tests" / "mcp_server.py")
NS = f"sa:{{-:{TEAM}}}"
RANDOM = "C0RANDOM"
CAROL = "U0CAROL"  # in POLICY_ADMINS
# Secret header values: they go to the MCP server (or to OpenAI for a hosted one), nowhere else.
TICKETS_TOKEN = "Bearer tix-secret-4f9a1c"
OPS_KEY = "ops-secret-77d0e2"


def servers(*entries: dict[str, Any]) -> str:
    return json.dumps(list(entries))


TICKETS = {  # hosted: OpenAI calls it; offered only where a policy names it
    "label": "tickets",
    "transport": "hosted",
    "url": "https://mcp.example.com/mcp",
    "allowed_tools": ["lookup_ticket"],
    "approval": "never",
    "headers_from_env": {"Authorization": "TICKETS_TOKEN"},
    "default": False,
}
DEPLOYS = {
    "label": "deploys",
    "transport": "hosted",
    "url": "https://deploys.example.com/mcp",
    "approval": "always",
    "default": True,
}
LOCAL = {
    "label": "tix",
    "transport": "stdio",
    "command": [sys.executable, SERVER],
    "approval": ["deploy"],
    "default": True,
}
DEPLOY = McpScript("deploys", "deploy", {"service": "web"}, output="deployed web")


def local(runs: Path, **changes: Any) -> dict[str, Any]:
    """LOCAL, its `deploy` recording each run in `runs` (what shows whether it ran, and how often)."""
    return {**LOCAL, "command": [*LOCAL["command"], "--runs", str(runs)], **changes}


def deploys_run(runs: Path) -> list[str]:
    """The services the test server's `deploy` ran, in order."""
    return runs.read_text().splitlines() if runs.exists() else []


def approval_message(slack: FakeSlack, thread_ts: str) -> Message:
    """The thread's Approve / Deny message, once it is there."""

    def found() -> list[Message]:
        return [
            m for m in slack.messages(CHANNEL, thread_ts) if any(b["type"] == "actions" for b in m.blocks)
        ]

    slack.wait_for(lambda: bool(found()))
    return found()[0]


def click(sender: SlackSender, msg: Message, approve: bool, *, user: str) -> int:
    """A click on Approve or Deny, as Slack posts it (`block_actions` with the button's value)."""
    [actions] = [b for b in msg.blocks if b["type"] == "actions"]
    button = actions["elements"][0 if approve else 1]
    action = {"type": "button", "block_id": actions["block_id"]}
    action |= {k: button[k] for k in ("action_id", "value", "text")}
    return sender.click_on_message(msg, action, user=user, channel=CHANNEL)


def approval_state(rdb: redis.Redis) -> dict[str, str]:
    [key] = rdb.keys(f"{NS}:approval:*")
    return rdb.hgetall(key)


def answer_of(slack: FakeSlack, thread_ts: str) -> Message:
    """The streamed answer (not the approval message), once it is finished (with its rating buttons)."""

    def done(m: Message) -> bool:
        rated = any(b["type"] == "context_actions" for b in m.blocks)
        return m.kind == "stream" and not m.streaming and (":warning:" in m.text or rated)

    slack.wait_for(lambda: any(done(m) for m in slack.messages(CHANNEL, thread_ts)))
    [answer] = [m for m in slack.messages(CHANNEL, thread_ts) if m.kind == "stream"]
    return answer


def assert_secret_nowhere(secret: str, rdb: redis.Redis, slack: FakeSlack, logs: str) -> None:
    for key in rdb.keys("*"):
        kind = rdb.type(key)
        dumped = {
            "hash": lambda k: rdb.hgetall(k),
            "string": lambda k: rdb.get(k),
            "list": lambda k: rdb.lrange(k, 0, -1),
            "set": lambda k: rdb.smembers(k),
            "zset": lambda k: rdb.zrange(k, 0, -1),
            "stream": lambda k: rdb.xrange(k),
        }[kind](key)
        assert secret not in f"{key}{dumped}", f"the secret is in Redis key {key}"
    assert secret not in json.dumps([c.args for c in slack.calls], default=str), "the secret reached Slack"
    assert secret not in logs, "the secret reached the bot's log"


# ---- hosted servers ----------------------------------------------------------------------------------


def test_a_hosted_server_set_for_one_channel_is_offered_only_in_its_threads(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    bot = start_bot(
        **NO_LIMITS, MCP_SERVERS=servers(TICKETS), TICKETS_TOKEN=TICKETS_TOKEN, POLICY_ADMINS=CAROL
    )
    sender = SlackSender(bot.url)
    assert command(sender, "config set mcp=tickets", channel=CHANNEL, user=CAROL).startswith("Saved.")
    assert "Unknown MCP server(s): `teleport`" in command(
        sender, "config set mcp=teleport", channel=RANDOM, user=CAROL
    )
    openai_fake.script(
        Reply(
            mcp=McpScript("tickets", "lookup_ticket", {"ticket_id": "T-42"}, output="open: printer on fire")
        ),
        Reply(text="Nothing to look up here."),
    )
    here = mention(CHANNEL, ALICE, "Status of T-42?")
    sender.send_event(here)
    answer = answer_of(slack, here["ts"])
    elsewhere = mention(RANDOM, ALICE, "Status of T-42?")
    sender.send_event(elsewhere)
    answers(slack, RANDOM, elsewhere["ts"])

    first, second = openai_fake.model_inputs
    [hosted] = [t for t in first["tools"] if t["type"] == "mcp"]
    assert hosted == {
        "type": "mcp",
        "server_label": "tickets",
        "server_url": "https://mcp.example.com/mcp",
        "allowed_tools": ["lookup_ticket"],
        "require_approval": "never",
        "headers": {"Authorization": TICKETS_TOKEN},  # the secret goes to OpenAI, which calls the server
    }
    assert "mcp" not in tool_names(second["tools"])
    # No approval needed: the call ran at OpenAI and the answer used its result.
    assert answer.text == "MCP said: open: printer on fire"
    assert not rdb.keys(f"{NS}:approval:*")
    # The list and the call showed as steps of the answer.
    chunks = stream_chunks(slack, here["ts"])
    titles = {c["title"] for c in chunks if c["type"] == "task_update"}
    assert {"Listing the tools of tickets", "Calling tickets.lookup_ticket"} <= titles
    call_id = next(c["id"] for c in chunks if c.get("title") == "Calling tickets.lookup_ticket")
    assert task_statuses(chunks, call_id) == ["in_progress", "complete"]
    bot.stop()
    assert_secret_nowhere(TICKETS_TOKEN, rdb, slack, bot.logs())


def test_the_askers_approve_continues_the_answer_and_anyone_elses_click_changes_nothing(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    bot = start_bot(**NO_LIMITS, MCP_SERVERS=servers(DEPLOYS))
    sender = SlackSender(bot.url)
    openai_fake.script(Reply(mcp=DEPLOY), Reply(mcp=DEPLOY))
    event = mention(CHANNEL, ALICE, "Deploy web please")
    sender.send_event(event)
    asked = approval_message(slack, event["ts"])
    assert f"<@{ALICE}>, may I run `deploy` on `deploys`?" in asked.blocks[0]["text"]["text"]
    assert '{"service": "web"}' in asked.blocks[0]["text"]["text"]

    # Bob did not ask: he is told so, and nothing is decided.
    assert click(sender, asked, True, user=BOB) == 200
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, BOB, include_invisible=True)))
    [told] = slack.ephemerals(CHANNEL, BOB, include_invisible=True)
    assert told.text == f"Only <@{ALICE}> can answer this request: they asked the question."
    assert "decision" not in approval_state(rdb)
    assert len(openai_fake.model_inputs) == 1

    assert click(sender, asked, True, user=ALICE) == 200
    answer = answer_of(slack, event["ts"])
    assert answer.text == "MCP said: deployed web"
    [conv] = openai_fake.conversations.values()
    [request] = [i for i in conv["items"] if i["type"] == "mcp_approval_request"]
    [_, second] = openai_fake.model_inputs
    [answered] = [i for i in second["input_items"] if i["type"] == "mcp_approval_response"]
    assert answered["approval_request_id"] == request["id"] and answered["approve"] is True
    # One answer message, continued; the question now says who approved it (no buttons left).
    slack.wait_for(lambda: "approved" in slack.messages(CHANNEL, event["ts"])[-1].text)
    posts = [m for m in slack.messages(CHANNEL, event["ts"]) if m.kind == "post"]
    assert [m.ts for m in posts] == [asked.ts]
    assert posts[0].text.startswith(f":white_check_mark: <@{ALICE}> approved `deploy` on `deploys`")
    assert not any(b["type"] == "actions" for b in posts[0].blocks)
    state = approval_state(rdb)
    assert state["decision"] == "approved" and state["by"] == ALICE and state["user"] == ALICE
    assert "web" not in json.dumps(state)  # the arguments are not kept
    assert "is waiting for your approval…" in [s.status for s in slack.statuses(CHANNEL, event["ts"])]
    samples = scrape(bot)
    assert value(samples, "mcp_approvals_total", result="not_yours") == 1
    assert value(samples, "mcp_approvals_total", result="approved") == 1


def test_deny_ends_the_answer_with_a_clear_note(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS, MCP_SERVERS=servers(DEPLOYS)).url)
    openai_fake.script(Reply(mcp=DEPLOY))
    event = mention(CHANNEL, ALICE, "Deploy web please")
    sender.send_event(event)
    asked = approval_message(slack, event["ts"])
    assert click(sender, asked, False, user=ALICE) == 200

    answer = answer_of(slack, event["ts"])
    assert "You denied `deploy` on `deploys`: it was not run and I stopped here." in answer.text
    assert len(openai_fake.model_inputs) == 1  # nothing more was asked of the model
    [conv] = openai_fake.conversations.values()
    [request] = [i for i in conv["items"] if i["type"] == "mcp_approval_request"]
    [response] = [i for i in conv["items"] if i["type"] == "mcp_approval_response"]
    assert response["approval_request_id"] == request["id"] and response["approve"] is False
    slack.wait_for(lambda: "denied" in slack.messages(CHANNEL, event["ts"])[-1].text)
    assert approval_state(rdb)["decision"] == "denied"
    # A later click changes nothing either.
    assert click(sender, asked, True, user=ALICE) == 200
    slack.wait_for(lambda: bool(slack.ephemerals(CHANNEL, ALICE, include_invisible=True)))
    assert approval_state(rdb)["decision"] == "denied"


def test_no_answer_in_time_counts_as_deny(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS, MCP_SERVERS=servers(DEPLOYS), MCP_APPROVAL_SECONDS="1").url)
    openai_fake.script(Reply(mcp=DEPLOY))
    event = mention(CHANNEL, ALICE, "Deploy web please")
    sender.send_event(event)
    answer = answer_of(slack, event["ts"])
    assert "No one approved `deploy` on `deploys` within 1 second(s): it was not run" in answer.text
    asked = next(m for m in slack.messages(CHANNEL, event["ts"]) if m.kind == "post")
    assert asked.text == ":hourglass: No answer in time for `deploy` on `deploys`: it was not run."
    assert approval_state(rdb)["decision"] == "timed_out"
    assert len(openai_fake.model_inputs) == 1


def test_an_approval_survives_a_worker_restart(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis
) -> None:
    env = {**NO_LIMITS, **FAST, "MCP_SERVERS": servers(DEPLOYS)}
    doomed = start_bot(**env)
    openai_fake.script(Reply(mcp=DEPLOY), Reply(mcp=DEPLOY))
    event = mention(CHANNEL, ALICE, "Deploy web please")
    SlackSender(doomed.url).send_event(event)
    asked = approval_message(slack, event["ts"])
    started = [m.ts for m in slack.messages(CHANNEL, event["ts"]) if m.kind == "stream"]
    doomed.stop(signal.SIGKILL)

    # Another worker takes the turn over: the same question (not asked twice), answered there.
    successor = SlackSender(start_bot(**env).url)
    assert click(successor, asked, True, user=ALICE) == 200
    answer = answer_of(slack, event["ts"])
    assert answer.text == "MCP said: deployed web"
    assert (
        [m.ts for m in slack.messages(CHANNEL, event["ts"]) if m.kind == "stream"] == started == [answer.ts]
    )
    assert [m.ts for m in slack.messages(CHANNEL, event["ts"]) if m.kind == "post"] == [asked.ts]
    assert len(openai_fake.model_inputs) == 2  # the first response resumed, not run again


# ---- servers only the bot reaches --------------------------------------------------------------------


def test_a_local_servers_tool_runs_in_the_tool_loop_and_a_dead_server_still_gets_an_answer(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    sender = SlackSender(start_bot(**NO_LIMITS, MCP_SERVERS=servers(LOCAL)).url)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("tix__lookup_ticket", {"ticket_id": "T-42"}, call_id="call_t42"),)),
        Reply(echo_tool_outputs=True),
    )
    first = mention(CHANNEL, ALICE, "Status of T-42?")
    sender.send_event(first)
    [answer] = answers(slack, CHANNEL, first["ts"])
    assert answer.text == "Tool said: open: printer on fire"
    spec = next(t for t in openai_fake.model_inputs[0]["tools"] if t.get("name") == "tix__lookup_ticket")
    assert spec["strict"] is False and spec["parameters"]["required"] == ["ticket_id"]
    chunks = stream_chunks(slack, first["ts"])
    assert task_statuses(chunks, "call_t42") == ["pending", "in_progress", "complete"]

    # The server dies mid-call: the model gets an error result, the user an answer.
    openai_fake.script(
        Reply(tool_calls=(ToolCall("tix__crash", {}, call_id="call_crash"),)),
        Reply(echo_tool_outputs=True),
    )
    second = mention(CHANNEL, BOB, "Crash it")
    sender.send_event(second)
    [answer] = answers(slack, CHANNEL, second["ts"])
    assert answer.text == 'Tool said: {"error": "the tool\'s server failed or could not be reached"}'
    assert task_statuses(stream_chunks(slack, second["ts"]), "call_crash") == [
        "pending",
        "in_progress",
        "error",
    ]

    # The next call starts the server again.
    openai_fake.script(
        Reply(tool_calls=(ToolCall("tix__lookup_ticket", {"ticket_id": "T-7"}),)),
        Reply(echo_tool_outputs=True),
    )
    third = mention(CHANNEL, BOB, "Status of T-7?")
    sender.send_event(third)
    [answer] = answers(slack, CHANNEL, third["ts"])
    assert answer.text == "Tool said: closed: coffee machine fixed"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """tests/mcp_server.py over streamable HTTP on loopback, requiring `X-Api-Key: OPS_KEY`: its URL, and
    the file where its `deploy` records its runs."""
    port = free_port()
    runs = tmp_path / "http-runs"
    proc = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port), "--runs", str(runs)],
        env={**os.environ, "MCP_TEST_KEY": OPS_KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port)
        yield f"http://127.0.0.1:{port}/mcp", runs
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_listening(port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the MCP test server did not start")


def test_an_http_servers_tool_needing_approval_runs_once_approved_and_its_key_stays_secret(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, rdb: redis.Redis, http_server: str
) -> None:
    url, runs = http_server
    ops = {
        "label": "ops",
        "transport": "http",
        "url": url,
        "allowed_tools": ["deploy", "lookup_ticket"],
        "approval": ["deploy"],
        "headers_from_env": {"X-Api-Key": "OPS_KEY"},
        "default": True,
    }
    bot = start_bot(**NO_LIMITS, MCP_SERVERS=servers(ops), OPS_KEY=OPS_KEY)
    sender = SlackSender(bot.url)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("ops__deploy", {"service": "web"}, call_id="call_deploy"),)),
        Reply(echo_tool_outputs=True),
    )
    event = mention(CHANNEL, ALICE, "Deploy web")
    sender.send_event(event)
    asked = approval_message(slack, event["ts"])
    assert deploys_run(runs) == []  # not run before the yes
    assert click(sender, asked, True, user=ALICE) == 200

    answer = answer_of(slack, event["ts"])
    assert answer.text == "Tool said: deployed web"  # the server took the key: it answered
    assert deploys_run(runs) == ["web"]
    # Only the allowed tools are offered (the server's `crash` is not).
    offered = [n for n in tool_names(openai_fake.model_inputs[0]["tools"]) if n.startswith("ops__")]
    assert sorted(offered) == ["ops__deploy", "ops__lookup_ticket"]
    chunks = stream_chunks(slack, event["ts"])
    assert task_statuses(chunks, "call_deploy")[-1] == "complete"
    bot.stop()
    assert_secret_nowhere(OPS_KEY, rdb, slack, bot.logs())


def test_a_slack_connect_guest_gets_no_mcp_servers(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory
) -> None:
    bot = start_bot(**NO_LIMITS, allow_external_users="true", MCP_SERVERS=servers(DEPLOYS, LOCAL))
    sender = SlackSender(bot.url)
    asked = guest_mention("Deploy web please")
    sender.send_connect_event(asked, sender_team=PARTNER)
    answers(slack, SHARED, asked["ts"])
    host = host_mention("Deploy web please", user=BOB)
    sender.send_connect_event(host, sender_team=TEAM)
    answers(slack, SHARED, host["ts"])
    guest_request, host_request = openai_fake.model_inputs
    assert not [n for n in tool_names(guest_request["tools"]) if n == "mcp" or n.startswith("tix__")]
    assert "mcp" in tool_names(host_request["tools"]) and "tix__deploy" in tool_names(host_request["tools"])


@pytest.mark.parametrize("style", ["responses", "chat_completions"])
def test_a_local_servers_tool_asks_approval_and_runs_on_a_redis_held_backend(
    style: str, slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, tmp_path: Path
) -> None:
    """Bot-side MCP tools are function tools of the tool loop: the same on a server without Conversations
    (issue 17), approval included."""
    openai_fake.set_api_style(style)
    runs = tmp_path / "runs"
    env = {**NO_LIMITS, "ASSISTANT_BACKEND": style, "MCP_SERVERS": servers(local(runs))}
    sender = SlackSender(start_bot(**env).url)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("tix__deploy", {"service": "web"}, call_id="call_dep"),)),
        Reply(echo_tool_outputs=True),
    )
    event = mention(CHANNEL, ALICE, "Deploy web")
    sender.send_event(event)
    asked = approval_message(slack, event["ts"])
    assert deploys_run(runs) == []  # not run before the yes
    assert click(sender, asked, True, user=ALICE) == 200
    assert answer_of(slack, event["ts"]).text == "Tool said: deployed web"
    assert deploys_run(runs) == ["web"]


# ---- review of issue 16 --------------------------------------------------------------------------------


def approve_deploy(sender: SlackSender, slack: FakeSlack, thread_ts: str) -> None:
    asked = approval_message(slack, thread_ts)
    assert click(sender, asked, True, user=ALICE) == 200


def test_a_call_id_used_again_by_a_later_turn_is_asked_about_again(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, tmp_path: Path
) -> None:
    """Call ids are the model's (a server may use "0" every time): an old yes never approves a new call."""
    runs = tmp_path / "runs"
    sender = SlackSender(start_bot(**NO_LIMITS, MCP_SERVERS=servers(local(runs))).url)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("tix__deploy", {"service": "web"}, call_id="0"),)),
        Reply(echo_tool_outputs=True),
    )
    first = mention(CHANNEL, ALICE, "Deploy web")
    sender.send_event(first)
    approve_deploy(sender, slack, first["ts"])
    assert answer_of(slack, first["ts"]).text == "Tool said: deployed web"

    openai_fake.script(
        Reply(tool_calls=(ToolCall("tix__deploy", {"service": "api"}, call_id="0"),)),
        Reply(echo_tool_outputs=True),
    )
    second = mention(CHANNEL, ALICE, "Deploy api")
    sender.send_event(second)
    asked = approval_message(slack, second["ts"])  # asked again, in the new thread
    assert deploys_run(runs) == ["web"]  # and not run before that yes
    assert click(sender, asked, True, user=ALICE) == 200
    assert answer_of(slack, second["ts"]).text == "Tool said: deployed api"
    assert deploys_run(runs) == ["web", "api"]


def test_an_approved_call_is_not_run_twice_when_its_worker_dies(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    env = {**NO_LIMITS, **FAST, "MCP_SERVERS": servers(local(runs))}
    doomed = start_bot(**env)
    sender = SlackSender(doomed.url)
    openai_fake.script(
        Reply(tool_calls=(ToolCall("tix__deploy", {"service": "slow-web"}, call_id="call_slow"),)),
        Reply(echo_tool_outputs=True),
    )
    event = mention(CHANNEL, ALICE, "Deploy web slowly")
    sender.send_event(event)
    approve_deploy(sender, slack, event["ts"])
    # The deploy started (the server recorded it); the worker dies before it ends.
    slack.wait_for(lambda: deploys_run(runs) == ["slow-web"])
    doomed.stop(signal.SIGKILL)

    start_bot(**env)  # the turn is retried there: approved already, but the call is not run again
    answer = answer_of(slack, event["ts"])
    assert deploys_run(runs) == ["slow-web"]
    assert "its result is unknown and it was not run again" in answer.text


def test_a_server_is_offered_only_in_its_workspaces_and_never_with_tools_none(
    slack: FakeSlack, openai_fake: FakeOpenAI, start_bot: BotFactory, tmp_path: Path
) -> None:
    partner = {**DEPLOYS, "label": "partner", "workspaces": ["T0OTHER"]}
    bot = start_bot(**NO_LIMITS, MCP_SERVERS=servers(partner, LOCAL), POLICY_ADMINS=CAROL)
    sender = SlackSender(bot.url)
    # This workspace's admins can't name a server that does not serve it.
    assert "Unknown MCP server(s): `partner`" in command(
        sender, "config set mcp=partner", channel=CHANNEL, user=CAROL
    )
    assert command(sender, "config set tools=none", channel=RANDOM, user=CAROL).startswith("Saved.")
    openai_fake.script(Reply(text="here"), Reply(text="there"))
    here = mention(CHANNEL, ALICE, "Deploy web please")
    sender.send_event(here)
    answers(slack, CHANNEL, here["ts"])
    there = mention(RANDOM, ALICE, "Deploy web please")
    sender.send_event(there)
    answers(slack, RANDOM, there["ts"])
    general, random = openai_fake.model_inputs
    assert "tix__deploy" in tool_names(general["tools"]) and "mcp" not in tool_names(general["tools"])
    assert not [n for n in tool_names(random["tools"]) if n == "mcp" or n.startswith("tix__")]
