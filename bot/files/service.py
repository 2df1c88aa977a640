"""Files people share in a thread: forwarded with their message as one turn.

Documents are uploaded to OpenAI and added to the thread's own vector store (created on first use, expiring
after `VECTOR_STORE_EXPIRY_DAYS` without use); the turn waits until they are indexed, and `file_search` is
on for the thread from then on. Images go to the model as `input_image`. Shared knowledge stores from the
configuration are searched alongside (the assistant backend adds them: `bot.assistant.knowledge`). A file
that cannot be used is named in one notice in the thread and the rest of the turn still runs; nothing
half-uploaded is left behind.

Bounds: a turn's files come in `FILE_DOWNLOAD_CONCURRENCY` at a time, all under one deadline
(`FILE_TURN_DEADLINE_SECONDS`, downloads and indexing waits included): a file not in by then is named and the
turn answers without it. A thread takes in at most `THREAD_FILE_QUOTA_FILES` files and
`THREAD_FILE_QUOTA_MB` over its life (counted in Redis; reset starts over).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI
from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import NotOnThisServer, StoreUnavailable
from bot.files.downloads import FileKind, SlackFiles, check_declared_size, classify
from bot.files.errors import (
    FileIndexFailed,
    FileNotReady,
    FileProblem,
    FileQuotaReached,
    FileTooLarge,
    FileUploadFailed,
    human_size,
    quoted,
)
from bot.files.openai_files import OpenAIFileError, OpenAIFiles, Purpose, tags
from bot.files.store import CONTAINER_MAX_FILES, FileStore, StoredFile, ThreadFiles
from bot.files.turn_input import TurnInput
from bot.keys import Keys
from bot.models import SharedFile, Turn
from bot.settings import Settings
from bot.slack.citations import CitationRenderer, Source, slack_source
from bot.slack.client import SLACK_CALL_ERRORS, slack_error

log = logging.getLogger(__name__)

StatusFn = Callable[[str], Awaitable[None]]
# An image sent inline to a server without a Files API (a Redis-held thread keeps it in its history, and
# every later turn sends it again): at most this big.
INLINE_IMAGE_MAX_BYTES = 5 * 1024 * 1024

NOTICE_ICON = ":warning:"
EXPIRED_NOTICE = (
    "The files shared earlier in this thread were not used for {days} days, so OpenAI let their search "
    "index expire. Share them again to search them."
)


def _left_out_notice(names: list[str]) -> str:
    shown = ", ".join(quoted(n) for n in names[:10]) + (
        f" and {len(names) - 10} more" if len(names) > 10 else ""
    )
    return (
        f"The Python tool can open {CONTAINER_MAX_FILES} files at a time, so it gets this thread's newest "
        f"{CONTAINER_MAX_FILES}; left out: {shown}. Share a file again to bring it back in."
    )


@dataclass
class _Intake:
    """One turn's files coming in together (in parallel): what their tasks share."""

    turn: Turn
    state: ThreadFiles
    status: StatusFn
    store_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one vector store per thread


