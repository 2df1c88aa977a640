"""Files the code interpreter writes: fetched from its container right after the response that wrote them and
uploaded into the Slack thread (Slack shows images inline); the answer's sources link to the uploads.

The model's text refers to such files as `sandbox:/mnt/data/<name>` links, which only work inside ChatGPT:
`SandboxLinks` turns them into the plain file name as the text streams (the citation marker next to it
points at the Sources entry that links the uploaded file).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import openai
from openai import AsyncOpenAI
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import GeneratedFile, RoundResult
from bot.slack.citations import CitationRenderer
from bot.slack.client import SLACK_TRANSPORT_ERRORS, slack_error

log = logging.getLogger(__name__)

# `[label](sandbox:/mnt/data/x.png)` -> `label`; a bare `sandbox:/mnt/data/x.png` -> `x.png`.
_LINK = re.compile(r"\[([^\[\]\n]*)\]\(sandbox:[^)\s]*\)")
_BARE = re.compile(r"sandbox:/mnt/data/([^\s)\]]+)")
# The end of the text may be the start of such a link: hold it back until the next delta says.
_OPEN_LINK = re.compile(r"\[[^\[\]\n]*(?:\](?:\((?P<target>[^)\s]*))?)?$")
_SANDBOX = "sandbox:"
_MAX_HELD = 400


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


@dataclass(frozen=True)
class GeneratedFiles:
    """Brings the files a turn's code wrote from OpenAI to its Slack thread."""

    openai_client: AsyncOpenAI
    slack: AsyncWebClient
    max_bytes: int

    async def share(
        self,
        result: RoundResult,
        *,
        channel: str,
        thread_ts: str,
        citations: CitationRenderer | None,
        shared: set[str],
    ) -> int:
        """Upload what the response's code wrote (cited or not) into the thread, except the files in
        `shared` (the turn's earlier rounds shared them); how many were shared."""
        files = [f for f in await self._written(result) if f.file_id not in shared]
        fetched = [f for f in await asyncio.gather(*(self._fetch(f) for f in files)) if f is not None]
        if not fetched:
            return 0
        uploads = [{"file": data, "filename": f.filename, "title": f.filename} for f, data in fetched]
        try:
            response = await self.slack.files_upload_v2(
                file_uploads=uploads, channel=channel, thread_ts=thread_ts
            )
        except (SlackClientError, *SLACK_TRANSPORT_ERRORS) as exc:
            log.warning("generated files not uploaded to Slack: %s", slack_error(exc))
            return 0
        slack_files = response.get("files") or []
        for (generated, _), slack_file in zip(fetched, slack_files, strict=False):
            shared.add(generated.file_id)
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

    async def _fetch(self, generated: GeneratedFile) -> tuple[GeneratedFile, bytes] | None:
        try:
            content = await self.openai_client.containers.files.content.retrieve(
                generated.file_id, container_id=generated.container_id
            )
        except openai.APIError as exc:
            log.warning("generated file %s not downloaded (%s)", generated.file_id, type(exc).__name__)
            return None
        data = content.read()
        if len(data) > self.max_bytes:
            log.warning("generated file %s is %d bytes: too large to share", generated.file_id, len(data))
            return None
        if not data:
            return None
        return generated, data
