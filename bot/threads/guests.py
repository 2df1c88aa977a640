"""Slack Connect: people from another organization (in a shared channel, or a DM) who reach the bot.

By default they are not served: a mention, a DM, a reply in a thread the bot answers, a command, a
shortcut or a modal gets a short notice only they see (at most one a minute per person), and nothing is
queued or sent to OpenAI. With `ALLOW_EXTERNAL_USERS=true` they are served, but their turns run without
the shared knowledge stores and without the tools that read the workspace (see `Turn.external`).
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.keys import GUEST_NOTICE_TTL, ms
from bot.models import IncomingMessage, Workspace, thread_ref
from bot.slack.ephemeral import Ephemeral
from bot.threads.store import ThreadStore

log = logging.getLogger(__name__)

GUEST_NOTICE = (
    "Sorry, this assistant only serves members of the organization that installed it, so it can't "
    "answer people from other organizations here."
)


class Guests:
    def __init__(self, *, allowed: bool, redis: Redis, store: ThreadStore, ephemeral: Ephemeral) -> None:
        self._allowed = allowed
        self._redis = redis
        self._store = store
        self._ephemeral = ephemeral

    def refuses(self, external: bool) -> bool:
        """True when this request comes from a guest the configuration does not serve."""
        return external and not self._allowed

    async def turn_away_message(self, msg: IncomingMessage, *, require_known_thread: bool) -> None:
        """A guest's message: the notice, unless it is a reply in a thread the bot does not answer (which
        the bot would have ignored from anyone)."""
        if require_known_thread:
            try:
                known, _ = await self._store.owner(msg.workspace.keys, thread_ref(msg))
            except RedisError as exc:
                log.warning("guest message %s:%s: Redis: %s", msg.channel, msg.ts, type(exc).__name__)
                return
            if not known:
                return
        await self.turn_away(msg.workspace, msg.channel, msg.user, msg.thread_ts)

    async def turn_away(self, workspace: Workspace, channel: str, user: str, thread_ts: str | None) -> None:
        """Tell a guest the bot is not theirs: an ephemeral in the thread (at top level when the request
        was), at most once per GUEST_NOTICE_TTL per person, so a chatty guest is not flooded."""
        log.info("external user %s in %s not served (ALLOW_EXTERNAL_USERS is off)", user, channel)
        try:
            first = await self._redis.set(
                workspace.keys.guest_notice(user), "1", nx=True, px=ms(GUEST_NOTICE_TTL)
            )
        except RedisError as exc:
            log.warning("guest notice for %s: Redis: %s; telling them anyway", user, type(exc).__name__)
            first = True
        if first:
            await self._ephemeral.whisper(channel, user, GUEST_NOTICE, thread_ts)
