"""What Redis keeps about a thread's files (keys in bot/keys.py).

* `thread_files`: the files the thread uses (OpenAI file id -> name, kind, Slack file id and permalink), so
  citations name and link the Slack file and `/assistant status` can count them;
* `thread_vector_store`: the thread's own vector store;
* `thread_file_quota`: how many files (and bytes) the thread took in over its life, held against
  THREAD_FILE_QUOTA_FILES / THREAD_FILE_QUOTA_MB; reset starts it over with the thread's other records;
* `thread_uploads`: a ledger of every OpenAI object the bot created for the thread, written right after
  each creation. OpenAI files carry no metadata, so this ledger is how the bot knows which files are its
  own: reset deletes everything in it, and `cleanup-orphans` deletes what it holds that the thread no
  longer maps (a thread that expired, a turn that died between upload and attach).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel
from redis.asyncio import Redis

from bot.files.downloads import FileKind
from bot.keys import FILES_TTL, PREFIX, Keys, ms

UploadKind = Literal["file", "vector_store"]


# A code-interpreter container takes at most this many files (spec: AutoCodeInterpreterToolParam.file_ids).
CONTAINER_MAX_FILES = 50


class StoredFile(BaseModel):
    file_id: str
    name: str
    kind: FileKind
    slack_id: str
    permalink: str | None = None
    added_at: float = 0.0  # when the thread took it in (the container gets the newest)


@dataclass
class ThreadFiles:
    vector_store_id: str | None = None
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def documents(self) -> list[StoredFile]:
        return [f for f in self.files.values() if f.kind == "document"]

    @property
    def images(self) -> list[StoredFile]:
        return [f for f in self.files.values() if f.kind == "image"]

    @property
    def for_code(self) -> list[str]:
        """The files the code interpreter gets: the newest data files and documents, up to the container's
        limit."""
        return [f.file_id for f in self._code_files()[:CONTAINER_MAX_FILES]]

    @property
    def left_out_of_code(self) -> list[str]:
        """The names of the thread's files past the container's limit (the oldest)."""
        return [f.name for f in self._code_files()[CONTAINER_MAX_FILES:]]

    def _code_files(self) -> list[StoredFile]:
        code = [f for f in self.files.values() if f.kind != "image"]
        return sorted(code, key=lambda f: f.added_at, reverse=True)

    def by_slack_id(self, slack_id: str) -> StoredFile | None:
        return next((f for f in self.files.values() if f.slack_id == slack_id), None)


# KEYS[1]: the thread's quota hash. ARGV: files and bytes to add, files and bytes allowed (0: no limit), TTL
# in ms. Adds both or neither (files of one turn are taken in in parallel): 0 when added, 1 when the files
# allowed, 2 when the bytes allowed would be passed.
_RESERVE = """
local files = tonumber(redis.call('HGET', KEYS[1], 'files') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local add_files, add_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_files, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
if max_files > 0 and add_files > 0 and files + add_files > max_files then return 1 end
if max_bytes > 0 and add_bytes > 0 and bytes + add_bytes > max_bytes then return 2 end
redis.call('HINCRBY', KEYS[1], 'files', add_files)
redis.call('HINCRBY', KEYS[1], 'bytes', add_bytes)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0
"""

QuotaCheck = Literal["ok", "files", "bytes"]
_QUOTA_RESULTS: tuple[QuotaCheck, ...] = ("ok", "files", "bytes")


@dataclass(frozen=True)
class Upload:
    object_id: str
    kind: UploadKind
    created_at: float


class FileStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._reserve = redis.register_script(_RESERVE)

    async def load(self, keys: Keys, thread: str) -> ThreadFiles:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.thread_vector_store(thread))
            pipe.hgetall(keys.thread_files(thread))
            vs_id, raw = await pipe.execute()
        files = {str(k): StoredFile.model_validate_json(v) for k, v in raw.items()}
        return ThreadFiles(str(vs_id) if vs_id else None, files)

    async def touch(self, keys: Keys, thread: str) -> None:
        """Keep the thread's file records as long as the thread (called on each turn that uses them)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.pexpire(keys.thread_files(thread), ms(FILES_TTL))
            pipe.pexpire(keys.thread_vector_store(thread), ms(FILES_TTL))
            pipe.pexpire(keys.thread_file_quota(thread), ms(FILES_TTL))
            await pipe.execute()

    async def reserve_quota(
        self, keys: Keys, thread: str, *, files: int, size: int, max_files: int, max_bytes: int
    ) -> QuotaCheck:
        """Count `files` more files of `size` bytes against the thread's quota, unless that passes it."""
        key = keys.thread_file_quota(thread)
        found = await self._reserve(keys=[key], args=[files, size, max_files, max_bytes, ms(FILES_TTL)])
        return _QUOTA_RESULTS[int(found)]

    async def release_quota(self, keys: Keys, thread: str, *, files: int, size: int) -> None:
        """Give back what `reserve_quota` counted for a file that did not come in after all."""
        async with self._redis.pipeline(transaction=True) as pipe:
            key = keys.thread_file_quota(thread)
            pipe.hincrby(key, "files", -files)
            pipe.hincrby(key, "bytes", -size)
            pipe.pexpire(key, ms(FILES_TTL))
            await pipe.execute()

    async def record_upload(self, keys: Keys, thread: str, object_id: str, kind: UploadKind) -> None:
        entry = json.dumps({"kind": kind, "created_at": round(time.time(), 3)})
        await self._redis.hset(keys.thread_uploads(thread), object_id, entry)

    async def forget_uploads(self, keys: Keys, thread: str, object_ids: Iterable[str]) -> None:
        ids = list(object_ids)
        if ids:
            await self._redis.hdel(keys.thread_uploads(thread), *ids)

    async def set_vector_store(self, keys: Keys, thread: str, vs_id: str) -> None:
        await self._redis.set(keys.thread_vector_store(thread), vs_id, px=ms(FILES_TTL))

    async def add_file(self, keys: Keys, thread: str, stored: StoredFile) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.thread_files(thread), stored.file_id, stored.model_dump_json())
            pipe.pexpire(keys.thread_files(thread), ms(FILES_TTL))
            await pipe.execute()

    async def drop_documents(self, keys: Keys, thread: str, file_ids: Iterable[str]) -> None:
        """Forget the thread's vector store and these files (it expired at OpenAI)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.thread_vector_store(thread))
            ids = list(file_ids)
            if ids:
                pipe.hdel(keys.thread_files(thread), *ids)
            await pipe.execute()

    async def take_thread(self, keys: Keys, thread: str) -> list[Upload]:
        """Unmap every file of the thread (reset) and return its ledger: everything to delete at OpenAI."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.thread_uploads(thread))
            pipe.delete(
                keys.thread_files(thread), keys.thread_vector_store(thread), keys.thread_file_quota(thread)
            )
            ledger, _ = await pipe.execute()
        return [_upload(str(k), str(v)) for k, v in ledger.items()]

    async def count(self, keys: Keys, thread: str) -> tuple[int, int, int]:
        """(documents, data files, images) the thread uses."""
        files = await self.load(keys, thread)
        data = len(files.files) - len(files.documents) - len(files.images)
        return len(files.documents), data, len(files.images)

    # --- the orphan sweep ---------------------------------------------------------------------------

    async def ledgers(self) -> AsyncIterator[tuple[Keys, str]]:
        """Every (workspace, thread) with a ledger, across workspaces."""
        async for key in self._redis.scan_iter(match=f"{PREFIX}:*:uploads:*", count=1000):
            parsed = Keys.parse_uploads(str(key))
            if parsed is not None:
                yield parsed

    async def unmapped(self, keys: Keys, thread: str) -> list[Upload]:
        """The ledger entries the thread no longer maps (its files and vector store records are gone)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.thread_uploads(thread))
            pipe.get(keys.thread_vector_store(thread))
            pipe.hkeys(keys.thread_files(thread))
            ledger, vs_id, file_ids = await pipe.execute()
        mapped = {str(x) for x in file_ids} | ({str(vs_id)} if vs_id else set())
        return [_upload(str(k), str(v)) for k, v in ledger.items() if str(k) not in mapped]

    async def is_mapped_store(self, keys: Keys, thread: str, vs_id: str) -> bool:
        return await self._redis.get(keys.thread_vector_store(thread)) == vs_id


def _upload(object_id: str, raw: str) -> Upload:
    try:
        data = json.loads(raw)
        return Upload(object_id, data.get("kind", "file"), float(data.get("created_at", 0)))
    except (ValueError, AttributeError):
        kind: UploadKind = "vector_store" if object_id.startswith("vs_") else "file"
        return Upload(object_id, kind, 0.0)
