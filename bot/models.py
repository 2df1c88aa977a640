"""Typed shapes that cross from the Slack listeners into the bot, and between bot modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.keys import Keys

# Slack's `filetype` for files whose name has no extension (e.g. a snippet called "notes").
_FILETYPE_EXTENSIONS = {"text": "txt", "markdown": "md", "python": "py", "javascript": "js", "shell": "sh"}
# SharedFile's text fields other than the id: a null or a value of another type falls back to the default.
_FILE_TEXT_FIELDS = (
    "name",
    "title",
    "mimetype",
    "filetype",
    "mode",
    "url_private",
    "url_private_download",
    "permalink",
    "file_access",
)


class SharedFile(BaseModel):
    """The fields of a Slack file object the bot uses (a `files` entry of a message event, or files.info)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str = ""
    title: str = ""
    mimetype: str = ""
    filetype: str = ""
    size: int | None = None
    mode: str = ""
    url_private: str | None = None
    url_private_download: str | None = None
    permalink: str | None = None
    # "check_file_info" on Slack Connect stubs: the event carries only the id; ask files.info.
    file_access: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_malformed_fields(cls, data: Any) -> Any:
        """A file object with `"name": null`, a numeric title or a negative size is still the file: such
        fields take their defaults (only the id is required, and must be text)."""
        if not isinstance(data, Mapping):
            return data
        clean = {k: v for k, v in data.items() if k not in _FILE_TEXT_FIELDS or isinstance(v, str)}
        size = clean.get("size")
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            clean.pop("size", None)
        return clean

    @property
    def display_name(self) -> str:
        return self.name or self.title or self.id

    @property
    def needs_lookup(self) -> bool:
        return self.file_access == "check_file_info" or not (self.url_private_download or self.url_private)

    @property
    def extension(self) -> str:
        name = self.name or self.title
        if "." in name.strip(".").rstrip():
            return name.rsplit(".", 1)[1].strip().lower()
        return _FILETYPE_EXTENSIONS.get(self.filetype.lower(), self.filetype.lower())


class Workspace(BaseModel):
    model_config = ConfigDict(frozen=True)

    team_id: str = Field(min_length=1)
    enterprise_id: str | None = None

    @property
    def keys(self) -> Keys:
        return Keys(self.team_id, self.enterprise_id)


class IncomingMessage(BaseModel):
    """A user's message the bot may answer, read from an `app_mention` or `message.*` event."""

    model_config = ConfigDict(frozen=True)

    workspace: Workspace
    event_id: str | None = None
    source: Literal["mention", "message"]
    channel: str
    channel_type: Literal["channel", "group", "im", "mpim", "app_home"]
    user: str
    text: str
    ts: str
    thread_ts: str | None = None
    # Addressed to the bot by a mention (commands are only read from such messages).
    mentions_bot: bool = False
    files: list[SharedFile] = Field(default_factory=list)  # shared with the message (issue 3)
    # Sent by someone outside the installing organization (Slack Connect): see `sender_is_external`.
    external: bool = False
    # The sender's own workspace when it is not the installing one (a guest's `user_team`): a streamed
    # answer names the team of the user it is for (chat.startStream `recipient_team_id`).
    user_team: str | None = None

    @property
    def is_dm(self) -> bool:
        return self.channel_type in ("im", "app_home")

    @property
    def reply_thread_ts(self) -> str:
        """The Slack thread the answer goes to: the message's thread, or a new one under the message."""
        return self.thread_ts or self.ts


def thread_ref(msg: IncomingMessage) -> str:
    """The Slack key of the assistant thread this message belongs to (DESIGN.md's mapping table).

    A top-level DM continues the user's own thread; anything inside a Slack thread (or a channel
    mention, which starts one) belongs to that Slack thread.
    """
    if msg.is_dm and msg.thread_ts is None:
        return f"u:{msg.user}"
    return f"c:{msg.channel}:{msg.reply_thread_ts}"


class Turn(BaseModel):
    """One queued piece of work on an assistant thread: a user message to answer, or a reset.

    Resets go through the same queue so they never cut into a running answer.
    """

    # "delete": a Slack message was deleted, its items go; "forget": the "Forget this message" shortcut, the
    # message's and its answer's items go (issue 15). Both name the message in `target_ts`.
    kind: Literal["message", "reset", "delete", "forget"] = "message"
    workspace: Workspace
    thread: str
    channel: str
    user: str
    text: str
    ts: str
    # Where the answer or notice goes; None: top-level in the channel (a DM thread reset by command).
    reply_thread_ts: str | None
    is_dm: bool
    received_at: float
    files: list[SharedFile] = Field(default_factory=list)  # shared with the message (issue 3)
    # A Slack Connect guest's turn (ALLOW_EXTERNAL_USERS): no shared knowledge, no workspace-reading tools.
    # Stored with the queued turn, so whichever replica runs it applies the same limits.
    external: bool = False
    user_team: str | None = None  # the sender's own workspace, when not the installing one
    target_ts: str | None = None  # "delete" and "forget": the user message whose items go

    @property
    def id(self) -> str:
        return f"{self.channel}:{self.ts}"


class MessageChange(BaseModel):
    """A person's message edited (`message_changed`) or deleted (`message_deleted`) in Slack (issue 15)."""

    model_config = ConfigDict(frozen=True)

    workspace: Workspace
    channel: str
    channel_type: Literal["channel", "group", "im", "mpim", "app_home"]
    user: str  # who wrote the message
    ts: str  # the message's own ts (the turn's)
    thread_ts: str | None = None
    deleted: bool = False
    text: str = ""  # the new text (edits), cleaned like a message's
    previous_text: str = ""

    @property
    def is_dm(self) -> bool:
        return self.channel_type in ("im", "app_home")

    @property
    def thread(self) -> str:
        """The assistant thread's Slack key as `thread_ref` gives it (before aliases are followed)."""
        if self.is_dm and self.thread_ts is None:
            return f"u:{self.user}"
        return f"c:{self.channel}:{self.thread_ts or self.ts}"


class UserContext(BaseModel):
    """What the user is looking at in Slack (from `app_context_changed`), given to the model."""

    channel_ids: list[str] = Field(default_factory=list, max_length=10)


class CommandRequest(BaseModel):
    """A `/assistant` slash command (it has no thread)."""

    model_config = ConfigDict(frozen=True)

    workspace: Workspace
    channel: str
    user: str
    text: str = ""
    external: bool = False  # sent by someone outside the installing organization (Slack Connect)
    trigger_id: str = ""  # opens a modal (`/assistant config`) within 3 seconds

    @property
    def is_dm(self) -> bool:
        return self.channel.startswith("D")


class MessageAction(BaseModel):
    """A message shortcut ("Reset this thread") used on a message."""

    model_config = ConfigDict(frozen=True)

    workspace: Workspace
    channel: str
    user: str
    message_ts: str
    thread_ts: str | None = None
    external: bool = False  # used by someone outside the installing organization (Slack Connect)

    @property
    def is_dm(self) -> bool:
        return self.channel.startswith("D")

    @property
    def thread(self) -> str:
        """The Slack thread the message is in (before aliases are followed)."""
        return f"c:{self.channel}:{self.thread_ts or self.message_ts}"
