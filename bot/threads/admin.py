"""Thread operations for people: status, history, metadata and reset, with who-may-do-what checks.

Every operation names its target: the assistant thread (already resolved through aliases), where the request
came from and who asked. A DM thread belongs to the person who started it; a channel thread can only be
reached from inside its channel (Slack shows mentions and message shortcuts only to its members).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from redis.exceptions import RedisError

from bot.assistant.backend import AssistantBackend
from bot.errors import BotError, NoAssistantThread, NotYourThread, StoreUnavailable
from bot.files.service import FileService
from bot.models import Turn
from bot.queue.dispatcher import Dispatcher
from bot.slack.inert import escape_mrkdwn
from bot.threads.commands import HELP_TEXT, Command, ParsedCommand
from bot.threads.metadata import MAX_PAIRS, READ_ONLY_KEYS, apply_replace, apply_set, apply_unset
from bot.threads.store import ThreadStore
from bot.threads.targets import ThreadTarget

log = logging.getLogger(__name__)


RESET_QUEUED = "Resetting this thread's assistant memory…"


def slack_date(epoch: float) -> str:
    """A date Slack shows in the reader's own time zone."""
    iso = datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(epoch)}^{{date_short_pretty}} at {{time}}|{iso}>"


class ThreadAdmin:
    def __init__(
        self,
        store: ThreadStore,
        conversations: AssistantBackend,
        dispatcher: Dispatcher,
        *,
        files: FileService | None = None,
    ) -> None:
        self._store = store
        self._conversations = conversations
        self._dispatcher = dispatcher
        self._files = files

    async def run(
        self, target: ThreadTarget, parsed: ParsedCommand, *, request_id: str, at: str | None = None
    ) -> str:
        """Carry out a command on the target thread; the text to show the user (errors included).
        `at`: the ts of the message that asked (its reset goes after earlier messages, before later ones)."""
        try:
            if parsed.command is Command.HELP:
                return HELP_TEXT
            if parsed.command is Command.RESET:
                return await self.queue_reset(target, request_id=request_id, at=at)
            if parsed.command is Command.HISTORY:
                return await self.history(target, parsed.limit)
            if parsed.command is Command.STATUS:
                return await self.status(target)
            if parsed.meta_action == "set":
                pairs = parsed.pairs
                return await self.edit_metadata(target, lambda current: apply_set(current, pairs))
            if parsed.meta_action == "unset":
                keys = list(parsed.keys)
                return await self.edit_metadata(target, lambda current: apply_unset(current, keys))
            return await self.show_metadata(target)
        except BotError as exc:
            log.info("%s on %s refused: %s: %s", parsed.command, target.thread, type(exc).__name__, exc)
            return exc.user_message

    async def _authorize(self, target: ThreadTarget) -> None:
        known, owner = await self._store.owner(target.workspace.keys, target.thread)
        if not known:
            raise NoAssistantThread(f"{target.thread} unknown")
        if target.channel.startswith("D") and owner is not None and owner != target.user:
            raise NotYourThread(f"{target.user} is not the owner of {target.thread}")

    async def conversation_of(self, target: ThreadTarget) -> str:
        await self._authorize(target)
        conversation_id = await self._store.conversation_id(target.workspace.keys, target.thread)
        if conversation_id is None:
            raise NoAssistantThread(f"{target.thread} has no conversation")
        return conversation_id

    async def queue_reset(self, target: ThreadTarget, *, request_id: str, at: str | None = None) -> str:
        await self._authorize(target)
        now = time.time()
        turn = Turn(
            kind="reset",
            workspace=target.workspace,
            thread=target.thread,
            channel=target.channel,
            user=target.user,
            text="",
            # After every message already queued for the thread (Slack ts are epoch seconds too), or where
            # the message that asked for it stands.
            ts=at or f"{now:.6f}",
            reply_thread_ts=target.notice_ts,
            is_dm=target.channel.startswith("D"),
            received_at=now,
        )
        await self._dispatcher.submit_reset(turn, request_id=request_id)
        return RESET_QUEUED

    async def metadata(self, target: ThreadTarget) -> dict[str, str]:
        conversation_id = await self.conversation_of(target)
        return (await self._conversations.info(conversation_id)).metadata

    async def show_metadata(self, target: ThreadTarget) -> str:
        conversation_id = await self.conversation_of(target)
        info = await self._conversations.info(conversation_id)
        return format_metadata(info.id, info.metadata)

    async def edit_metadata(
        self, target: ThreadTarget, change: Callable[[Mapping[str, str]], dict[str, str]]
    ) -> str:
        """Validate the change against the current metadata first; nothing is written when it fails."""
        conversation_id = await self.conversation_of(target)
        info = await self._conversations.info(conversation_id)
        updated = change(info.metadata)
        await self._conversations.set_metadata(conversation_id, updated)
        log.info("metadata of %s changed by %s", conversation_id, target.user)
        return "Saved.\n" + format_metadata(conversation_id, updated)

    async def replace_user_metadata(self, target: ThreadTarget, pairs: Mapping[str, str]) -> None:
        await self.edit_metadata(target, lambda current: apply_replace(current, pairs))

    async def history(self, target: ThreadTarget, limit: int) -> str:
        conversation_id = await self.conversation_of(target)
        lines = await self._conversations.newest_items(conversation_id, limit)
        if not lines:
            return "This assistant thread has no messages yet."
        # What people and the model wrote is shown, never acted on.
        shown = [f"*{escape_mrkdwn(i.role.capitalize())}:* {escape_mrkdwn(i.text)}".rstrip() for i in lines]
        return f"*The newest {len(lines)} item(s), newest first*\n" + "\n".join(shown)

    async def status(self, target: ThreadTarget) -> str:
        conversation_id = await self.conversation_of(target)
        info = await self._conversations.info(conversation_id)
        count = await self._conversations.count_items(conversation_id)
        record = await self._store.record(target.workspace.keys, target.thread)
        files = "none"
        if self._files is not None:
            files = await self._files.describe(target.workspace.keys, target.thread)
        last_run = "none yet"
        if record.get("last_run_at"):
            last_run = f"{record.get('last_run', 'answered')}, {slack_date(float(record['last_run_at']))}"
        return "\n".join(
            [
                f"*Assistant thread* `{info.id}`",
                f"• Created: {slack_date(info.created_at)}",
                f"• Messages: {count if count < 1000 else '1000+'}",
                f"• Files: {files}",
                f"• Last run: {last_run}",
                f"• Metadata: {len(info.metadata)} of {MAX_PAIRS} pairs",
            ]
        )


def format_metadata(conversation_id: str, metadata: Mapping[str, str]) -> str:
    """The metadata as mrkdwn; keys and values are anyone's text, shown inert."""
    lines = [f"*Metadata of assistant thread* `{escape_mrkdwn(conversation_id)}`"]
    for key in sorted(metadata, key=lambda k: (k not in READ_ONLY_KEYS, k)):
        suffix = " _(set by the bot)_" if key in READ_ONLY_KEYS else ""
        value = escape_mrkdwn(metadata[key]) or "_(empty)_"
        lines.append(f"• `{escape_mrkdwn(key)}`: {value}{suffix}")
    lines.append(f"_{len(metadata)} of {MAX_PAIRS} pairs used._")
    return "\n".join(lines)


async def user_text(call: Awaitable[str]) -> str:
    """The text to show the user for an operation: its answer, or what went wrong, in words."""
    try:
        return await call
    except BotError as exc:
        return exc.user_message
    except RedisError as exc:
        log.warning("Redis unavailable: %s", type(exc).__name__)
        return StoreUnavailable.user_message
