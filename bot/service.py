"""The bot's services, built once from settings: the single entry point the Slack listeners call."""

from __future__ import annotations

import logging

from openai import AsyncOpenAI
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant import AssistantBackend, build_openai_client
from bot.dispatcher import Dispatcher, Submitted
from bot.errors import StoreUnavailable
from bot.models import IncomingMessage, UserContext, Workspace
from bot.redis_conn import RedisHandle, connect_redis
from bot.settings import Settings
from bot.slack_client import build_web_client
from bot.thread_store import ThreadStore
from bot.turns import TurnRunner

log = logging.getLogger(__name__)


class BotService:
    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisHandle,
        web_client: AsyncWebClient,
        openai_client: AsyncOpenAI,
    ) -> None:
        self.settings = settings
        self.web_client = web_client
        self._redis = redis
        self._openai = openai_client
        self.store = ThreadStore(redis.client)
        runner = TurnRunner(
            settings=settings,
            web_client=web_client,
            store=self.store,
            backend=AssistantBackend(openai_client, settings),
        )
        self.dispatcher = Dispatcher(redis.client, self.store, runner)

    @classmethod
    def from_settings(cls, settings: Settings) -> BotService:
        return cls(
            settings,
            redis=connect_redis(settings),
            web_client=build_web_client(settings),
            openai_client=build_openai_client(settings),
        )

    async def receive_message(self, msg: IncomingMessage, *, require_known_thread: bool = False) -> Submitted:
        """Queue a person's message for an answer. Raises StoreUnavailable (with a user message)."""
        return await self.dispatcher.submit(msg, require_known_thread=require_known_thread)

    async def show_suggested_prompts(self, channel: str) -> None:
        prompts = [p.model_dump() for p in self.settings.assistant_suggested_prompts]
        if not prompts:
            return
        try:
            await self.web_client.assistant_threads_setSuggestedPrompts(channel_id=channel, prompts=prompts)
        except SlackApiError as exc:
            log.warning("could not set suggested prompts: %s", exc.response.get("error"))

    async def remember_context(self, workspace: Workspace, user: str, context: UserContext) -> None:
        try:
            await self.store.remember_context(workspace.keys, user, context)
        except Exception as exc:  # a lost context only makes answers a little less informed
            log.warning("could not store the user's context: %s", type(exc).__name__)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.client.ping())
        except Exception:
            return False

    async def aclose(self, grace_seconds: float = 20.0) -> None:
        await self.dispatcher.shutdown(grace_seconds)
        await self._openai.close()
        await self._redis.close()


__all__ = ["BotService", "StoreUnavailable", "Submitted"]
