"""The "Thread settings" modal: opened from the message shortcut or the App Home, it edits the thread's
own metadata (the keys the bot writes are shown, not editable); saved when submitted."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError, NoAssistantThread, StoreUnavailable
from bot.models import MessageAction, Workspace
from bot.slack.client import SLACK_CALL_ERRORS, slack_error
from bot.slack.ephemeral import Ephemeral
from bot.slack.events import metadata_fields
from bot.slack.inert import escape_mrkdwn
from bot.threads.admin import ThreadAdmin
from bot.threads.guests import GUEST_NOTICE, Guests
from bot.threads.metadata import (
    BOT_KEYS,
    MAX_KEY_CHARS,
    MAX_PAIRS,
    MAX_VALUE_CHARS,
    apply_replace,
    format_lines,
    parse_lines,
    user_part,
)
from bot.threads.spending import Spending
from bot.threads.targets import Targets, ThreadTarget

log = logging.getLogger(__name__)

SETTINGS_CALLBACK = "thread_settings_modal"
NOT_OPENED = "Sorry, I couldn't open the settings. Please try again."
SAVED = "Saved this thread's settings."
META_BLOCK = "meta_block"
META_INPUT = "meta_lines"
# Slack's plain_text_input takes max_length from 1 to 3000 (docs.slack.dev/reference/block-kit/
# block-elements/plain-text-input-element); a modal's private_metadata holds at most 3000 characters
# (docs.slack.dev/reference/views/modal-views). Twelve pairs at their limits (64 + 1 + 512 characters each,
# more when quoted) can be longer than the box: such metadata is edited with `meta set` / `meta unset`.
TEXT_MAX_CHARS = 3000
FOREIGN = "These settings belong to someone else."
UNREADABLE = (
    "I couldn't tell which thread these settings are for. Please close this and open Thread settings again."
)
TOO_LONG_TO_EDIT = (
    "This thread's metadata is {length} characters as text, more than a Slack text box holds ({limit}). "
    "Change it with `meta set` and `meta unset` (see `/assistant help`)."
)

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
        """The ref a modal carried, or None when it is not one this bot wrote (forged, cut or stale)."""
        fields = metadata_fields(raw, 5)
        if fields is None:
            return None
        team, enterprise, thread, channel, user = fields
        if not all(isinstance(v, str) and v for v in (team, thread, channel, user)):
            return None
        if enterprise is not None and not (isinstance(enterprise, str) and enterprise):
            return None
        ref = cls(team, enterprise, thread, channel, user)
        return ref if ref.consistent else None

    @property
    def consistent(self) -> bool:
        """The thread is one the modal could have been opened on: a channel thread from its own channel,
        a DM thread by its owner in a DM."""
        if self.thread.startswith("u:"):
            return self.thread == f"u:{self.user}" and self.channel.startswith("D")
        kind, _, rest = self.thread.partition(":")
        channel, _, ts = rest.partition(":")
        return kind == "c" and channel == self.channel and bool(ts)

    @property
    def workspace(self) -> Workspace:
        return Workspace(team_id=self.team_id, enterprise_id=self.enterprise_id)


class ThreadSettings:
    """The modal's life: `views.open` first (a trigger id lives 3 seconds), with a loading view that is
    then replaced by the thread's settings, or by why they can't be shown; on submit, the text is checked
    at once (problems shown under the text box) and saved after the ack, the user told how it went.
    Opening and saving each cost a spend-limit token (`Spending`); over the limit, the modal says so."""

    def __init__(
        self,
        admin: ThreadAdmin,
        targets: Targets,
        client: AsyncWebClient,
        ephemeral: Ephemeral,
        guests: Guests,
        spending: Spending,
    ) -> None:
        self._admin = admin
        self._targets = targets
        self._client = client
        self._ephemeral = ephemeral
        self._guests = guests
        self._spending = spending

    async def open_from_shortcut(self, action: MessageAction, *, trigger_id: str) -> None:
        """The "Thread settings" shortcut on a message: the settings of the thread it belongs to."""
        if self._guests.refuses(action.external):
            await self._guests.turn_away(action.workspace, action.channel, action.user, action.thread_ts)
            return
        view_id = await self._open_loading(trigger_id)
        if view_id is None:
            await self._ephemeral.whisper(action.channel, action.user, NOT_OPENED, action.thread_ts)
            return
        try:
            await self._spending.pay(action.workspace, action.user)
            target = await self._targets.of_action(action)
        except BotError as exc:
            await self._show(view_id, notice_view(exc.user_message))
            return
        await self._fill(view_id, target)

    async def open_for_dm(
        self, workspace: Workspace, user: str, *, trigger_id: str, external: bool = False
    ) -> None:
        """The App Home's settings button: the user's own DM thread."""
        view_id = await self._open_loading(trigger_id)
        if view_id is None:
            return
        if self._guests.refuses(external):
            await self._show(view_id, notice_view(GUEST_NOTICE))
            return
        target = await self._targets.of_dm(workspace, user)
        if target is None:
            await self._show(view_id, notice_view(NoAssistantThread.user_message))
            return
        try:
            await self._spending.pay(workspace, user)
        except BotError as exc:
            await self._show(view_id, notice_view(exc.user_message))
            return
        await self._fill(view_id, target)

    async def _open_loading(self, trigger_id: str) -> str | None:
        try:
            response = await self._client.views_open(trigger_id=trigger_id, view=loading_view())
        except SLACK_CALL_ERRORS as exc:
            log.warning("views.open failed: %s", slack_error(exc))
            return None
        return str((response.get("view") or {}).get("id") or "") or None

    async def _fill(self, view_id: str, target: ThreadTarget) -> None:
        try:
            conversation_id = await self._admin.conversation_of(target)
            metadata = await self._admin.metadata(target)
        except (BotError, RedisError) as exc:
            problem = exc.user_message if isinstance(exc, BotError) else StoreUnavailable.user_message
            await self._show(view_id, notice_view(problem))
            return
        keys = target.workspace
        ref = SettingsRef(keys.team_id, keys.enterprise_id, target.thread, target.channel, target.user)
        editable = format_lines(user_part(metadata))
        if len(editable) > TEXT_MAX_CHARS:
            await self._show(
                view_id, notice_view(TOO_LONG_TO_EDIT.format(length=len(editable), limit=TEXT_MAX_CHARS))
            )
            return
        await self._show(view_id, settings_modal(ref, conversation_id, metadata))

    async def _show(self, view_id: str, view: View) -> None:
        try:
            await self._client.views_update(view_id=view_id, view=view)
        except SLACK_CALL_ERRORS as exc:
            log.warning("views.update failed: %s", slack_error(exc))

    @staticmethod
    def check(workspace: Workspace, user: str, private_metadata: str, text: str) -> str | None:
        """The submitted modal, checked without I/O: the problem to show under the text box, or None."""
        ref = SettingsRef.load(private_metadata)
        if ref is None:
            log.warning(
                "settings submitted with unreadable private_metadata (%d characters)", len(private_metadata)
            )
            return UNREADABLE
        # The modal belongs to whoever opened it, in that workspace.
        if ref.user != user or ref.workspace != workspace:
            return FOREIGN
        if len(text) > TEXT_MAX_CHARS:  # Slack's max_length keeps a real submission within it
            return f"That is {len(text)} characters; the box holds {TEXT_MAX_CHARS}."
        try:
            # Against the most the bot's own keys can take, so the save after the ack fits.
            apply_replace(dict.fromkeys(BOT_KEYS, ""), parse_lines(text))
        except BotError as exc:
            return exc.user_message[:1900]
        return None

    async def accept(
        self, workspace: Workspace, user: str, private_metadata: str, text: str, *, external: bool = False
    ) -> str | None:
        """A submitted modal, before the ack: `check`, then the save's spend-limit token (a mistake costs
        nothing; a Slack Connect guest the configuration does not serve is told so). The problem to show
        under the text box, or None: `save` it after the ack."""
        if self._guests.refuses(external):
            return GUEST_NOTICE
        problem = self.check(workspace, user, private_metadata, text)
        if problem is not None:
            return problem
        try:
            await self._spending.pay(workspace, user)
        except BotError as exc:
            return exc.user_message
        return None

    async def save(self, workspace: Workspace, user: str, private_metadata: str, text: str) -> None:
        """Save a submitted modal that `check` passed (after the ack), and tell the user how it went."""
        ref = SettingsRef.load(private_metadata)
        if ref is None or self.check(workspace, user, private_metadata, text) is not None:
            return
        target = ThreadTarget(workspace, ref.thread, ref.channel, user)
        try:
            await self._admin.replace_user_metadata(target, parse_lines(text))
            told = SAVED
        except BotError as exc:
            told = f"Your thread settings were not saved. {exc.user_message}"
        except RedisError:
            told = f"Your thread settings were not saved. {StoreUnavailable.user_message}"
        await self._ephemeral.whisper(ref.channel, user, told, target.notice_ts)


def _text(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def settings_modal(ref: SettingsRef, conversation_id: str, metadata: Mapping[str, str]) -> View:
    bot_lines = [f"`{k}`: {escape_mrkdwn(metadata.get(k) or '—')}" for k in BOT_KEYS if k in metadata]
    editable = format_lines(user_part(metadata))
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": META_INPUT,
        "multiline": True,
        "max_length": TEXT_MAX_CHARS,
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
            {"type": "section", "text": _text(f"Assistant thread `{escape_mrkdwn(conversation_id)}`")},
            {"type": "context", "elements": [_text("Set by the bot: " + " · ".join(bot_lines))]},
            {
                "type": "input",
                "block_id": META_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Metadata, one KEY=VALUE per line"},
                "hint": {
                    "type": "plain_text",
                    "text": f"Up to {MAX_PAIRS - len(BOT_KEYS)} pairs; keys up to {MAX_KEY_CHARS} "
                    f"characters, values up to {MAX_VALUE_CHARS}. A value is everything after the = "
                    "and is kept exactly, spaces included; for line breaks write it in double quotes "
                    'with \\n: note="line 1\\nline 2".',
                },
                "element": element,
            },
        ],
    }


def loading_view() -> View:
    return _plain_modal("Loading this thread's settings…")


def notice_view(text: str) -> View:
    return _plain_modal(text)


def _plain_modal(text: str) -> View:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Thread settings"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": _text(text)}],
    }
