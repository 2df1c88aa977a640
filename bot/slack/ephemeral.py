"""Ephemeral answers: text only one person sees (command results, refusals, problems), best effort."""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.client import SLACK_CALL_ERRORS, slack_error

log = logging.getLogger(__name__)


class Ephemeral:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def whisper(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        """An ephemeral message only `user` sees (a failure is logged, not raised)."""
        try:
            await self._client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SLACK_CALL_ERRORS as exc:  # Slack's refusal, or the network: the caller goes on either way
            log.warning("ephemeral answer not delivered: %s", slack_error(exc))
