"""The app's Messages tab (agent view): suggested prompts when it opens, and what the user is looking at
in Slack (`app_context_changed`), kept for the model's next answers."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.models import UserContext, Workspace
from bot.settings import SuggestedPrompt
from bot.slack.client import slack_error
from bot.threads.store import ThreadStore

log = logging.getLogger(__name__)


class MessagesTab:
    def __init__(self, prompts: list[SuggestedPrompt], store: ThreadStore, client: AsyncWebClient) -> None:
        self._prompts = [p.model_dump() for p in prompts]
        self._store = store
        self._client = client

    async def opened(self, channel: str) -> None:
        if not self._prompts:
            return
        try:
            await self._client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, prompts=self._prompts
            )
        except SlackApiError as exc:
            log.warning("could not set suggested prompts: %s", slack_error(exc))

    async def context_changed(self, workspace: Workspace, user: str, context: UserContext) -> None:
        try:
            await self._store.remember_context(workspace.keys, user, context)
        except RedisError as exc:  # a lost context only makes answers a little less informed
            log.warning("could not store the user's context: %s", type(exc).__name__)
