"""MCP configuration and approvals (issue 16), without processes: the server list is checked at start-up
(naming a missing variable, never a value), the hosted tool follows the spec's `MCPTool`, the policy's `mcp`
setting is parsed and merged, and the Approve / Deny message passes the fake Slack's Block Kit checks with
the model's arguments inert; clicks are parsed (or refused) as Slack sends them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import ApprovalAsk
from bot.errors import ConfigError, PolicyInvalid
from bot.keys import Keys
from bot.models import Workspace
from bot.settings import McpServer, Settings
from bot.threads.policy import ChannelPolicies, Policy, changed
from bot.tools import ToolContext, ToolRegistry
from bot.tools.approvals import APPROVE_ACTION, DENY_ACTION, parse_approval_click, request_blocks
from bot.tools.mcp import McpTools, hosted_tool
from tests.fakes.openai_api import get_spec
from tests.fakes.slack_api import _message_block_problems, live_tokens

TEAM = "T0ACME"


def settings(**overrides: Any) -> Settings:
    return Settings(slack_bot_token="xoxb-1", openai_api_key="k", **overrides)  # type: ignore[arg-type]


def test_the_server_list_is_checked_and_a_missing_secret_is_named_not_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPS_TOKEN", raising=False)
    hosted = {
        "label": "ops",
        "transport": "hosted",
        "url": "https://x/mcp",
        "headers_from_env": {"X-Key": "OPS_TOKEN"},
    }
    with pytest.raises(ConfigError, match="environment variable\\(s\\) not set: OPS_TOKEN"):
        settings(mcp_servers=json.dumps([hosted])).mcp_server_list()
    monkeypatch.setenv("OPS_TOKEN", "s3cret-value")
    [server] = settings(mcp_servers=json.dumps([hosted])).mcp_server_list()
    assert Settings.mcp_headers(server) == {"X-Key": "s3cret-value"}
    assert "s3cret-value" not in repr(server)  # the configuration holds the variable's name only

    for bad, problem in (
        ([hosted, hosted], "share a label"),
        ([{"label": "l", "transport": "stdio"}], "needs `command`"),
        ([{"label": "l", "transport": "http", "url": "ftp://x"}], "http\\(s\\) URL"),
    ):
        with pytest.raises(ConfigError, match=problem):
            settings(mcp_servers=json.dumps(bad)).mcp_server_list()
    with pytest.raises(ValueError):  # a label that can't name a function tool
        settings(mcp_servers=json.dumps([{"label": "a b", "transport": "hosted", "url": "https://x"}]))
    listed = tmp_path / "mcp.json"
    listed.write_text(json.dumps([{"label": "file", "transport": "stdio", "command": ["srv"]}]))
    assert [s.label for s in settings(mcp_servers_file=str(listed)).mcp_server_list()] == ["file"]


@pytest.mark.parametrize(
    ("approval", "allowed", "expected"),
    [
        ("never", None, "never"),
        ("always", ["a"], "always"),
        (
            ["deploy"],
            ["deploy", "status"],
            {"always": {"tool_names": ["deploy"]}, "never": {"tool_names": ["status"]}},
        ),
        ([], ["status"], {"never": {"tool_names": ["status"]}}),
    ],
)
def test_the_hosted_tool_follows_the_spec(
    monkeypatch: pytest.MonkeyPatch, approval: Any, allowed: Any, expected: Any
) -> None:
    monkeypatch.setenv("OPS_TOKEN", "t")
    server = McpServer(
        label="ops",
        transport="hosted",
        url="https://x/mcp",
        approval=approval,
        allowed_tools=allowed,
        headers_from_env={"Authorization": "OPS_TOKEN"},
    )
    tool = hosted_tool(server)
    assert tool["require_approval"] == expected and tool["headers"] == {"Authorization": "t"}
    assert get_spec().schema_errors("MCPTool", tool) == []


def test_the_policy_names_known_servers_and_a_channel_replaces_the_default() -> None:
    assert changed(Policy(), {"mcp": "ops, tix"}, [], ["ops", "tix"]).mcp == ("ops", "tix")
    assert changed(Policy(), {"mcp": "none"}, [], ["ops"]).mcp == ()
    with pytest.raises(PolicyInvalid, match="Unknown MCP server"):
        changed(Policy(), {"mcp": "teleport"}, [], ["ops"])
    default = Policy(mcp=("ops",))
    assert Policy().over(default).offers_server("ops", default=False)
    assert not Policy(mcp=()).over(default).offers_server("ops", default=True)
    assert Policy().offers_server("tix", default=True) and not Policy().offers_server("tix", default=False)
    assert Policy.load(Policy(mcp=("ops",)).dump()).mcp == ("ops",)


def test_the_question_passes_block_kit_and_its_arguments_stay_inert() -> None:
    ask = ApprovalAsk("mcpr_1", "ops", "deploy", json.dumps({"note": "<!channel> <@U0BOSS> ``` &amp; " * 40}))
    blocks = request_blocks(ask, "U0ALICE", "C0GENERAL:1.1")
    assert _message_block_problems(blocks) == []
    text = blocks[0]["text"]["text"]
    assert live_tokens(text) == [("user", "<@U0ALICE>")]  # only the asker is mentioned
    assert text.count("```") == 2
    buttons = blocks[1]["elements"]
    assert [b["action_id"] for b in buttons] == [APPROVE_ACTION, DENY_ACTION]
    assert {b["value"] for b in buttons} == {"C0GENERAL:1.1|mcpr_1"}


def click(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": TEAM},
        "user": {"id": "U0ALICE"},
        "channel": {"id": "C0GENERAL"},
        "message": {"ts": "1.2", "thread_ts": "1.1"},
        "actions": [{"type": "button", "action_id": DENY_ACTION, "value": "C0GENERAL:1.1|call_1"}],
    }
    body.update(changes)
    return body


def test_clicks_are_parsed_or_refused() -> None:
    parsed = parse_approval_click(click(), {})
    assert parsed is not None and not parsed.approve and parsed.ask_id == "call_1"
    assert parsed.thread_ts == "1.1" and parsed.workspace.team_id == TEAM
    for bad in (
        click(actions=[{"type": "button", "action_id": "other", "value": "x"}]),
        click(actions=[{"type": "button", "action_id": APPROVE_ACTION, "value": "x" * 2001}]),
        click(user=None),
        click(actions="nope"),
        click(actions=[{"type": "button", "action_id": APPROVE_ACTION, "value": "call_1"}]),  # no turn
    ):
        assert parse_approval_click(bad, {}) is None


def test_a_bot_side_tool_is_refused_when_not_offered_or_for_a_guest() -> None:
    registry = ToolRegistry([], mcp=McpTools([McpServer(label="tix", transport="stdio", command=["none"])]))
    slack = AsyncWebClient(token="xoxb-unused")

    def ctx(**kw: Any) -> ToolContext:
        return ToolContext(TEAM, "U0ALICE", "C0GENERAL", "1.1", slack, keys=Keys(TEAM), **kw)

    async def run() -> tuple[str, str]:
        return (
            await registry.run("tix__lookup", "{}", ctx(offered=frozenset())),
            await registry.run("tix__lookup", "{}", ctx(external=True)),
        )

    hidden, guest = asyncio.run(run())
    assert json.loads(hidden) == json.loads(guest) == {"error": "there is no tool named tix__lookup"}


def test_a_header_secret_may_live_in_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bot import settings as settings_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOTENV_MCP_KEY", raising=False)
    (tmp_path / ".env").write_text("DOTENV_MCP_KEY=from-the-file\n")
    settings_module._dotenv.cache_clear()
    try:
        hosted = {
            "label": "d",
            "transport": "hosted",
            "url": "https://x",
            "headers_from_env": {"K": "DOTENV_MCP_KEY"},
        }
        [server] = settings(mcp_servers=json.dumps([hosted])).mcp_server_list()
        assert Settings.mcp_headers(server) == {"K": "from-the-file"}
    finally:
        settings_module._dotenv.cache_clear()


def test_a_label_that_would_route_wrongly_is_refused_and_servers_are_off_unless_chosen() -> None:
    for label in ("a__b", "ops_", "__"):
        with pytest.raises(ValueError, match="may not contain"):
            McpServer(label=label, transport="stdio", command=["srv"])
    server = McpServer(label="a_b-c", transport="stdio", command=["srv"])
    assert server.default is False and server.serves(TEAM)
    tools = McpTools([McpServer(label="a", transport="stdio", command=["srv"])])
    assert tools.server_of("a__b__c") is not None and tools.owns("a__b__c")


def test_a_server_serves_only_its_workspaces_and_only_theirs_may_name_it() -> None:
    ops = McpServer(label="ops", transport="stdio", command=["srv"], workspaces=[TEAM])
    docs = McpServer(label="docs", transport="stdio", command=["srv"])
    assert ops.serves(TEAM) and not ops.serves("T0OTHER")
    with pytest.raises(ValueError):
        McpServer(label="x", transport="stdio", command=["srv"], workspaces=["acme"])
    policies = ChannelPolicies(None, None, None, [], servers=[ops, docs])  # type: ignore[arg-type]
    assert policies.known_servers(Workspace(team_id=TEAM)) == ["ops", "docs"]
    other = policies.known_servers(Workspace(team_id="T0OTHER"))
    assert other == ["docs"]
    with pytest.raises(PolicyInvalid, match="Unknown MCP server"):
        changed(Policy(), {"mcp": "ops"}, [], other)


def test_tools_none_turns_mcp_servers_off_and_a_tools_list_leaves_them_to_mcp() -> None:
    assert not Policy(tools=()).offers_server("ops", default=True)
    assert not Policy(tools=()).over(Policy(mcp=("ops",))).offers_server("ops", default=True)
    assert not Policy(tools=(), mcp=("ops",)).offers_server("ops", default=False)
    assert Policy(tools=("web_search",), mcp=("ops",)).offers_server("ops", default=False)
    assert Policy(tools=("web_search",)).offers_server("ops", default=True)