class FileService:
    def __init__(
        self, settings: Settings, *, redis: Redis, web_client: AsyncWebClient, openai_client: AsyncOpenAI
    ) -> None:
        self._settings = settings
        self._client = web_client
        self.store = FileStore(redis)
        self._slack = SlackFiles(settings, web_client)
        self.openai = OpenAIFiles(
            openai_client,
            expiry_days=settings.vector_store_expiry_days,
            index_timeout=settings.file_index_timeout_seconds,
        )

    async def prepare(self, turn: Turn, status: StatusFn) -> TurnInput:
        """Take in the turn's files; what the model gets with the text. `status("")` restores the default.

        Raises StoreUnavailable when Redis is down; every problem with one file is told in the thread.
        """
        try:
            return await self._prepare(turn, status)
        except RedisError as exc:
            raise StoreUnavailable(f"files: {type(exc).__name__}") from exc

    async def _prepare(self, turn: Turn, status: StatusFn) -> TurnInput:
        if self._settings.held_threads:
            return await self._inline(turn, status)
        keys, thread = turn.workspace.keys, turn.thread
        state = await self.store.load(keys, thread)
        notices: list[str] = []
        if (
            state.vector_store_id
            and state.documents
            and not await self.openai.store_alive(state.vector_store_id)
        ):
            await self._drop_expired(keys, thread, state)
            notices.append(EXPIRED_NOTICE.format(days=self._settings.vector_store_expiry_days))
        parts: list[dict[str, Any]] = []
        notes: list[str] = []
        used = 0
        for shared, stored in await self._take_all(_Intake(turn, state, status)):
            if isinstance(stored, FileProblem):
                log.info("turn %s: file %s not used: %s", turn.id, shared.id, type(stored).__name__)
                notices.append(stored.user_message)
                notes.append(f"{shared.display_name} (could not be read)")
                continue
            used += 1
            if stored.kind == "image":
                parts.append({"type": "input_image", "file_id": stored.file_id, "detail": "auto"})
                notes.append(f"{stored.name} (attached as an image)")
            elif stored.kind == "data":
                notes.append(f"{stored.name} (in /mnt/data for the python tool)")
            else:
                notes.append(f"{stored.name} (added to the files you can search)")
        if turn.files:
            await status("")
            if self._settings.code_interpreter and state.left_out_of_code:
                notices.append(_left_out_notice(state.left_out_of_code))
        if notices:
            await self._notify(turn, notices)
        if state.files:
            await self.store.touch(keys, thread)
        return self._input(turn, state, parts, notes, answer_needed=bool(turn.text.strip()) or used > 0)

    async def _inline(self, turn: Turn, status: StatusFn) -> TurnInput:
        """A Redis-held thread's server has no Files API (issue 17): images go inline, as data URLs (an
        `input_image` with `image_url`); any other file would need file search, and is refused."""
        parts: list[dict[str, Any]] = []
        notes: list[str] = []
        notices: list[str] = []
        limit = min(self._settings.file_max_bytes, INLINE_IMAGE_MAX_BYTES)
        for shared in list({f.id: f for f in turn.files}.values()):
            try:
                shared = await self._slack.resolve(shared)
                if classify(shared, self._settings) != "image":
                    raise NotOnThisServer(f"turn {turn.id}: file {shared.id} needs file search")
                check_declared_size(shared, limit)
                await status(f"is reading {shared.display_name[:60]}…")
                data = await self._slack.download(shared)
                if len(data) > limit:
                    raise FileTooLarge(shared.display_name, len(data), limit)
            except FileProblem as exc:
                notices.append(exc.user_message)
                notes.append(f"{shared.display_name} (could not be read)")
                continue
            url = f"data:{shared.mimetype or 'image/png'};base64,{base64.b64encode(data).decode()}"
            parts.append({"type": "input_image", "image_url": url, "detail": "auto"})
            notes.append(f"{shared.display_name} (attached as an image)")
        if turn.files:
            await status("")
        if notices:
            await self._notify(turn, notices)
        return self._input(
            turn, ThreadFiles(), parts, notes, answer_needed=bool(turn.text.strip()) or bool(parts)
        )

    def _input(
        self,
        turn: Turn,
        state: ThreadFiles,
        parts: list[dict[str, Any]],
        notes: list[str],
        *,
        answer_needed: bool,
    ) -> TurnInput:
        text = turn.text
        if notes:
            text = f"{text}\n\n(Shared in Slack with this message: {'; '.join(notes)}.)".strip()
        sources: dict[str, Source] = {
            f.file_id: slack_source(f.name, f.permalink) for f in state.files.values()
        }
        return TurnInput(
            text,
            parts,
            self._file_search(state),
            CitationRenderer(sources),
            answer_needed=answer_needed,
            code_file_ids=state.for_code,
        )

    @staticmethod
    def _file_search(state: ThreadFiles) -> list[dict[str, Any]]:
        """The thread's own store; the backend adds the shared knowledge stores it finds usable."""
        if not (state.vector_store_id and state.documents):
            return []
        return [{"type": "file_search", "vector_store_ids": [state.vector_store_id]}]

    async def recorded_input(self, keys: Keys, thread: str) -> TurnInput:
        """For a retried turn that carries on: the thread's tools as they are, taking nothing new in."""
        try:
            state = await self.store.load(keys, thread)
        except RedisError as exc:
            raise StoreUnavailable(f"files: {type(exc).__name__}") from exc
        return TurnInput("", tools=self._file_search(state), code_file_ids=state.for_code)

    async def _take_all(self, intake: _Intake) -> list[tuple[SharedFile, StoredFile | FileProblem]]:
        """Bring the turn's files in, `FILE_DOWNLOAD_CONCURRENCY` at a time, under one deadline for all of
        them: each file's record, or the problem that kept it out (FileNotReady past the deadline)."""
        files = list({f.id: f for f in intake.turn.files}.values())  # a file listed twice comes in once
        if not files:
            return []
        gate = asyncio.Semaphore(self._settings.file_download_concurrency)

        async def one(shared: SharedFile) -> StoredFile | FileProblem:
            async with gate:
                try:
                    return await self._take(intake, shared)
                except FileProblem as exc:
                    return exc

        tasks = [asyncio.create_task(one(f)) for f in files]
        try:
            _, late = await asyncio.wait(tasks, timeout=self._settings.file_turn_deadline_seconds)
            for task in late:
                task.cancel()
            # Their clean-up (uploads deleted, quota given back) runs before the turn goes on.
            await asyncio.gather(*late, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
        if late:
            names = ", ".join(f.id for f, t in zip(files, tasks, strict=True) if t in late)
            log.warning("turn %s: file(s) not ready by the deadline: %s", intake.turn.id, names)
        return [
            (f, FileNotReady(f.display_name) if t in late else t.result())
            for f, t in zip(files, tasks, strict=True)
        ]

    async def _take(self, intake: _Intake, shared: SharedFile) -> StoredFile:
        """Bring one shared file in (or find it already in): the stored record, or a FileProblem."""
        turn, state = intake.turn, intake.state
        keys, thread = turn.workspace.keys, turn.thread
        already = state.by_slack_id(shared.id)
        if already is None:
            shared = await self._slack.resolve(shared)
            already = state.by_slack_id(shared.id)
        if already is not None:
            return await self._share_again(keys, thread, already, state)
        kind = classify(shared, self._settings)
        check_declared_size(shared, self._settings.file_max_bytes)
        counted = max(shared.size or 0, 0)  # bytes counted against the quota so far
        await self._count(turn, shared, files=1, size=counted)
        try:
            name = shared.display_name
            await intake.status(f"is reading {name if len(name) <= 60 else name[:59] + '…'}…")
            data = await self._slack.download(shared)
            if len(data) > counted:  # the declared size was less than the bytes
                await self._count(turn, shared, files=0, size=len(data) - counted)
                counted = len(data)
            stored = await self._bring_in(intake, shared, kind, data)
        except BaseException:
            # Not in after all (a problem, or the deadline): it does not count against the quota.
            with contextlib.suppress(RedisError):
                await self.store.release_quota(keys, thread, files=1, size=counted)
            raise
        if len(data) < counted:  # the declared size was more than the bytes
            await self.store.release_quota(keys, thread, files=0, size=counted - len(data))
        return stored

    async def _count(self, turn: Turn, shared: SharedFile, *, files: int, size: int) -> None:
        """Count a new file (or more of its bytes) against the thread's quota; FileQuotaReached past it."""
        settings = self._settings
        found = await self.store.reserve_quota(
            turn.workspace.keys,
            turn.thread,
            files=files,
            size=size,
            max_files=settings.thread_file_quota_files,
            max_bytes=settings.thread_file_quota_bytes,
        )
        if found == "files":
            raise FileQuotaReached(shared.display_name, f"{settings.thread_file_quota_files} files")
        if found == "bytes":
            limit = human_size(settings.thread_file_quota_bytes)
            raise FileQuotaReached(shared.display_name, f"{limit} of files")

    async def _bring_in(self, intake: _Intake, shared: SharedFile, kind: FileKind, data: bytes) -> StoredFile:
        """Upload (and index) one new file's bytes: its record."""
        turn, state = intake.turn, intake.state
        keys, thread = turn.workspace.keys, turn.thread
        name = shared.display_name
        purpose: Purpose = "vision" if kind == "image" else "assistants"
        try:
            if kind == "document":
                await self._ensure_store(intake)
            file_id = await self.openai.upload(name, data, shared.mimetype, purpose)
        except OpenAIFileError as exc:
            log.warning("turn %s: file %s not uploaded: %s", turn.id, shared.id, exc)
            raise FileUploadFailed(name, str(exc)) from exc
        await self.store.record_upload(keys, thread, file_id, "file")
        if kind == "document":
            assert state.vector_store_id is not None
            await self._index(turn, state.vector_store_id, file_id, shared)
        stored = StoredFile(
            file_id=file_id,
            name=name,
            kind=kind,
            slack_id=shared.id,
            permalink=shared.permalink,
            added_at=time.time(),
        )
        await self.store.add_file(keys, thread, stored)
        state.files[file_id] = stored
        log.info("turn %s: file %s in as %s %s", turn.id, shared.id, kind, file_id)
        return stored

    async def _ensure_store(self, intake: _Intake) -> None:
        """The thread's vector store, created by the first document that needs it (one per thread, even
        when several documents come in at once)."""
        async with intake.store_lock:
            state = intake.state
            if state.vector_store_id is not None:
                return
            keys, thread = intake.turn.workspace.keys, intake.turn.thread
            state.vector_store_id = await self.openai.create_store(keys, thread)
            await self.store.record_upload(keys, thread, state.vector_store_id, "vector_store")
            await self.store.set_vector_store(keys, thread, state.vector_store_id)

    async def _share_again(
        self, keys: Keys, thread: str, stored: StoredFile, state: ThreadFiles
    ) -> StoredFile:
        """A file shared again counts as new: the code interpreter's container gets the newest files."""
        renewed = stored.model_copy(update={"added_at": time.time()})
        await self.store.add_file(keys, thread, renewed)
        state.files[renewed.file_id] = renewed
        return renewed

    async def _index(self, turn: Turn, vs_id: str, file_id: str, shared: SharedFile) -> None:
        """Attach to the thread's store and wait for indexing; on any failure the upload is deleted."""
        keys, thread, name = turn.workspace.keys, turn.thread, shared.display_name
        attributes = {**tags(keys, thread), "slack_file": shared.id}
        problem: FileProblem
        try:
            await self.openai.attach(vs_id, file_id, attributes)
            indexed = await self.openai.wait_indexed(vs_id, file_id)
            if indexed.ok:
                return
            problem = FileIndexFailed(name, indexed.reason)
        except OpenAIFileError as exc:
            log.warning("turn %s: file %s not attached: %s", turn.id, shared.id, exc)
            problem = FileUploadFailed(name, str(exc))
        except asyncio.CancelledError:
            # The turn's deadline for its files passed while this one was indexing.
            await self._drop_upload(keys, thread, file_id)
            raise
        await self._drop_upload(keys, thread, file_id)
        raise problem

    async def _drop_upload(self, keys: Keys, thread: str, file_id: str) -> None:
        """Nothing half-uploaded stays: the file goes (which also detaches it from the store)."""
        if await self.openai.delete_file(file_id):
            await self.store.forget_uploads(keys, thread, [file_id])

    async def _drop_expired(self, keys: Keys, thread: str, state: ThreadFiles) -> None:
        """The thread's store expired at OpenAI: delete it and its documents (images stay: the conversation
        refers to them) and start a new store with the next document."""
        assert state.vector_store_id is not None
        documents = [f.file_id for f in state.documents]
        log.info(
            "vector store %s of %s expired; dropping %d document(s)",
            state.vector_store_id,
            thread,
            len(documents),
        )
        await self.store.drop_documents(keys, thread, documents)
        deleted = [i for i in [state.vector_store_id, *documents] if await self._delete_any(i)]
        await self.store.forget_uploads(keys, thread, deleted)
        for file_id in documents:
            state.files.pop(file_id, None)
        state.vector_store_id = None

    async def _delete_any(self, object_id: str) -> bool:
        kind = "vector_store" if object_id.startswith("vs_") else "file"
        return await self.openai.delete(object_id, kind)

    async def _notify(self, turn: Turn, notices: list[str]) -> None:
        if len(notices) == 1:
            text = f"{NOTICE_ICON} {notices[0]}"
        else:
            text = f"{NOTICE_ICON} Some files could not be used:\n" + "\n".join(f"• {n}" for n in notices)
        try:
            await self._client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts, markdown_text=text
            )
        except SLACK_CALL_ERRORS as exc:
            log.warning("turn %s: file notice not posted: %s", turn.id, slack_error(exc))

    async def forget_thread(self, keys: Keys, thread: str) -> None:
        """Reset: unmap the thread's files and delete at OpenAI everything the bot created for it. What
        cannot be deleted now stays in the ledger, for `cleanup-orphans`."""
        try:
            uploads = await self.store.take_thread(keys, thread)
        except RedisError as exc:
            raise StoreUnavailable(f"files: {type(exc).__name__}") from exc
        deleted = [u.object_id for u in uploads if await self.openai.delete(u.object_id, u.kind)]
        try:
            await self.store.forget_uploads(keys, thread, deleted)
        except RedisError:
            log.warning("reset of %s: deleted objects stay in the ledger until cleanup-orphans", thread)
        if uploads:
            log.info("reset of %s: deleted %d of %d file object(s)", thread, len(deleted), len(uploads))

    async def describe(self, keys: Keys, thread: str) -> str:
        """For `/assistant status`: "none", or how many documents, data files and images the thread uses."""
        documents, data, images = await self.store.count(keys, thread)
        counted = [(documents, "searchable document"), (data, "data file"), (images, "image")]
        parts = [f"{n} {label}{'s' if n != 1 else ''}" for n, label in counted if n]
        return f"{documents + data + images} ({', '.join(parts)})" if parts else "none"


__all__ = ["FileService", "StatusFn", "quoted"]
