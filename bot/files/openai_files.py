"""The OpenAI side of shared files: uploads, a vector store per assistant thread, indexing, deletion.

Everything the bot creates is tagged so it can be told apart from other objects in the OpenAI project:
vector stores carry metadata (`app`, `slack_team`, `slack_enterprise`, `slack_thread`) and the files
attached to them carry the same as vector-store file attributes. OpenAI files themselves have no metadata
field; the Redis ledger (bot/file_store.py) records every upload instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import openai
from openai import AsyncOpenAI

from bot.keys import Keys

log = logging.getLogger(__name__)

APP_TAG = "slack-assistant"
Purpose = Literal["assistants", "vision"]


class OpenAIFileError(Exception):
    """An OpenAI call about files failed; the caller turns it into a user message naming the file."""


@dataclass(frozen=True)
class Indexed:
    ok: bool
    reason: str = ""  # why indexing did not complete (OpenAI's last_error.code, or "timeout")


@dataclass(frozen=True)
class TaggedStore:
    id: str
    created_at: int
    keys: Keys
    thread: str


def tags(keys: Keys, thread: str) -> dict[str, str]:
    return {
        "app": APP_TAG,
        "slack_team": keys.team_id,
        "slack_enterprise": keys.enterprise_id or "",
        "slack_thread": thread[:512],
    }


def _describe(exc: openai.APIError) -> str:
    return f"{type(exc).__name__} status={getattr(exc, 'status_code', None)}"


class OpenAIFiles:
    def __init__(self, client: AsyncOpenAI, *, expiry_days: int, index_timeout: float) -> None:
        self._client = client
        self._expiry_days = expiry_days
        self._index_timeout = index_timeout

    async def upload(self, name: str, data: bytes, mimetype: str, purpose: Purpose) -> str:
        try:
            uploaded = await self._client.files.create(file=(name, data, mimetype or None), purpose=purpose)
        except openai.APIError as exc:
            raise OpenAIFileError(f"files.create: {_describe(exc)}") from exc
        return uploaded.id

    async def create_store(self, keys: Keys, thread: str) -> str:
        try:
            store = await self._client.vector_stores.create(
                name=f"{APP_TAG} thread",
                metadata=tags(keys, thread),
                expires_after={"anchor": "last_active_at", "days": self._expiry_days},
            )
        except openai.APIError as exc:
            raise OpenAIFileError(f"vector_stores.create: {_describe(exc)}") from exc
        return store.id

    async def store_alive(self, vs_id: str) -> bool:
        """False when the store expired or is gone; a passing error counts as alive (nothing is dropped)."""
        try:
            store = await self._client.vector_stores.retrieve(vs_id)
        except openai.NotFoundError:
            return False
        except openai.APIError as exc:
            log.warning("vector store %s not checked: %s", vs_id, _describe(exc))
            return True
        return store.status != "expired"

    async def attach(self, vs_id: str, file_id: str, attributes: dict[str, str]) -> None:
        try:
            await self._client.vector_stores.files.create(
                vs_id,
                file_id=file_id,
                attributes=dict(attributes),
            )
        except openai.APIError as exc:
            raise OpenAIFileError(f"vector_stores.files.create: {_describe(exc)}") from exc

    async def wait_indexed(self, vs_id: str, file_id: str) -> Indexed:
        """Poll until indexing ends (the server's `openai-poll-after-ms` sets the pace)."""
        try:
            done = await self._client.vector_stores.files.poll(
                file_id, vector_store_id=vs_id, max_wait_seconds=self._index_timeout
            )
        except TimeoutError:
            return Indexed(False, "timeout")
        except openai.APIError as exc:
            raise OpenAIFileError(f"vector_stores.files.retrieve: {_describe(exc)}") from exc
        if done.status == "completed":
            return Indexed(True)
        reason = done.last_error.code if done.last_error is not None else done.status
        return Indexed(False, reason)

    async def delete_file(self, file_id: str) -> bool:
        """True once the file is gone (also when it already was)."""
        return await self.delete(file_id, "file")

    async def delete_store(self, vs_id: str) -> bool:
        return await self.delete(vs_id, "vector_store")

    async def delete(self, object_id: str, kind: str) -> bool:
        """True once the file or vector store is gone (also when it already was)."""
        store = kind == "vector_store"
        try:
            if store:
                await self._client.vector_stores.delete(object_id)
            else:
                await self._client.files.delete(object_id)
        except openai.NotFoundError:
            return True
        except openai.APIError as exc:
            what = "vector store" if store else "file"
            log.warning("%s %s not deleted: %s", what, object_id, _describe(exc))
            return False
        return True

    # --- the orphan sweep ---------------------------------------------------------------------------

    async def tagged_stores(self) -> AsyncIterator[TaggedStore]:
        """Every vector store this app created (by its metadata), across workspaces."""
        async for store in self._client.vector_stores.list(limit=100):
            meta = store.metadata if isinstance(store.metadata, dict) else {}
            if meta.get("app") != APP_TAG or not meta.get("slack_team") or not meta.get("slack_thread"):
                continue
            keys = Keys(str(meta["slack_team"]), str(meta.get("slack_enterprise") or "") or None)
            yield TaggedStore(store.id, store.created_at, keys, str(meta["slack_thread"]))

    async def tagged_files_of(self, vs_id: str) -> list[str]:
        """The files attached to a store that carry this app's tag."""
        found: list[str] = []
        async for attached in self._client.vector_stores.files.list(vs_id, limit=100):
            attributes = attached.attributes or {}
            if attributes.get("app") == APP_TAG:
                found.append(attached.id)
        return found
