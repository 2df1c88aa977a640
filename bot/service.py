"""The bot's services, built once from settings: the single entry point the Slack listeners call."""

from __future__ import annotations

import logging
import time

from openai import AsyncOpenAI
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant import AssistantBackend, build_openai_client
from bot.commands import CHANNEL_RESET_HINT, HELP_TEXT, Command, UnknownCommand, parse_command
from bot.dispatcher import Dispatcher, Submitted
from bot.errors import StoreUnavailable, TeamSpendLimited, UserSpendLimited
from bot.models import CommandRequest, IncomingMessage, MessageAction, Turn, UserContext, Workspace
from bot.redis_conn import RedisHandle, connect_redis
from bot.settings import Settings
from bot.slack_client import build_web_client
from bot.thread_store import ThreadStore
from bot.turns import TurnRunner

log = logging.getLogger(__name__)

NOTHING_TO_RESET = "There's no assistant thread here to reset yet."
NOT_YOURS = "Only the person who started this assistant thread can reset it."
RESET_QUEUED = "Resetting this thread's assistant memory…"


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
        self.dispatcher = Dispatcher(redis.client, self.store, runner, settings=settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> BotService:
        return cls(
            settings,
            redis=connect_redis(settings),
            web_client=build_web_client(settings),
            openai_client=build_openai_client(settings),
        )

    def start(self) -> None:
        """Start background work: the workers reading the turn queue, and the sweep reclaiming turns."""
        self.dispatcher.start()

    async def receive_message(self, msg: IncomingMessage, *, require_known_thread: bool = False) -> Submitted:
        """Queue a person's message for an answer. Raises StoreUnavailable, or UserSpendLimited /
        TeamSpendLimited (nothing is sent to OpenAI), each with a user message."""
        submitted = await self.dispatcher.submit(msg, require_known_thread=require_known_thread)
        if submitted is Submitted.USER_LIMITED:
            raise UserSpendLimited(f"user {msg.user}")
        if submitted is Submitted.TEAM_LIMITED:
            raise TeamSpendLimited(f"team {msg.workspace.team_id}")
        return submitted

    async def run_command(self, req: CommandRequest, *, request_id: str) -> str:
        """Answer `/assistant ...`: the ephemeral text to show the user."""
        try:
            command = parse_command(req.text)
        except UnknownCommand as exc:
            return exc.user_message
        if command is Command.HELP:
            return HELP_TEXT
        if not req.is_dm:
            return CHANNEL_RESET_HINT
        return await self._queue_reset(
            req.workspace,
            f"u:{req.user}",
            channel=req.channel,
            user=req.user,
            notice_ts=None,
            request_id=request_id,
        )

    async def reset_from_action(self, action: MessageAction, *, request_id: str) -> str:
        """The "Reset this thread" shortcut on a message: reset the assistant thread it belongs to."""
        try:
            thread = await self.store.resolve(action.workspace.keys, action.thread)
        except RedisError as exc:
            log.warning("reset: Redis unavailable: %s", type(exc).__name__)
            return StoreUnavailable.user_message
        # A DM thread that continues the user's own thread gets its notice at the top level.
        notice_ts = None if thread.startswith("u:") else thread.rsplit(":", 1)[1]
        return await self._queue_reset(
            action.workspace,
            thread,
            channel=action.channel,
            user=action.user,
            notice_ts=notice_ts,
            request_id=request_id,
        )

    async def _queue_reset(
        self,
        workspace: Workspace,
        thread: str,
        *,
        channel: str,
        user: str,
        notice_ts: str | None,
        request_id: str,
    ) -> str:
        try:
            known, owner = await self.store.owner(workspace.keys, thread)
            if not known:
                return NOTHING_TO_RESET
            # A DM thread is private to the person who started it.
            if channel.startswith("D") and owner is not None and owner != user:
                return NOT_YOURS
            turn = Turn(
                kind="reset",
                workspace=workspace,
                thread=thread,
                channel=channel,
                user=user,
                text="",
                ts=f"{time.time():.6f}",
                reply_thread_ts=notice_ts,
                is_dm=channel.startswith("D"),
                received_at=time.time(),
            )
            await self.dispatcher.submit_reset(turn, request_id=request_id)
        except (RedisError, StoreUnavailable) as exc:
            log.warning("reset not queued: %s", type(exc).__name__)
            return StoreUnavailable.user_message
        return RESET_QUEUED

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
