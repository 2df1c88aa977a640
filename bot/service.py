"""The bot's services, built once from settings: the single entry point the Slack listeners call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from openai import AsyncOpenAI
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant import AssistantBackend, build_openai_client
from bot.cleanup import OrphanSweeper, sweep_forever
from bot.commands import (
    CHANNEL_HINT,
    HELP_TEXT,
    Command,
    ParsedCommand,
    UnknownCommand,
    parse_command,
    parse_thread_command,
)
from bot.conversations import ConversationAdmin
from bot.dispatcher import Dispatcher, Submitted
from bot.errors import BotError, StoreUnavailable, TeamSpendLimited, UserSpendLimited
from bot.files import FileService
from bot.generated_files import GeneratedFiles
from bot.home import RecentThread, SettingsRef, home_view, parse_lines, settings_modal
from bot.models import CommandRequest, IncomingMessage, MessageAction, UserContext, Workspace, thread_ref
from bot.redis_conn import RedisHandle, connect_redis
from bot.settings import Settings
from bot.slack_client import build_web_client, slack_error
from bot.thread_admin import ThreadAdmin, ThreadTarget, slack_date
from bot.thread_store import ThreadStore
from bot.tools import ToolRegistry, registry_from
from bot.turns import TurnRunner

log = logging.getLogger(__name__)

HOME_THREADS_SHOWN = 10


class BotService:
    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisHandle,
        web_client: AsyncWebClient,
        openai_client: AsyncOpenAI,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.web_client = web_client
        self._redis = redis
        self._openai = openai_client
        self.store = ThreadStore(redis.client)
        self.files = FileService(
            settings, redis=redis.client, web_client=web_client, openai_client=openai_client
        )
        self.tools = tools if tools is not None else registry_from(settings)
        runner = TurnRunner(
            settings=settings,
            web_client=web_client,
            store=self.store,
            backend=AssistantBackend(openai_client, settings),
            files=self.files,
            registry=self.tools,
            generated=GeneratedFiles(openai_client, web_client, settings.file_max_bytes),
        )
        self.dispatcher = Dispatcher(redis.client, self.store, runner, settings=settings)
        self.admin = ThreadAdmin(
            self.store, ConversationAdmin(openai_client), self.dispatcher, files=self.files
        )
        self._orphan_sweep: asyncio.Task[None] | None = None
        self._workspace_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, tools: ToolRegistry | None = None) -> BotService:
        return cls(
            settings,
            redis=connect_redis(settings),
            web_client=build_web_client(settings),
            openai_client=build_openai_client(settings),
            tools=tools,
        )

    @property
    def runs_turns(self) -> bool:
        """False for a front (WORKER_CONCURRENCY=0): it acks and queues, worker processes answer."""
        return self.settings.worker_concurrency > 0

    def start(self) -> None:
        """Start background work: the workers reading the turn queue, the sweep reclaiming turns, and
        the sweep of orphaned files. A front starts none of it, so its event loop only serves acks."""
        if not self.runs_turns:
            log.info("front only (WORKER_CONCURRENCY=0): queueing turns for `slack-assistant worker`")
            return
        self.dispatcher.start()
        if self.settings.orphan_sweep_hours:  # files (issue 3): expired threads' files and stores go
            sweeper = OrphanSweeper(self.files.store, self.files.openai)
            every = self.settings.orphan_sweep_hours * 3600
            self._orphan_sweep = asyncio.create_task(
                sweep_forever(sweeper, self._redis.client, every), name="orphan sweep"
            )

    # --- messages ---------------------------------------------------------------------------------

    async def receive_message(self, msg: IncomingMessage, *, require_known_thread: bool = False) -> Submitted:
        """Queue a person's message for an answer, or carry out a command written after a mention.

        Raises StoreUnavailable, or UserSpendLimited / TeamSpendLimited (nothing is sent to OpenAI), each
        with a user message.
        """
        if msg.mentions_bot:
            try:
                parsed = parse_thread_command(msg.text)
            except UnknownCommand as exc:
                if await self.dispatcher.claim(msg):
                    await self.whisper(msg.channel, msg.user, exc.user_message, msg.reply_thread_ts)
                return Submitted.QUEUED
            if parsed is not None:
                await self._thread_command(msg, parsed)
                return Submitted.QUEUED
        result = await self.dispatcher.submit(msg, require_known_thread=require_known_thread)
        if result is Submitted.USER_LIMITED:
            raise UserSpendLimited(f"user {msg.user}")
        if result is Submitted.TEAM_LIMITED:
            raise TeamSpendLimited(f"team {msg.workspace.team_id}")
        return result

    async def _thread_of(self, msg: IncomingMessage) -> str:
        thread = thread_ref(msg)
        if msg.is_dm and msg.thread_ts is not None:
            thread = await self.store.resolve(msg.workspace.keys, thread)
        return thread

    async def _thread_command(self, msg: IncomingMessage, parsed: ParsedCommand) -> None:
        if not await self.dispatcher.claim(msg):
            return  # a retry, or the app_mention / message twin
        target = ThreadTarget(msg.workspace, await self._thread_of(msg), msg.channel, msg.user)
        text = await self.admin.run(target, parsed, request_id=f"{msg.channel}:{msg.ts}")
        await self.whisper(msg.channel, msg.user, text, msg.reply_thread_ts)

    # --- slash command and shortcuts -------------------------------------------------------------

    async def run_command(self, req: CommandRequest, *, request_id: str) -> str:
        """Answer `/assistant ...`: the ephemeral text to show the user."""
        try:
            parsed = parse_command(req.text)
        except UnknownCommand as exc:
            return exc.user_message
        if parsed.command is Command.HELP:
            return HELP_TEXT
        if not req.is_dm:
            return CHANNEL_HINT
        target = ThreadTarget(req.workspace, f"u:{req.user}", req.channel, req.user)
        return await self._guarded(self.admin.run(target, parsed, request_id=request_id))

    async def reset_from_action(self, action: MessageAction, *, request_id: str) -> str:
        """The "Reset this thread" shortcut on a message: reset the assistant thread it belongs to."""
        try:
            target = await self._action_target(action)
            return await self.admin.queue_reset(target, request_id=request_id)
        except BotError as exc:
            return exc.user_message

    async def open_settings_from_action(self, action: MessageAction, *, trigger_id: str) -> str | None:
        """The "Thread settings" shortcut: open the modal, or return why not (to tell the user)."""
        try:
            target = await self._action_target(action)
        except BotError as exc:
            return exc.user_message
        return await self._open_settings(target, trigger_id)

    async def _action_target(self, action: MessageAction) -> ThreadTarget:
        try:
            thread = await self.store.resolve(action.workspace.keys, action.thread)
        except RedisError as exc:
            raise StoreUnavailable(f"resolve: {type(exc).__name__}") from exc
        return ThreadTarget(action.workspace, thread, action.channel, action.user)

    async def _open_settings(self, target: ThreadTarget, trigger_id: str) -> str | None:
        try:
            conversation_id = await self.admin.conversation_of(target)
            metadata = await self.admin.metadata(target)
        except (BotError, RedisError) as exc:
            return exc.user_message if isinstance(exc, BotError) else StoreUnavailable.user_message
        keys = target.workspace
        ref = SettingsRef(keys.team_id, keys.enterprise_id, target.thread, target.channel, target.user)
        try:
            await self.web_client.views_open(
                trigger_id=trigger_id, view=settings_modal(ref, conversation_id, metadata)
            )
        except SlackApiError as exc:
            log.warning("views.open failed: %s", slack_error(exc))
            return "Sorry, I couldn't open the settings. Please try again."
        return None

    async def save_settings(
        self, workspace: Workspace, user: str, private_metadata: str, text: str
    ) -> str | None:
        """The modal was submitted: None when saved, else the message to show under the text box."""
        ref = SettingsRef.load(private_metadata)
        # The modal belongs to whoever opened it, in that workspace.
        if ref is None or ref.user != user or ref.workspace != workspace:
            return "These settings belong to someone else."
        target = ThreadTarget(workspace, ref.thread, ref.channel, user)
        try:
            await self.admin.replace_user_metadata(target, parse_lines(text))
        except BotError as exc:
            return exc.user_message[:1900]
        except RedisError:
            return StoreUnavailable.user_message
        return None

    # --- App Home ---------------------------------------------------------------------------------

    async def publish_home(self, workspace: Workspace, user: str) -> None:
        try:
            recent = await self.store.recent(workspace.keys, user, HOME_THREADS_SHOWN)
        except RedisError:
            log.warning("App Home: Redis unavailable; showing no threads")
            recent = []
        base = await self._workspace_base()
        threads = [
            self._recent_thread(workspace, thread, when, record, base) for thread, when, record in recent
        ]
        view = home_view(
            model=self.settings.assistant_model,
            # Every tool the model can use: the built-ins switched on and the teams' own.
            tools=list(dict.fromkeys([*self.settings.assistant_tools, *self.tools.names])),
            threads=threads,
            date=slack_date,
        )
        try:
            await self.web_client.views_publish(user_id=user, view=view)
        except SlackApiError as exc:
            log.warning("views.publish failed: %s", slack_error(exc))

    def _recent_thread(
        self, workspace: Workspace, thread: str, when: float, record: dict[str, str], base: str
    ) -> RecentThread:
        channel = record.get("channel", "")
        if thread.startswith("u:"):
            url = f"https://slack.com/app_redirect?team={workspace.team_id}&channel={channel}"
            return RecentThread("Your direct-message thread", url, when)
        _, channel, ts = thread.split(":", 2)
        url = f"{base}archives/{channel}/p{ts.replace('.', '')}?thread_ts={ts}&cid={channel}"
        return RecentThread(f"Thread in <#{channel}>", url, when)

    async def _workspace_base(self) -> str:
        """The workspace's own URL, for permalinks (asked once: it does not change while we run)."""
        if self._workspace_url is None:
            try:
                self._workspace_url = str((await self.web_client.auth_test())["url"])
            except (SlackApiError, KeyError):
                return "https://slack.com/"
        return self._workspace_url

    async def home_reset(self, workspace: Workspace, user: str, *, request_id: str) -> None:
        target = await self._dm_target(workspace, user)
        if target is not None:
            await self._guarded(self.admin.queue_reset(target, request_id=request_id))
        await self.publish_home(workspace, user)

    async def home_settings(self, workspace: Workspace, user: str, *, trigger_id: str) -> None:
        target = await self._dm_target(workspace, user)
        if target is None:
            return
        problem = await self._open_settings(target, trigger_id)
        if problem:
            await self.whisper(target.channel, user, problem, None)

    async def _dm_target(self, workspace: Workspace, user: str) -> ThreadTarget | None:
        try:
            record = await self.store.record(workspace.keys, f"u:{user}")
        except RedisError:
            return None
        channel = record.get("channel")
        return ThreadTarget(workspace, f"u:{user}", channel, user) if channel else None

    # --- Messages tab -----------------------------------------------------------------------------

    async def show_suggested_prompts(self, channel: str) -> None:
        prompts = [p.model_dump() for p in self.settings.assistant_suggested_prompts]
        if not prompts:
            return
        try:
            await self.web_client.assistant_threads_setSuggestedPrompts(channel_id=channel, prompts=prompts)
        except SlackApiError as exc:
            log.warning("could not set suggested prompts: %s", slack_error(exc))

    async def remember_context(self, workspace: Workspace, user: str, context: UserContext) -> None:
        try:
            await self.store.remember_context(workspace.keys, user, context)
        except RedisError as exc:  # a lost context only makes answers a little less informed
            log.warning("could not store the user's context: %s", type(exc).__name__)

    # --- plumbing ---------------------------------------------------------------------------------

    async def _guarded(self, call: Awaitable[str]) -> str:
        try:
            return await call
        except BotError as exc:
            return exc.user_message
        except RedisError as exc:
            log.warning("Redis unavailable: %s", type(exc).__name__)
            return StoreUnavailable.user_message

    async def whisper(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        """An ephemeral message only `user` sees (best effort: a failure is logged)."""
        try:
            await self.web_client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            log.warning("ephemeral answer not delivered: %s", slack_error(exc))

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self, grace_seconds: float = 20.0) -> None:
        if self._orphan_sweep is not None:
            self._orphan_sweep.cancel()
        await self.dispatcher.shutdown(grace_seconds)
        await self._openai.close()
        if self.web_client.session is not None:
            await self.web_client.session.close()
        await self._redis.close()


__all__ = ["BotService", "StoreUnavailable", "Submitted"]
