"""`slack-assistant cleanup-orphans`: delete the OpenAI files and vector stores the bot created for threads
that no longer map them.

That happens when a thread's Redis records expire (THREAD_TTL of inactivity), when a turn died between an
upload and its record, or when a deletion failed during a reset. Two passes:

1. every per-thread ledger (`Keys.thread_uploads`): entries the thread no longer maps are deleted;
2. every vector store tagged with this app's metadata that its thread does not map (e.g. Redis was lost):
   it is deleted with the tagged files attached to it.

Objects younger than `min_age_seconds` are left alone: a turn running right now may not have recorded them
yet. Run it from cron (daily is plenty).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

import openai
from openai import AsyncOpenAI
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.assistant.responses import build_openai_client
from bot.files.openai_files import OpenAIFiles
from bot.files.store import FileStore
from bot.keys import ORPHAN_MIN_AGE, ORPHAN_SWEEP_LOCK
from bot.queue.connection import connect_redis
from bot.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CleanupReport:
    dry_run: bool = False
    files: list[str] = field(default_factory=list)  # deleted (or, in a dry run, to delete)
    stores: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    too_recent: int = 0

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        line = f"cleanup-orphans: {verb} {len(self.files)} file(s) and {len(self.stores)} vector store(s)"
        if self.failed:
            line += f"; {len(self.failed)} could not be deleted (kept for the next run)"
        if self.too_recent:
            line += f"; {self.too_recent} too recent to judge, left alone"
        return line + "."


class OrphanSweeper:
    def __init__(self, store: FileStore, openai_files: OpenAIFiles) -> None:
        self._store = store
        self._openai = openai_files

    async def sweep(self, *, min_age_seconds: float, dry_run: bool = False) -> CleanupReport:
        report = CleanupReport(dry_run=dry_run)
        cutoff = time.time() - min_age_seconds
        async for keys, thread in self._store.ledgers():
            for upload in await self._store.unmapped(keys, thread):
                if upload.created_at > cutoff:
                    report.too_recent += 1
                    continue
                if dry_run or await self._openai.delete(upload.object_id, upload.kind):
                    (report.stores if upload.kind == "vector_store" else report.files).append(
                        upload.object_id
                    )
                    if not dry_run:
                        await self._store.forget_uploads(keys, thread, [upload.object_id])
                else:
                    report.failed.append(upload.object_id)
        async for tagged in self._openai.tagged_stores():
            if tagged.id in report.stores:
                continue
            if tagged.created_at > cutoff:
                report.too_recent += 1
                continue
            if await self._store.is_mapped_store(tagged.keys, tagged.thread, tagged.id):
                continue
            mapped = (await self._store.load(tagged.keys, tagged.thread)).files
            gone: list[str] = []
            for file_id in await self._openai.tagged_files_of(tagged.id):
                if file_id in mapped or file_id in report.files:
                    continue
                if dry_run or await self._openai.delete_file(file_id):
                    gone.append(file_id)
                else:
                    report.failed.append(file_id)
            report.files += gone
            if dry_run or await self._openai.delete_store(tagged.id):
                report.stores.append(tagged.id)
                gone.append(tagged.id)
            else:
                report.failed.append(tagged.id)
            if not dry_run:
                await self._store.forget_uploads(tagged.keys, tagged.thread, gone)
        log.info(report.summary())
        return report


async def sweep_forever(sweeper: OrphanSweeper, redis: Redis, every_seconds: float) -> None:
    """The bot's own periodic sweep: whichever replica takes the lock sweeps, at most once per interval."""
    while True:
        await asyncio.sleep(min(every_seconds, 3600.0))
        try:
            if await redis.set(
                ORPHAN_SWEEP_LOCK, secrets.token_hex(8), nx=True, px=int(every_seconds * 1000)
            ):
                await sweeper.sweep(min_age_seconds=ORPHAN_MIN_AGE.total_seconds())
        except (RedisError, openai.APIError, OSError) as exc:
            log.warning("orphan sweep skipped: %s", type(exc).__name__)
        except Exception as exc:
            # Housekeeping must never take the worker down; e.g. a shutdown that closes the OpenAI client
            # under a sweep whose cancellation the HTTP stack turned into a retried connection error.
            log.warning("orphan sweep failed: %s", type(exc).__name__)


async def cleanup_orphans(settings: Settings, *, min_age_seconds: float, dry_run: bool) -> CleanupReport:
    """The CLI's entry point: connect, sweep once, close."""
    redis = connect_redis(settings)
    client: AsyncOpenAI = build_openai_client(settings)
    try:
        openai_files = OpenAIFiles(
            client,
            expiry_days=settings.vector_store_expiry_days,
            index_timeout=settings.file_index_timeout_seconds,
        )
        sweeper = OrphanSweeper(FileStore(redis.client), openai_files)
        return await sweeper.sweep(min_age_seconds=min_age_seconds, dry_run=dry_run)
    finally:
        await client.close()
        await redis.close()
