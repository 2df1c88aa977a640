"""The shared knowledge stores (`KNOWLEDGE_VECTOR_STORE_IDS`): which of them `file_search` may use now.

OpenAI refuses a whole response when its `file_search` names a vector store that does not exist or has
expired, so one bad id would break every answer. Each store is retrieved at start-up and every
`KNOWLEDGE_CHECK_HOURS`: one that is missing (404) or `expired` is logged and left out; one that answers
again is put back. A store that vanishes between two checks is caught by the backend when a response is
refused (see `refused`), dropped, and the answer asked again without it.

The state is per process: each worker checks on its own (a few GETs every few hours).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import openai
from openai import AsyncOpenAI

log = logging.getLogger(__name__)

# What a check may find for one store: usable, or left out (and why); None: it could not tell.
USABLE = "usable"


class KnowledgeStores:
    def __init__(self, client: AsyncOpenAI, store_ids: Iterable[str]) -> None:
        self._client = client
        self._configured = list(dict.fromkeys(store_ids))
        self._left_out: dict[str, str] = {}  # store id -> why

    @property
    def configured(self) -> list[str]:
        return list(self._configured)

    @property
    def usable(self) -> list[str]:
        """The stores to search, in configuration order (all of them until a check says otherwise)."""
        return [i for i in self._configured if i not in self._left_out]

    async def check(self) -> None:
        """Retrieve every configured store; leave out the missing and expired ones, put back the rest."""
        if not self._configured:
            return
        for store_id in self._configured:
            await self._update(store_id, await self._state(store_id))
        log.info("knowledge stores checked: %d of %d usable", len(self.usable), len(self._configured))

    async def states(self) -> dict[str, str | None]:
        """Each configured store's state now (USABLE, "missing" or "expired"; None: OpenAI gave no answer),
        without changing which ones are searched (`slack-assistant check` reports them)."""
        return {store_id: await self._state(store_id) for store_id in self._configured}

    async def refused(self, message: str, searched: Iterable[str]) -> list[str]:
        """A response naming the knowledge stores `searched` was refused with this error message: the
        ones that are (no longer) usable, now left out. Empty: the refusal was about something else."""
        searched = [i for i in searched if i in self._configured]
        if not searched:
            return []
        named = [i for i in searched if i in message]
        if named:
            # OpenAI names the store it refused; it vanished since the last check.
            for store_id in named:
                self._leave_out(store_id, "refused by OpenAI")
            return named
        if "vector store" not in message.lower():
            return []
        # A vector store was refused without its id: ask about each one searched.
        dropped = []
        for store_id in searched:
            state = await self._state(store_id)
            if state not in (USABLE, None):
                await self._update(store_id, state)
                dropped.append(store_id)
        return dropped

    async def _state(self, store_id: str) -> str | None:
        try:
            store = await self._client.vector_stores.retrieve(store_id)
        except openai.NotFoundError:
            return "missing"
        except (openai.APIError, OSError) as exc:
            # A passing fault says nothing about the store: it keeps its current standing.
            log.info("knowledge store %s not checked: %s", store_id, type(exc).__name__)
            return None
        return "expired" if store.status == "expired" else USABLE

    async def _update(self, store_id: str, state: str | None) -> None:
        if state is None:
            return
        if state != USABLE:
            self._leave_out(store_id, state)
        elif self._left_out.pop(store_id, None) is not None:
            log.info("knowledge store %s is back; searched again", store_id)

    def _leave_out(self, store_id: str, why: str) -> None:
        self._left_out[store_id] = why
        log.warning(
            "knowledge store %s is %s; left out of file_search until a check finds it again", store_id, why
        )


async def check_forever(stores: KnowledgeStores, every_seconds: float) -> None:
    """Check at once (start-up), then every `every_seconds` (0: only once)."""
    while True:
        try:
            await stores.check()
        except Exception as exc:
            # Housekeeping must never take the worker down; the stores keep their current standing.
            log.warning("knowledge store check failed: %s", type(exc).__name__)
        if not every_seconds:
            return
        await asyncio.sleep(every_seconds)
