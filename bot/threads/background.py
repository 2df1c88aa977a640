"""Work done after Slack's ack: a request acked at once (Slack waits 3 seconds) whose answer may wait on
OpenAI runs here, tracked so that shutdown lets it finish, and logged (by type) if it fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(self._guarded(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except Exception as exc:  # nobody awaits it: log (the type only, never the text) rather than lose it
            log.warning("%s failed: %s", name, type(exc).__name__)

    async def drain(self, grace_seconds: float) -> None:
        """Let the work still running finish (at most `grace_seconds`), at shutdown."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in late:  # the clients it uses are about to close
                task.cancel()
