"""Which assistant thread a request acts on, read from where it came from: a message written after a
mention, a slash command, a message shortcut, or an App Home button (the user's own DM thread)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import RedisError

from bot.errors import StoreUnavailable
from bot.models import CommandRequest, IncomingMessage, MessageAction, Workspace, thread_ref
from bot.threads.store import ThreadStore


@dataclass(frozen=True)
class ThreadTarget:
    workspace: Workspace
    thread: str  # the assistant thread's Slack key, aliases followed
    channel: str  # where the request came from
    user: str  # who asked

    @property
    def notice_ts(self) -> str | None:
        """Where a reset notice goes: the Slack thread, or top level for a user's own DM thread."""
        return None if self.thread.startswith("u:") else self.thread.rsplit(":", 1)[1]


class Targets:
    def __init__(self, store: ThreadStore) -> None:
        self._store = store

    async def of_message(self, msg: IncomingMessage) -> ThreadTarget:
        """A command written after a mention acts on the thread the message is in."""
        thread = thread_ref(msg)
        if msg.is_dm and msg.thread_ts is not None:
            thread = await self._store.resolve(msg.workspace.keys, thread)
        return ThreadTarget(msg.workspace, thread, msg.channel, msg.user)

    @staticmethod
    def of_command(req: CommandRequest) -> ThreadTarget:
        """Slash commands carry no thread: in a DM they act on the user's own top-level thread."""
        return ThreadTarget(req.workspace, f"u:{req.user}", req.channel, req.user)

    async def of_action(self, action: MessageAction) -> ThreadTarget:
        """A message shortcut acts on the thread the message belongs to. Raises StoreUnavailable."""
        try:
            thread = await self._store.resolve(action.workspace.keys, action.thread)
        except RedisError as exc:
            raise StoreUnavailable(f"resolve: {type(exc).__name__}") from exc
        return ThreadTarget(action.workspace, thread, action.channel, action.user)

    async def of_dm(self, workspace: Workspace, user: str) -> ThreadTarget | None:
        """The user's own DM thread, once it exists (App Home buttons)."""
        try:
            record = await self._store.record(workspace.keys, f"u:{user}")
        except RedisError:
            return None
        channel = record.get("channel")
        return ThreadTarget(workspace, f"u:{user}", channel, user) if channel else None
