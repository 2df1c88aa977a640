"""What people send the bot, routed in one place: a message to answer goes to the turn queue; a command
written after a mention, typed as `/assistant …` or chosen as the "Reset this thread" shortcut is carried
out on its thread, and answered with an ephemeral message.

Slack wants every request acknowledged within 3 seconds, and a command may wait on OpenAI: the listener
acks first and the command runs after (a slash command's answer goes through its `response_url`; a
command after a mention runs in the background once its message is claimed). Whatever costs pays the
spend limits first (`bot.threads.spending`)."""

from __future__ import annotations

import logging

from bot.errors import BotError
from bot.keys import POLICY_WORKSPACE
from bot.models import CommandRequest, IncomingMessage, MessageAction, Workspace
from bot.queue.dispatcher import Dispatcher, Submitted
from bot.queue.spend import Spent, refusal_of
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
from bot.threads.policy import ChannelPolicies
from bot.threads.policy_modal import PolicyForm
from bot.threads.spending import ACTION_COST, Spending
from bot.threads.targets import Targets
from bot.threads.usage import UsageReport

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
        spending: Spending,
        usage: UsageReport,
        policies: ChannelPolicies | None = None,
        policy_form: PolicyForm | None = None,
    ) -> None:
        self._policies = policies
        self._policy_form = policy_form
        self._usage = usage
        self._dispatcher = dispatcher
        self._admin = admin
        self._targets = targets
        self._ephemeral = ephemeral
        self._background = background
        self._guests = guests
        self._spending = spending

    async def receive(self, msg: IncomingMessage, *, require_known_thread: bool = False) -> Submitted:
        """Queue a person's message for an answer, or carry out a command written after a mention.

        Over a spend limit (or in a paused thread) nothing is queued or sent to OpenAI, and the sender is
        told quietly (`Spending.tell`). A Slack Connect guest the configuration does not serve gets a
        notice only. Raises StoreUnavailable, with its user message.
        """
        if self._guests.refuses(msg.external):
            # Told after the ack (a Slack call must not hold it up past Slack's 3 seconds).
            self._background.run(
                self._guests.turn_away_message(msg, require_known_thread=require_known_thread),
                name=f"guest notice {msg.channel}:{msg.ts}",
            )
            return Submitted.IGNORED
        if msg.mentions_bot:
            try:
                parsed = parse_thread_command(msg.text)
            except UnknownCommand as exc:
                # A usage mistake needs nothing but the text: free.
                if await self._dispatcher.claim(msg) is Spent.TAKEN:
                    await self._ephemeral.whisper(msg.channel, msg.user, exc.user_message, msg.thread_ts)
                return Submitted.QUEUED
            if parsed is not None:
                await self._thread_command(msg, parsed)
                return Submitted.QUEUED
        result = await self._dispatcher.submit(msg, require_known_thread=require_known_thread)
        self._tell_if_refused(msg, result)
        return result

    def _tell_if_refused(self, msg: IncomingMessage, outcome: str) -> None:
        """Over a limit: the sender is told after the ack (quietly, see `Spending.tell`)."""
        refused = refusal_of(outcome, f"{msg.channel}:{msg.ts}")
        if refused is not None:
            self._background.run(self._spending.tell(refused, msg), name=f"notice {msg.channel}:{msg.ts}")

    async def _thread_command(self, msg: IncomingMessage, parsed: ParsedCommand) -> None:
        cost = 0 if parsed.command is Command.HELP else ACTION_COST
        outcome = await self._dispatcher.claim(msg, cost=cost)
        if outcome is Spent.DUPLICATE:
            return  # a retry, or the app_mention / message twin
        if outcome is not Spent.TAKEN:
            self._tell_if_refused(msg, outcome)
            return
        # Claimed and paid: the event is acked now, and the command (which may wait on OpenAI) runs after.
        self._background.run(self._answer_thread_command(msg, parsed), name=f"command {msg.channel}:{msg.ts}")

    async def _answer_thread_command(self, msg: IncomingMessage, parsed: ParsedCommand) -> None:
        if parsed.command is Command.USAGE:
            text = await user_text(self._usage.text(msg.workspace, msg.user, external=msg.external))
        elif parsed.command is Command.CONFIG:
            config = self._config(msg.workspace, msg.user, msg.channel, parsed, external=msg.external)
            text = await user_text(config)
        else:
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
        return self.answer_from_text(req)

    @staticmethod
    def answer_from_text(req: CommandRequest) -> str | None:
        """`answer_now` for a sender the bot serves: what the command's text alone answers, or None."""
        try:
            parsed = parse_command(req.text)
        except UnknownCommand as exc:
            return exc.user_message
        if parsed.command is Command.HELP:
            return HELP_TEXT
        if not req.is_dm and parsed.command not in (Command.USAGE, Command.CONFIG):
            return CHANNEL_HINT
        return None

    async def command(self, req: CommandRequest, *, request_id: str) -> str:
        """Carry out `/assistant …` on the user's DM thread, or answer `/assistant usage` (either costs
        `ACTION_COST`): the ephemeral text to show the user (the limit's message when they are over it)."""
        if (now := self.answer_now(req)) is not None:
            return now
        return await user_text(self._paid_command(req, request_id=request_id))

    async def _paid_command(self, req: CommandRequest, *, request_id: str) -> str:
        await self._spending.pay(req.workspace, req.user)
        parsed = parse_command(req.text)
        if parsed.command is Command.USAGE:
            return await self._usage.text(req.workspace, req.user, external=req.external)
        if parsed.command is Command.CONFIG:
            return await self._config(
                req.workspace, req.user, req.channel, parsed, external=req.external, trigger_id=req.trigger_id
            )
        return await self._admin.run(Targets.of_command(req), parsed, request_id=request_id)

    async def _config(
        self,
        workspace: Workspace,
        user: str,
        channel: str,
        parsed: ParsedCommand,
        *,
        external: bool,
        trigger_id: str = "",
    ) -> str:
        """`config …`: a channel's policy (in a DM, or with `--workspace`, the workspace default's). The
        text to answer with ("" when the form opened). Raises BotError with the user's message."""
        if self._policies is None or self._policy_form is None:
            return "Channel policies are not available here."
        scope = POLICY_WORKSPACE if parsed.workspace or channel.startswith("D") else channel
        action = parsed.config_action
        if action == "show":
            return await self._policies.show(workspace, scope)
        if action in ("set", "reset"):
            pairs = parsed.pairs if action == "set" else None
            return await self._policies.change(workspace, user, scope, pairs, external=external)
        if trigger_id:
            return await self._policy_form.open(
                workspace, user, scope, trigger_id=trigger_id, external=external
            )
        # A mention has no trigger id to open a form with.
        shown = await self._policies.show(workspace, scope)
        return f"{shown}\n\nThe form opens with `/assistant config`; or change it with `config set`."

    async def reset_shortcut(self, action: MessageAction, *, request_id: str) -> None:
        """The "Reset this thread" shortcut on a message (it costs `ACTION_COST`): reset the assistant thread
        it belongs to."""
        if self._guests.refuses(action.external):
            await self._guests.turn_away(action.workspace, action.channel, action.user, action.thread_ts)
            return
        try:
            await self._spending.pay(action.workspace, action.user)
            target = await self._targets.of_action(action)
            text = await self._admin.queue_reset(target, request_id=request_id)
        except BotError as exc:
            text = exc.user_message
        await self._ephemeral.whisper(action.channel, action.user, text, action.thread_ts)
