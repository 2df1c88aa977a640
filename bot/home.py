"""Block Kit views: the App Home tab and the "Thread settings" modal (pure builders, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.metadata import BOT_KEYS, MAX_KEY_CHARS, MAX_PAIRS, MAX_VALUE_CHARS, MetadataError, user_part
from bot.models import Workspace

SETTINGS_CALLBACK = "thread_settings_modal"
META_BLOCK = "meta_block"
META_INPUT = "meta_lines"
HOME_RESET_ACTION = "home_reset_dm_thread"
HOME_SETTINGS_ACTION = "home_dm_thread_settings"

View = dict[str, Any]


@dataclass(frozen=True)
class RecentThread:
    label: str
    url: str
    last_active: float


@dataclass(frozen=True)
class SettingsRef:
    """What the modal edits, carried in its private_metadata and checked again on submit."""

    team_id: str
    enterprise_id: str | None
    thread: str
    channel: str
    user: str

    def dump(self) -> str:
        return json.dumps([self.team_id, self.enterprise_id, self.thread, self.channel, self.user])

    @classmethod
    def load(cls, raw: str) -> SettingsRef | None:
        try:
            team, enterprise, thread, channel, user = json.loads(raw)
        except (ValueError, TypeError):
            return None
        return cls(str(team), enterprise, str(thread), str(channel), str(user))

    @property
    def workspace(self) -> Workspace:
        return Workspace(team_id=self.team_id, enterprise_id=self.enterprise_id)


def _text(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def home_view(*, model: str, tools: list[str], threads: list[RecentThread], date: Any) -> View:
    """The App Home tab. `date` renders an epoch as Slack date markup."""
    tool_names = ", ".join(tools) if tools else "none"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your assistant"}},
        {"type": "section", "text": _text(f"*Model:* `{model}`\n*Tools:* {tool_names}")},
        {"type": "divider"},
        {"type": "section", "text": _text("*Your recent assistant threads*")},
    ]
    if threads:
        lines = [f"• <{t.url}|{t.label}> · {date(t.last_active)}" for t in threads]
        blocks.append({"type": "section", "text": _text("\n".join(lines))})
    else:
        blocks.append(
            {"type": "context", "elements": [_text("None yet. Mention me in a channel or write to me.")]}
        )
    blocks += [
        {"type": "divider"},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": HOME_SETTINGS_ACTION,
                    "text": {"type": "plain_text", "text": "My DM thread's settings"},
                },
                {
                    "type": "button",
                    "action_id": HOME_RESET_ACTION,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Reset my DM thread"},
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Reset your DM thread?"},
                        "text": _text("The assistant forgets your direct-message conversation."),
                        "confirm": {"type": "plain_text", "text": "Reset"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                },
            ],
        },
    ]
    return {"type": "home", "blocks": blocks}


def settings_modal(ref: SettingsRef, conversation_id: str, metadata: Mapping[str, str]) -> View:
    bot_lines = [f"`{k}`: {metadata.get(k) or '—'}" for k in BOT_KEYS if k in metadata]
    editable = "\n".join(f"{k}={v}" for k, v in user_part(metadata).items())
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": META_INPUT,
        "multiline": True,
        "placeholder": {"type": "plain_text", "text": "topic=Q3 planning"},
    }
    if editable:
        element["initial_value"] = editable
    return {
        "type": "modal",
        "callback_id": SETTINGS_CALLBACK,
        "private_metadata": ref.dump(),
        "title": {"type": "plain_text", "text": "Thread settings"},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": _text(f"Assistant thread `{conversation_id}`")},
            {"type": "context", "elements": [_text("Set by the bot: " + " · ".join(bot_lines))]},
            {
                "type": "input",
                "block_id": META_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Metadata, one KEY=VALUE per line"},
                "hint": {
                    "type": "plain_text",
                    "text": f"Up to {MAX_PAIRS - len(BOT_KEYS)} pairs; keys up to {MAX_KEY_CHARS} "
                    f"characters, values up to {MAX_VALUE_CHARS}.",
                },
                "element": element,
            },
        ],
    }


def parse_lines(text: str) -> dict[str, str]:
    """The modal's text box: one KEY=VALUE per line (values keep their spaces; blank lines are skipped)."""
    pairs: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            problems.append(f"Line {number} is not KEY=VALUE.")
            continue
        pairs[key.strip()] = value.strip()
    if problems:
        raise MetadataError(problems)
    return pairs
