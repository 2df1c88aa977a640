"""Files the code interpreter writes: fetched from its container right after the response that wrote them and
uploaded into the Slack thread (Slack shows images inline); the answer's sources link to the uploads.

The model's text refers to such files as `sandbox:/mnt/data/<name>` links, which only work inside ChatGPT:
`SandboxLinks` turns them into the plain file name as the text streams (the citation marker next to it
points at the Sources entry that links the uploaded file).

Bounds: a file is streamed from its container and the download stops as soon as it passes `FILE_MAX_MB`
(it is never held whole); one answer shares at most `GENERATED_FILES_MAX` files. What is left out is named in
one short notice in the thread, and never fetched again by a later round of the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

import httpx2
import openai
from openai import AsyncOpenAI
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import GeneratedFile, RoundResult
from bot.files.errors import human_size, quoted
from bot.slack.citations import CitationRenderer
from bot.slack.client import SLACK_CALL_ERRORS, SLACK_TRANSPORT_ERRORS, slack_error

log = logging.getLogger(__name__)

# `[label](sandbox:/mnt/data/x.png)` -> `label`; a bare `sandbox:/mnt/data/x.png` -> `x.png`.
_LINK = re.compile(r"\[([^\[\]\n]*)\]\(sandbox:[^)\s]*\)")
_BARE = re.compile(r"sandbox:/mnt/data/([^\s)\]]+)")
# The end of the text may be the start of such a link: hold it back until the next delta says.
_OPEN_LINK = re.compile(r"\[[^\[\]\n]*(?:\](?:\((?P<target>[^)\s]*))?)?$")
_SANDBOX = "sandbox:"
_MAX_HELD = 400

# Container files are read in pieces of this size: at most one piece past the byte cap is ever held.
READ_CHUNK = 64 * 1024
# A download that breaks off (the SDK's retries spent): the file is left out, as when it cannot be fetched.
_FETCH_ERRORS = (openai.APIError, httpx2.HTTPError, OSError)
NOTICE_ICON = ":warning:"


@dataclass
class SandboxLinks:
    """Rewrites sandbox links in streamed text; `flush()` at the end of each response."""

    _held: str = ""

    def feed(self, text: str) -> str:
        buffer = _LINK.sub(r"\1", self._held + text)
        cut = _hold_from(buffer)
        self._held = buffer[cut:]
        return _BARE.sub(r"\1", buffer[:cut])

    def flush(self) -> str:
        held, self._held = self._held, ""
        return _BARE.sub(r"\1", _LINK.sub(r"\1", held))


def _hold_from(buffer: str) -> int:
    """Where a possible, unfinished sandbox link (or bare path) at the end of `buffer` starts."""
    holds = [len(buffer)]
    bracket = buffer.rfind("[")
    if bracket >= 0 and len(buffer) - bracket <= _MAX_HELD:
        opened = _OPEN_LINK.match(buffer, bracket)
        target = opened.group("target") if opened else None
        if opened and (target is None or _SANDBOX.startswith(target) or target.startswith(_SANDBOX)):
            holds.append(bracket)
    bare = buffer.rfind(_SANDBOX)
    if bare >= 0 and not any(c.isspace() for c in buffer[bare:]) and len(buffer) - bare <= _MAX_HELD:
        holds.append(bare)
    for size in range(min(len(_SANDBOX) - 1, len(buffer)), 0, -1):
        if _SANDBOX.startswith(buffer[-size:]):
            holds.append(len(buffer) - size)
            break
    return min(holds)


@dataclass
class AnswerFiles:
    """What one answer did with the files its code wrote, across its rounds."""

    handled: set[str] = field(default_factory=set)  # shared or left out: never fetched again
    shared: int = 0  # uploaded to the thread, against GENERATED_FILES_MAX


class _TooLarge:
    """A file past the byte cap (its download was stopped there)."""


TOO_LARGE = _TooLarge()


@dataclass(frozen=True)
class GeneratedFiles:
    """Brings the files a turn's code wrote from OpenAI to its Slack thread."""

    openai_client: AsyncOpenAI
    slack: AsyncWebClient
    max_bytes: int
    max_files: int = 10  # per answer
    concurrency: int = 4  # downloads at once

    async def share(
        self,
        result: RoundResult,
        *,
        channel: str,
        thread_ts: str,
        citations: CitationRenderer | None,
        answer: AnswerFiles,
    ) -> int:
        """Upload what the response's code wrote (cited or not) into the thread, except what the answer's
        earlier rounds handled, up to the answer's limit; how many were shared. What is left out (too
        large, or past the limit) is named in a notice."""
        files = [f for f in await self._written(result) if f.file_id not in answer.handled]
        room = max(0, self.max_files - answer.shared)
        taken, over = files[:room], files[room:]
        answer.handled.update(f.file_id for f in files)
        gate = asyncio.Semaphore(self.concurrency)
        fetched = await asyncio.gather(*(self._fetch(f, gate) for f in taken))
        too_large = [f for f, data in zip(taken, fetched, strict=True) if data is TOO_LARGE]
        ready = [(f, data) for f, data in zip(taken, fetched, strict=True) if isinstance(data, bytes)]
        shared = await self._upload(ready, channel=channel, thread_ts=thread_ts, citations=citations)
        answer.shared += shared
        if too_large or over:
            log.info(
                "generated files left out in %s/%s: %d too large, %d over the limit of %d",
                channel,
                thread_ts,
                len(too_large),
                len(over),
                self.max_files,
            )
            await self._notify(channel, thread_ts, too_large, over)
        return shared

    async def _upload(
        self,
        ready: list[tuple[GeneratedFile, bytes]],
        *,
        channel: str,
        thread_ts: str,
        citations: CitationRenderer | None,
    ) -> int:
        if not ready:
            return 0
        uploads = [{"file": data, "filename": f.filename, "title": f.filename} for f, data in ready]
        try:
            response = await self.slack.files_upload_v2(
                file_uploads=uploads, channel=channel, thread_ts=thread_ts
            )
        except (SlackClientError, *SLACK_TRANSPORT_ERRORS) as exc:
            log.warning("generated files not uploaded to Slack: %s", slack_error(exc))
            return 0
        slack_files = response.get("files") or []
        for (generated, _), slack_file in zip(ready, slack_files, strict=False):
            if citations is not None:
                citations.link_file(generated.file_id, generated.filename, slack_file.get("permalink"))
        log.info("shared %d generated file(s) in %s/%s", len(slack_files), channel, thread_ts)
        return len(slack_files)

    async def _written(self, result: RoundResult) -> list[GeneratedFile]:
        """The files cited in the answer, then any other file the code wrote in its containers."""
        found = dict(result.files)
        for container_id in result.containers:
            try:
                async for entry in self.openai_client.containers.files.list(container_id, order="asc"):
                    if entry.source == "assistant" and entry.id not in found:
                        name = entry.path.rsplit("/", 1)[-1]
                        found[entry.id] = GeneratedFile(container_id, entry.id, name)
            except openai.APIError as exc:
                log.warning("container %s: files not listed (%s)", container_id, type(exc).__name__)
        return list(found.values())

    async def _fetch(self, generated: GeneratedFile, gate: asyncio.Semaphore) -> bytes | _TooLarge | None:
        """The file's bytes, streamed and stopped past `max_bytes` (TOO_LARGE); None when it cannot be
        fetched or is empty."""
        async with gate:
            try:
                return await self._stream(generated)
            except _FETCH_ERRORS as exc:
                log.warning("generated file %s not downloaded (%s)", generated.file_id, type(exc).__name__)
                return None

    async def _stream(self, generated: GeneratedFile) -> bytes | _TooLarge | None:
        content = self.openai_client.containers.files.content.with_streaming_response
        async with content.retrieve(generated.file_id, container_id=generated.container_id) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdecimal() and int(declared) > self.max_bytes:
                log.warning("generated file %s is %s bytes: too large to share", generated.file_id, declared)
                return TOO_LARGE
            data = bytearray()
            async for chunk in response.iter_bytes(READ_CHUNK):
                data += chunk
                if len(data) > self.max_bytes:
                    # Leaving the block closes the connection: the rest of the file is never read.
                    log.warning(
                        "generated file %s passed %d bytes: too large to share, download stopped",
                        generated.file_id,
                        self.max_bytes,
                    )
                    return TOO_LARGE
        return bytes(data) if data else None

    async def _notify(
        self, channel: str, thread_ts: str, too_large: list[GeneratedFile], over: list[GeneratedFile]
    ) -> None:
        lines = []
        if too_large:
            lines.append(f"{_names(too_large)} (larger than the limit of {human_size(self.max_bytes)})")
        if over:
            lines.append(f"{_names(over)} (past the limit of {self.max_files} files per answer)")
        text = f"{NOTICE_ICON} Files the code wrote that I didn't share: " + "; ".join(lines) + "."
        try:
            await self.slack.chat_postMessage(channel=channel, thread_ts=thread_ts, markdown_text=text)
        except SLACK_CALL_ERRORS as exc:
            log.warning("generated files notice not posted: %s", slack_error(exc))


def _names(files: list[GeneratedFile]) -> str:
    shown = ", ".join(quoted(f.filename) for f in files[:10])
    return shown + (f" and {len(files) - 10} more" if len(files) > 10 else "")
