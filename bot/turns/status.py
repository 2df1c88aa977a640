"""A turn's status in its Slack thread ("is thinking…", "is running Python…"), within Slack's rate for it
(about one a second per channel): the newest status wanted is shown as soon as the workspace's budget has
room, older ones are dropped, and the turn never waits for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from bot.slack.budget import ChannelPace

METHOD = "assistant.threads.setStatus"

Send = Callable[[str], Awaitable[None]]


class StatusLine:
    def __init__(self, send: Send, pace: ChannelPace) -> None:
        self._send = send
        self._pace = pace
        self._wanted: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending = False

    async def show(self, text: str) -> None:
        """Show `text` as soon as there is room; "" clears the status."""
        if not text:
            await self.clear()
            return
        self._wanted = text
        if self._task is None:
            self._task = asyncio.create_task(self._show_wanted())

    def forget(self) -> None:
        """The status waiting for room is no longer wanted (the answer is on its way)."""
        self._wanted = None

    async def clear(self) -> None:
        """Clear the status (it would otherwise say "is thinking…" for minutes); waits for room."""
        await self.close()
        await self._pace.wait(METHOD)
        await self._send("")

    async def close(self) -> None:
        """Nothing more is shown: a status waiting for room is dropped, one being sent is let finish."""
        self._wanted = None
        task, self._task = self._task, None
        if task is not None:
            if not self._sending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _show_wanted(self) -> None:
        try:
            while self._wanted is not None:
                await self._pace.wait(METHOD)
                text, self._wanted = self._wanted, None
                if text is None:
                    return
                self._sending = True
                try:
                    await self._send(text)
                finally:
                    self._sending = False
        finally:
            if self._task is asyncio.current_task():
                self._task = None
