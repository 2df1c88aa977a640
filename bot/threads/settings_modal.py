"""The "Thread settings" modal: opened from the message shortcut or the App Home, it edits the thread's
own metadata (the keys the bot writes are shown, not editable); saved when submitted."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError, StoreUnavailable
from bot.models import MessageAction, Workspace
from bot.slack.client import slack_error
from bot.slack.ephemeral import Ephemeral
from bot.threads.admin import ThreadAdmin
from bot.threads.metadata import BOT_KEYS, MAX_KEY_CHARS, MAX_PAIRS, MAX_VALUE_CHARS, MetadataError, user_part
from bot.threads.targets import Targets, ThreadTarget

log = logging.getLogger(__name__)

SETTINGS_CALLBACK = "thread_settings_modal"
META_BLOCK = "meta_block"
META_INPUT = "meta_lines"

View = dict[str, Any]


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


class ThreadSettings:
    def __init__(
        self, admin: ThreadAdmin, targets: Targets, client: AsyncWebClient, ephemeral: Ephemeral
    ) -> None:
        self._admin = admin
        self._targets = targets
        self._client = client
        self._ephemeral = ephemeral

    async def open_from_shortcut(self, action: MessageAction, *, trigger_id: str) -> None:
        """The "Thread settings" shortcut: open the modal, or tell the user why not."""
        try:
            target = await self._targets.of_action(action)
        except BotError as exc:
            problem: str | None = exc.user_message
        else:
            problem = await self._open(target, trigger_id)
        if problem:
            await self._ephemeral.whisper(action.channel, action.user, problem, action.thread_ts)

    async def open_for_dm(self, workspace: Workspace, user: str, *, trigger_id: str) -> None:
        """The App Home's settings button: the user's own DM thread, once it exists."""
        target = await self._targets.of_dm(workspace, user)
        if target is None:
            return
        problem = await self._open(target, trigger_id)
        if problem:
            await self._ephemeral.whisper(target.channel, user, problem, None)

    async def _open(self, target: ThreadTarget, trigger_id: str) -> str | None:
        try:
            conversation_id = await self._admin.conversation_of(target)
            metadata = await self._admin.metadata(target)
        except (BotError, RedisError) as exc:
            return exc.user_message if isinstance(exc, BotError) else StoreUnavailable.user_message
        keys = target.workspace
        ref = SettingsRef(keys.team_id, keys.enterprise_id, target.thread, target.channel, target.user)
        try:
            await self._client.views_open(
                trigger_id=trigger_id, view=settings_modal(ref, conversation_id, metadata)
            )
        except SlackApiError as exc:
            log.warning("views.open failed: %s", slack_error(exc))
            return "Sorry, I couldn't open the settings. Please try again."
        return None

    async def save(self, workspace: Workspace, user: str, private_metadata: str, text: str) -> str | None:
        """The modal was submitted: None when saved, else the message to show under the text box."""
        ref = SettingsRef.load(private_metadata)
        # The modal belongs to whoever opened it, in that workspace.
        if ref is None or ref.user != user or ref.workspace != workspace:
            return "These settings belong to someone else."
        target = ThreadTarget(workspace, ref.thread, ref.channel, user)
        try:
            await self._admin.replace_user_metadata(target, parse_lines(text))
        except BotError as exc:
            return exc.user_message[:1900]
        except RedisError:
            return StoreUnavailable.user_message
        return None


def _text(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


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
