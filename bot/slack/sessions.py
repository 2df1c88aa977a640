"""A Slack thread's agent session (docs.slack.dev/ai/agent-sessions): `processing` while a turn runs, with
Slack's stop button, and `active` after; its title comes from the thread's first question.

Slack keys a session by (channel, thread root ts); `agents.sessions.setStatus` creates it (the `title` it
carries is used only then) and `agents.sessions.rename` renames an existing one. Both are best effort and
never hold an answer up: they are Tier 3 (about 50 a minute per workspace), so a turn takes the budget for
its `processing` and its `active` together, or goes without a session (the caller shows the assistant
status instead); a busy workspace's turns past that rate do. A refusal is logged, not shown.
"""

from __future__ import annotations

import logging
import re

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.budget import ChannelPace
from bot.slack.client import SLACK_CALL_ERRORS, slack_error

log = logging.getLogger(__name__)

SET_STATUS = "agents.sessions.setStatus"
RENAME = "agents.sessions.rename"
# setStatus/rename allow 200 characters; a question's first words make a readable title.
TITLE_CHARS = 80
_SLACK_TOKEN = re.compile(r"<[^<>]*>")  # a mention left in the question (`<@U…>`)
_MD_LINK = re.compile(r"\[([^\[\]]*)\]\([^()\s]*\)")  # a link as the question reads it: its label stays
_SPACES = re.compile(r"\s+")


def session_title(question: str) -> str:
    """A session title from a question (as `clean_text` left it): links reduced to their labels,
    mentions dropped, whitespace collapsed, cut at a word boundary; "" when nothing is left."""
    text = _SPACES.sub(" ", _SLACK_TOKEN.sub(" ", _MD_LINK.sub(r"\1", question))).strip()
    # Left-over angle brackets and markup characters are not part of a title.
    text = text.replace("<", "").replace(">", "").strip()
    if len(text) <= TITLE_CHARS:
        return text
    cut = text.rfind(" ", 0, TITLE_CHARS - 1)
    return text[: cut if cut > TITLE_CHARS // 2 else TITLE_CHARS - 1].rstrip() + "…"


class AgentSession:
    """One Slack thread's session, as one turn drives it."""

    def __init__(self, client: AsyncWebClient, pace: ChannelPace, channel: str, thread_ts: str) -> None:
        self._client = client
        self._pace = pace
        self._channel = channel
        self._thread_ts = thread_ts
        self.title: str | None = None  # the session's title as Slack last reported it
        self._processing = False  # this turn set it processing: it must set it active again

    async def processing(self, *, title: str = "") -> bool:
        """The turn runs (Slack shows its stop button); `title` names a session this call creates. False
        when there is no budget for it now or Slack refused it."""
        if not await self._pace.reserve(SET_STATUS, 2):  # this call and `active`'s
            log.info("no Slack budget for the agent session in %s now; going without", self._channel)
            return False
        self._processing = await self._set("processing", title=title)
        return self._processing

    async def active(self) -> None:
        """The turn ended (answered, failed or stopped): the session waits for the next message."""
        if self._processing:
            self._processing = False
            await self._set("active")

    async def settle(self) -> None:
        """Leave the `processing` an earlier attempt of the turn set and could not end (it died), budget
        allowing."""
        if not self._processing and await self._pace.now(SET_STATUS) == 0:
            await self._set("active")

    async def rename(self, title: str) -> None:
        if not title or title == self.title or not self._processing:
            return
        if await self._pace.now(RENAME) > 0:
            log.info("no Slack budget to rename the agent session in %s now", self._channel)
            return
        try:
            await self._client.agents_sessions_rename(
                channel_id=self._channel, thread_ts=self._thread_ts, title=title
            )
        except SLACK_CALL_ERRORS as exc:
            log.info("agent session not renamed: %s", slack_error(exc))
            return
        self.title = title

    async def _set(self, status: str, *, title: str = "") -> bool:
        try:
            response = await self._client.agents_sessions_setStatus(
                channel_id=self._channel,
                thread_ts=self._thread_ts,
                status=status,
                title=title or None,
            )
        except SLACK_CALL_ERRORS as exc:
            log.info("agent session not set %s: %s", status, slack_error(exc))
            return False
        reported = response.get("title")
        self.title = reported if isinstance(reported, str) and reported else None
        warning = response.get("warning")
        if warning:
            log.warning("agents.sessions.setStatus: %s", warning)
        return True
