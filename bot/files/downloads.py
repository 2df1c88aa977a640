"""Files shared in Slack: what a message carries, which ones the bot accepts, and safe downloads.

The bot token goes only to Slack's own file hosts: the host of `SLACK_API_URL` (exactly that scheme, host
and port) and, over https, `files.slack.com`, `*.slack.com` and `*.slack-edge.com`. A download URL found
in a payload that points anywhere else is never requested, and redirects are followed by hand so the token
never travels to another host either. Slack answers a token it does not accept with its HTML sign-in page
(HTTP 200), so an HTML answer for a file that is not itself HTML means "refused".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.files.errors import (
    FileDownloadRefused,
    FileHostRefused,
    FileTooLarge,
    FileTypeRefused,
    FileUnavailable,
)
from bot.models import SharedFile
from bot.settings import Settings
from bot.slack.client import slack_error

log = logging.getLogger(__name__)

# document: searched with file_search; image: shown to the model; data: read by the code interpreter.
FileKind = Literal["document", "image", "data"]

SLACK_FILE_HOSTS = ("files.slack.com",)
SLACK_FILE_DOMAINS = (".slack.com", ".slack-edge.com")
MAX_REDIRECTS = 3
DOWNLOAD_TIMEOUT_SECONDS = 60


def classify(file: SharedFile, settings: Settings) -> FileKind:
    """Document (to the vector store), image (to the model) or, while the code interpreter is on, data (to
    its container); refuses every other type."""
    ext = file.extension
    if file.mode == "external":
        raise FileTypeRefused(file.display_name, "externally hosted", _accepted(settings))
    if ext in settings.file_image_types:
        return "image"
    if ext in settings.file_document_types:
        return "document"
    if settings.code_interpreter and ext in settings.file_data_types:
        return "data"
    kind = f".{ext}" if ext else "untyped"
    raise FileTypeRefused(file.display_name, kind, _accepted(settings))


def _accepted(settings: Settings) -> list[str]:
    data = settings.file_data_types if settings.code_interpreter else []
    return [*settings.file_document_types, *settings.file_image_types, *data]


def check_declared_size(file: SharedFile, limit: int) -> None:
    if file.size is not None and file.size > limit:
        raise FileTooLarge(file.display_name, file.size, limit)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def token_allowed(url: str, settings: Settings) -> bool:
    """Whether the bot token may be sent to `url`: Slack's own file hosts only (see the module doc)."""
    try:
        scheme, host, port = _origin(url)
        api = _origin(settings.slack_api_url)
    except ValueError:
        return False
    if not host:
        return False
    if (scheme, host, port) == api:
        return True
    if scheme != "https" or port != 443:
        return False
    return host in SLACK_FILE_HOSTS or host.endswith(SLACK_FILE_DOMAINS)


def _is_html(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in ("text/html", "application/xhtml+xml")


class SlackFiles:
    def __init__(self, settings: Settings, client: AsyncWebClient) -> None:
        self._settings = settings
        self._client = client

    async def resolve(self, file: SharedFile) -> SharedFile:
        """The full file object: a Slack Connect stub (or one without URLs) is looked up with files.info."""
        if not file.needs_lookup:
            return file
        try:
            response = await self._client.files_info(file=file.id)
        except SlackApiError as exc:
            error = slack_error(exc)
            log.warning("files.info %s failed: %s", file.id, error)
            raise FileUnavailable(file.display_name, f"files.info: {error}") from exc
        data = response.get("file")
        if not isinstance(data, Mapping):
            raise FileUnavailable(file.display_name, "files.info: no file")
        return SharedFile.model_validate(data)

    async def download(self, file: SharedFile) -> bytes:
        """The file's bytes, with the bot token sent only to Slack's file hosts; at most FILE_MAX_MB."""
        url = file.url_private_download or file.url_private
        name, limit = file.display_name, self._settings.file_max_bytes
        if not url or not token_allowed(url, self._settings):
            log.warning("file %s: download URL is not on a Slack file host; not requested", file.id)
            raise FileHostRefused(name, "download URL outside Slack's file hosts")
        # The token of the workspace this work is for (see bot.slack.workspaces).
        token = self._client.token
        if not token:
            raise FileUnavailable(name, "no bot token for this workspace")
        timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_SECONDS)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for _ in range(MAX_REDIRECTS + 1):
                    headers = {"Authorization": f"Bearer {token}"}
                    async with session.get(url, headers=headers, allow_redirects=False) as resp:
                        if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                            url = urljoin(url, resp.headers["Location"])
                            if not token_allowed(url, self._settings):
                                log.warning("file %s: redirected off Slack's file hosts; stopped", file.id)
                                raise FileHostRefused(name, "redirect outside Slack's file hosts")
                            continue
                        return await self._read(file, resp, limit)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("file %s: download failed: %s", file.id, type(exc).__name__)
            raise FileUnavailable(name, f"download: {type(exc).__name__}") from exc
        raise FileUnavailable(name, "too many redirects")

    @staticmethod
    async def _read(file: SharedFile, resp: aiohttp.ClientResponse, limit: int) -> bytes:
        name = file.display_name
        if resp.status in (401, 403):
            raise FileDownloadRefused(name, f"HTTP {resp.status}")
        if resp.status != 200:
            raise FileUnavailable(name, f"HTTP {resp.status}")
        if resp.content_length is not None and resp.content_length > limit:
            raise FileTooLarge(name, resp.content_length, limit)
        data = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > limit:
                raise FileTooLarge(name, len(data), limit)
        if _is_html(resp.headers.get("Content-Type", "")):
            # Slack's sign-in page: the token was not accepted. An HTML file of the declared size is itself.
            own_html = file.extension in ("html", "htm") and file.size == len(data)
            if not own_html:
                raise FileDownloadRefused(name, "HTML sign-in page")
        return bytes(data)
