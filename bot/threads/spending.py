"""Spend limits for what people do besides writing messages, and telling people they are over a limit
without making noise.

Messages pay in the submit script (1 token plus their files by size, and one answer from the thread's
bucket). Commands that act on a thread (`/assistant status`, `@Assistant reset` …), the message shortcuts,
settings saves and App Home buttons pay `ACTION_COST` here, from the same buckets; so does `/assistant
usage` (it reads up to ~100 Redis keys and may ask Slack's users.info: cheap, but not free to repeat in a
loop). Help and usage mistakes (`Intake.answer_now`, an unknown `@Assistant meta …`) need only the text and
stay free.

A refused message gets an ephemeral notice (in its thread when it is in one), at most one per person per
window, and a paused thread one per thread; the rest are only logged (a command written after a mention
is a message here). A refused slash command, shortcut, save or App Home button is always answered: that
answer goes to its sender alone, in reply to something they just did.
"""

from __future__ import annotations

import logging

from bot.errors import SpendLimited, ThreadPaused
from bot.models import IncomingMessage, Workspace, thread_ref
from bot.queue.spend import SpendLimits, refusal_of
from bot.slack.ephemeral import Ephemeral

log = logging.getLogger(__name__)

# What a command, shortcut, settings save or App Home button costs: about one model call's worth of
# OpenAI requests (a conversation read or write, a reset), far less than an answer, but never free.
ACTION_COST = 1


class Spending:
    def __init__(self, limits: SpendLimits, ephemeral: Ephemeral) -> None:
        self._limits = limits
        self._ephemeral = ephemeral

    async def pay(self, workspace: Workspace, user: str, cost: int = ACTION_COST) -> None:
        """Take an action's tokens from the user's and the workspace's buckets. Raises UserSpendLimited /
        TeamSpendLimited (nothing taken) or StoreUnavailable, each with its user message."""
        outcome = await self._limits.take(workspace.keys, user, cost)
        refused = refusal_of(outcome, f"{workspace.team_id} {user}")
        if refused is not None:
            log.info("action by %s refused: %s", user, outcome)
            raise refused

    async def tell(self, refusal: SpendLimited, msg: IncomingMessage) -> None:
        """A refused message: tell its sender only, and only the first time this window (per person; per
        thread for a paused thread)."""
        keys = msg.workspace.keys
        if isinstance(refusal, ThreadPaused):
            key = keys.pause_notice(thread_ref(msg))
        else:
            key = keys.limit_notice(msg.user)
        if not await self._limits.first_notice(key):
            log.info("%s:%s refused (%s): already told", msg.channel, msg.ts, type(refusal).__name__)
            return
        await self._ephemeral.whisper(msg.channel, msg.user, refusal.user_message, msg.thread_ts)
