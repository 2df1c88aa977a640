"""manifest.yml: valid against Slack's schema, and in step with what the code listens to and calls."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot.settings import BOT_SCOPES
from handlers.listeners import COMMANDS, EVENTS, MESSAGE_SHORTCUTS
from tests.harness import BotProcess, SlackSender, message, new_ts

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "specs" / "slack-manifest.schema.1.0.0.json"

# A `message` listener receives these subscriptions.
EVENT_SUBSCRIPTIONS = {
    "message": {"message.channels", "message.groups", "message.im", "message.mpim"},
}
EVENT_SCOPES = {
    "app_mention": {"app_mentions:read"},
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
    "message.im": {"im:history"},
    "message.mpim": {"mpim:history"},
    "app_home_opened": set(),
    "app_context_changed": set(),
    "app_uninstalled": set(),
    "tokens_revoked": set(),
    # docs.slack.dev/reference/events/agent_session_stopped (an app declared as an agent, chat:write).
    "agent_session_stopped": {"chat:write"},
}
# Web API methods -> scopes (docs.slack.dev reference pages).
METHOD_SCOPES = {
    "chat_postMessage": "chat:write",
    "chat_postEphemeral": "chat:write",
    "chat_update": "chat:write",
    "chat_delete": "chat:write",
    "chat_stream": "chat:write",
    "chat_startStream": "chat:write",
    "chat_appendStream": "chat:write",
    "chat_stopStream": "chat:write",
    "assistant_threads_setStatus": "assistant:write",
    "assistant_threads_setSuggestedPrompts": "assistant:write",
    # ref agents.sessions.setStatus.json / rename.json: bot scope chat:write.
    "agents_sessions_setStatus": "chat:write",
    "agents_sessions_rename": "chat:write",
    "users_info": "users:read",
    "views_open": None,
    "views_update": None,
    "views_publish": None,
    "files_info": "files:read",
    "files_upload_v2": "files:write",  # code interpreter output shared in the thread
}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_manifest_validates_against_slacks_schema(manifest: dict) -> None:
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(manifest)
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["features"]["agent_view"]["suggested_prompts"]
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True


def test_declared_events_commands_and_shortcuts_match_the_listeners(manifest: dict) -> None:
    listened = set().union(*(EVENT_SUBSCRIPTIONS.get(e, {e}) for e in EVENTS))
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == listened
    assert {c["command"] for c in manifest["features"]["slash_commands"]} == set(COMMANDS)
    shortcuts = manifest["features"]["shortcuts"]
    assert {s["callback_id"] for s in shortcuts if s["type"] == "message"} == set(MESSAGE_SHORTCUTS)
    assert {s["name"] for s in shortcuts} == {"Reset this thread", "Thread settings", "Forget this message"}


def test_oauth_installs_ask_for_the_manifests_bot_scopes(manifest: dict) -> None:
    assert list(BOT_SCOPES) == manifest["oauth_config"]["scopes"]["bot"]


def test_scopes_are_exactly_what_the_code_uses(manifest: dict) -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    source += "\n".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))
    called = set(
        re.findall(
            r"\.(chat_\w+|assistant_threads_\w+|agents_sessions_\w+|users_\w+|conversations_\w+|views_\w+|files_\w+)\(",
            source,
        )
    )
    assert called <= set(METHOD_SCOPES), f"add the scopes of {called - set(METHOD_SCOPES)}"
    needed = {scope for m in called if (scope := METHOD_SCOPES[m])}
    if "url_private" in source:  # downloading a file with the bot token needs files:read too
        needed.add("files:read")
    needed |= set().union(
        *(EVENT_SCOPES[e] for e in manifest["settings"]["event_subscriptions"]["bot_events"])
    )
    needed.add("commands")  # the slash command and the message shortcut
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed


def test_the_running_bot_handles_everything_declared_and_nothing_else(
    manifest: dict, sender: SlackSender, bot: BotProcess
) -> None:
    # A request no listener takes is acked (200) and logged as such: every declared event must be taken.
    channel_for = {
        "message.channels": ("C0X", "channel"),
        "message.groups": ("G0GRP", "group"),
        "message.im": ("D0X", "im"),
        "message.mpim": ("G0MPIM", "mpim"),
    }
    for subscription in manifest["settings"]["event_subscriptions"]["bot_events"]:
        kind = subscription.split(".")[0]
        if kind == "message":
            channel, channel_type = channel_for[subscription]
            event = message(channel, "U0SOMEONE", "hi", thread_ts=new_ts(), channel_type=channel_type)
        else:
            event = {"type": kind, "user": "U0SOMEONE", "channel": "D0X", "tab": "home", "event_ts": new_ts()}
        assert sender.send_event(event).status == 200, subscription
    for cmd in manifest["features"]["slash_commands"]:
        reply = sender.send_form(
            {
                "command": cmd["command"],
                "text": "help",
                "team_id": "T0TEAM1",
                "channel_id": "D0X",
                "user_id": "U0SOMEONE",
                "trigger_id": "t1",
            }
        )
        assert reply.status == 200 and "Assistant commands" in reply.body
    assert "no listener for" not in bot.logs()
    # ...and an event the app does not subscribe to is not handled.
    assert sender.send_event({"type": "reaction_added", "user": "U0X", "event_ts": new_ts()}).status == 200
    assert "no listener for event reaction_added; acked" in bot.logs()
