"""What can go wrong with one shared file. Each error names the file in its user message; the turn goes on
with the other files and the text, and the messages are shown together in the thread."""

from __future__ import annotations

import re

from bot.errors import BotError
from bot.slack.inert import escape_angles

# ".exe", "untyped", "externally hosted": a type worth naming; anything else came from an odd file name.
_PLAIN_KIND = re.compile(r"\.[a-z0-9]{1,10}|[a-z ]{1,20}")


def quoted(name: str) -> str:
    """A file name as Slack shows it safely inside a sentence (of a Markdown notice): inert."""
    return "`" + escape_angles(name.replace("`", "'").replace("\n", " ")[:120]) + "`"


def human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"


class FileProblem(BotError):
    """One shared file could not be used; `user_message` says which and why."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__name__, user_message=self.describe(quoted(name)))

    def describe(self, name: str) -> str:
        return f"I couldn't use {name}."


class FileTooLarge(FileProblem):
    def __init__(self, name: str, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(name, f"{size} > {limit} bytes")

    def describe(self, name: str) -> str:
        if self.size > self.limit:
            return f"{name} is {human_size(self.size)}; the limit is {human_size(self.limit)}."
        return f"{name} is larger than the limit of {human_size(self.limit)}."


class FileTypeRefused(FileProblem):
    def __init__(self, name: str, kind: str, accepted: list[str]) -> None:
        self.kind, self.accepted = kind, accepted
        super().__init__(name, f"type {kind!r} not accepted")

    def describe(self, name: str) -> str:
        # The type comes from the file's name: named only when it looks like one, so no Markdown link,
        # mention or look-alike text rides on it.
        kind = f"{self.kind} files" if _PLAIN_KIND.fullmatch(self.kind) else "files of that type"
        return f"I can't read {kind} like {name}. I can read: {', '.join(self.accepted)}."


class FileHostRefused(FileProblem):
    """The file's download URL is not on Slack's own file hosts: the bot token is never sent there."""

    def describe(self, name: str) -> str:
        return f"{name} isn't hosted by Slack, so I didn't download it."


class FileDownloadRefused(FileProblem):
    """Slack answered with its sign-in page (or 401/403): the bot token was not accepted for this file."""

    def describe(self, name: str) -> str:
        return (
            f"Slack didn't let me download {name} (it answered with its sign-in page). The app may be "
            "missing the `files:read` permission, or the file isn't shared with it."
        )


class FileUnavailable(FileProblem):
    def describe(self, name: str) -> str:
        return f"I couldn't get {name} from Slack. Please share it again in a moment."


class FileUploadFailed(FileProblem):
    def describe(self, name: str) -> str:
        return f"I couldn't hand {name} to the assistant. Please try sharing it again later."


class FileIndexFailed(FileProblem):
    def __init__(self, name: str, reason: str) -> None:
        self.reason = reason
        super().__init__(name, f"indexing ended: {reason}")

    def describe(self, name: str) -> str:
        return (
            f"{name} couldn't be indexed for search ({escape_angles(self.reason.replace('_', ' '))}), so I "
            "can't search it."
        )


class FileQuotaReached(FileProblem):
    """The thread took in all the files (or bytes) THREAD_FILE_QUOTA_* allow over its life."""

    def __init__(self, name: str, limit: str) -> None:
        self.limit = limit
        super().__init__(name, f"thread quota reached: {limit}")

    def describe(self, name: str) -> str:
        return (
            f"{name} wasn't added: this thread has reached its limit of {self.limit}. Start a new thread "
            "(or reset this one) to share more."
        )


class FileNotReady(FileProblem):
    """The file was not in (downloaded, uploaded, indexed) by the turn's deadline for its files."""

    def describe(self, name: str) -> str:
        return f"{name} wasn't ready in time, so I answered without it. Share it again to try once more."
