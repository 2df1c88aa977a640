"""What people send the bot, routed in one place: a message to answer goes to the turn queue; a command
written after a mention, typed as `/assistant …` or chosen as the "Reset this thread" shortcut is carried
out on its thread, and answered with an ephemeral message.

Slack wants every request acknowledged within 3 seconds, and a command may wait on OpenAI: the listener
acks first and the command runs after (a slash command's answer goes through its `response_url`; a
command after a mention runs in the background once its message is claimed)."""

from __future__ import annotations

import logging

from bot.errors import BotError, TeamSpendLimited, UserSpendLimited
from bot.models import CommandRequest, IncomingMessage, MessageAction
from bot.queue.dispatcher import Dispatcher, Submitted
from bot.slack.ephemeral import Ephemeral
from bot.threads.admin import ThreadAdmin, user_text
from bot.threads.background import Background
from bot.threads.commands import (
    CHANNEL_HINT,
    HELP_TEXT,
    Command,
    ParsedCommand,
    UnknownCommand,
    parse_command,
    parse_thread_command,
)
from bot.threads.guests import GUEST_NOTICE, Guests
from bot.threads.targets import Targets

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        dispatcher: Dispatcher,
        admin: ThreadAdmin,
        targets: Targets,
        ephemeral: Ephemeral,
        background: Background,
        guests: Guests,
    ) -> None:
        self._dispatcher = dispatcher
        self._admin = admin
        self._targets = targets
        self._ephemeral = ephemeral
        self._background = background
        self._guests = guests

    async def receive(self, msg: IncomingMessage, *, require_known_thread: bool = False) -> Submitted:
        """Queue a person's message for an answer, or carry out a command written after a mention.

        Raises StoreUnavailable, or UserSpendLimited / TeamSpendLimited (nothing is sent to OpenAI), each
        with a user message. A Slack Connect guest the configuration does not serve gets a notice only.
        """
        if self._guests.refuses(msg.external):
            await self._guests.turn_away_message(msg, require_known_thread=require_known_thread)
            return Submitted.IGNORED
        if msg.mentions_bot:
            try:
                parsed = parse_thread_command(msg.text)
            except UnknownCommand as exc:
                if await self._dispatcher.claim(msg):
                    await self._ephemeral.whisper(msg.channel, msg.user, exc.user_message, msg.thread_ts)
                return Submitted.QUEUED
            if parsed is not None:
                await self._thread_command(msg, parsed)
                return Submitted.QUEUED
        result = await self._dispatcher.submit(msg, require_known_thread=require_known_thread)
        if result is Submitted.USER_LIMITED:
            raise UserSpendLimited(f"user {msg.user}")
        if result is Submitted.TEAM_LIMITED:
            raise TeamSpendLimited(f"team {msg.workspace.team_id}")
        return result

    async def _thread_command(self, msg: IncomingMessage, parsed: ParsedCommand) -> None:
        if not await self._dispatcher.claim(msg):
            return  # a retry, or the app_mention / message twin
        # Claimed: the event is acked now, and the command (which may wait on OpenAI) runs after.
        self._background.run(self._answer_thread_command(msg, parsed), name=f"command {msg.channel}:{msg.ts}")

    async def _answer_thread_command(self, msg: IncomingMessage, parsed: ParsedCommand) -> None:
        target = await self._targets.of_message(msg)
        text = await self._admin.run(target, parsed, request_id=f"{msg.channel}:{msg.ts}", at=msg.ts)
        # In the message's thread when it is in one; at top level otherwise (Slack shows an ephemeral in a
        # thread only once the thread has replies, and a top-level message has none).
        await self._ephemeral.whisper(msg.channel, msg.user, text, msg.thread_ts)

    def answer_now(self, req: CommandRequest) -> str | None:
        """The answer to `/assistant …` when it needs nothing but the text (help, a mistake, a command
        that needs a thread, a guest not served): it goes back in the ack. None: `command` answers after
        the ack."""
        if self._guests.refuses(req.external):
            return GUEST_NOTICE
        try:
            parsed = parse_command(req.text)
        except UnknownCommand as exc:
            return exc.user_message
        if parsed.command is Command.HELP:
            return HELP_TEXT
        if not req.is_dm:
            return CHANNEL_HINT
        return None

    async def command(self, req: CommandRequest, *, request_id: str) -> str:
        """Carry out `/assistant …` on the user's DM thread: the ephemeral text to show the user."""
        if (now := self.answer_now(req)) is not None:
            return now
        parsed = parse_command(req.text)
        return await user_text(self._admin.run(Targets.of_command(req), parsed, request_id=request_id))

    async def reset_shortcut(self, action: MessageAction, *, request_id: str) -> None:
        """The "Reset this thread" shortcut on a message: reset the assistant thread it belongs to."""
        if self._guests.refuses(action.external):
            await self._guests.turn_away(action.workspace, action.channel, action.user, action.thread_ts)
            return
        try:
            target = await self._targets.of_action(action)
            text = await self._admin.queue_reset(target, request_id=request_id)
        except BotError as exc:
            text = exc.user_message
        await self._ephemeral.whisper(action.channel, action.user, text, action.thread_ts)
