"""The composition root: builds every part once from settings, wires them together, and hands the Slack
listeners a small facade (`Bot`). It holds no logic of its own: each listener's call goes straight to the
part that owns it (messages and commands to `threads.intake`, the App Home to `threads.home`, …)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, get_args

from openai import AsyncOpenAI
from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import AssistantBackend
from bot.assistant.catalog import Catalog
from bot.assistant.chat import ChatCompletionsBackend
from bot.assistant.held_responses import HeldResponsesBackend
from bot.assistant.knowledge import KnowledgeStores, check_forever
from bot.assistant.responses import ResponsesBackend, build_openai_client
from bot.files.generated import GeneratedFiles
from bot.files.service import FileService
from bot.files.sweep import OrphanSweeper, sweep_forever
from bot.ops.metrics import Metrics
from bot.queue.connection import RedisHandle, connect_redis
from bot.queue.dispatcher import Dispatcher
from bot.queue.spend import SpendLimits
from bot.queue.stats import read_queue_stats
from bot.settings import Settings, ToolName
from bot.slack.budget import BUDGET_SHARE, SlackBudget
from bot.slack.client import bind, build_web_client
from bot.slack.ephemeral import Ephemeral
from bot.slack.installations import RedisInstallationStore, RedisOAuthStateStore
from bot.slack.workspaces import SharedTokenRotator, Workspaces
from bot.threads.admin import ThreadAdmin
from bot.threads.background import Background
from bot.threads.feedback import Feedback, FeedbackLedger
from bot.threads.follow import FollowSlack, ItemRemover
from bot.threads.guests import Guests
from bot.threads.home import AppHome
from bot.threads.intake import Intake
from bot.threads.items import ThreadItems
from bot.threads.messages_tab import MessagesTab
from bot.threads.policy import ChannelPolicies, PolicyAdmins, PolicyStore, Validator
from bot.threads.policy_modal import PolicyForm
from bot.threads.settings_modal import ThreadSettings
from bot.threads.spending import Spending
from bot.threads.store import ThreadStore
from bot.threads.targets import Targets
from bot.threads.uninstall import Uninstall
from bot.threads.usage import Admins, UsageLedger, UsageReport
from bot.tools import ToolRegistry, registry_from
from bot.tools.approvals import Approvals
from bot.turns.runner import TurnRunner
from bot.turns.stops import Stops

log = logging.getLogger(__name__)

SWEEP_STOP_SECONDS = 5.0
COMMAND_GRACE_SECONDS = 10.0


class Bot:
    """What the listeners call: `intake` (messages, commands, the reset shortcut), `home`,
    `thread_settings`, `messages_tab`, `feedback` (answer ratings); plus the process's lifecycle (start,
    health, close)."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisHandle,
        web_client: AsyncWebClient,
        openai_client: AsyncOpenAI,
        tools: ToolRegistry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        # This bot's own registry: the clients built by `from_settings` count into it too.
        self.metrics = metrics or Metrics()
        self.web_client = web_client
        self._redis = redis
        self._openai = openai_client
        tools = tools if tools is not None else registry_from(settings)
        store = ThreadStore(redis.client)
        self.workspaces = _workspaces(settings, redis, web_client)
        self.oauth_states = RedisOAuthStateStore(redis.client)
        self.uninstall = Uninstall(redis.client, self.workspaces)
        self._knowledge = KnowledgeStores(openai_client, settings.knowledge_vector_store_ids)
        backend = _backend(settings, openai_client, redis, self._knowledge, self.metrics)
        self._files = FileService(
            settings, redis=redis.client, web_client=web_client, openai_client=openai_client
        )
        usage = UsageLedger(redis.client)
        policy_store = PolicyStore(redis.client)
        ephemeral = Ephemeral(web_client)
        self.feedback = Feedback(
            FeedbackLedger(redis.client), store, backend, web_client, ephemeral, self.metrics
        )
        items = ThreadItems(redis.client)
        # The agent session's stop button: any front marks the running turn, its worker stops it.
        self.stops = Stops(redis.client)
        # Tool calls waiting for a person's yes (issue 16): asked by turns, answered by the buttons.
        self.approvals = Approvals(
            redis.client, web_client, seconds=settings.mcp_approval_seconds, metrics=self.metrics
        )
        self._tools = tools
        runner = TurnRunner(
            settings=settings,
            web_client=web_client,
            store=store,
            backend=backend,
            files=self._files,
            registry=tools,
            generated=GeneratedFiles(
                openai_client,
                web_client,
                settings.file_max_bytes,
                max_files=settings.generated_files_max,
                concurrency=settings.file_download_concurrency,
            ),
            budget=SlackBudget(redis.client, share=BUDGET_SHARE * settings.slack_rate_scale),
            metrics=self.metrics,
            usage=usage,
            workspaces=self.workspaces,
            policies=policy_store,
            feedback=self.feedback,
            items=items,
            remover=ItemRemover(store, items, ephemeral),
            stops=self.stops,
            approvals=self.approvals,
        )
        limits = SpendLimits(redis.client, settings)
        self._dispatcher = Dispatcher(
            redis.client, store, runner, settings=settings, limits=limits, metrics=self.metrics
        )
        admin = ThreadAdmin(store, backend, self._dispatcher, files=self._files)
        targets = Targets(store)
        spending = Spending(limits, ephemeral)
        self._background = Background()
        guests = Guests(
            allowed=settings.allow_external_users, redis=redis.client, store=store, ephemeral=ephemeral
        )
        admins = Admins(web_client)
        report = UsageReport(usage, admins, feedback=self.feedback)
        # Channel policies (issue 15): the tools a policy may name are every one this deployment knows.
        policies = ChannelPolicies(
            policy_store,
            PolicyAdmins(admins, settings.policy_admins),
            Validator(Catalog(openai_client)),
            known_tools=[*get_args(ToolName), *tools.names],
            servers=settings.mcp_server_list(),
        )
        self.policy_form = PolicyForm(policies, web_client)
        self.intake = Intake(
            self._dispatcher,
            admin,
            targets,
            ephemeral,
            self._background,
            guests,
            spending,
            report,
            policies,
            self.policy_form,
        )
        self.thread_settings = ThreadSettings(admin, targets, web_client, ephemeral, guests, spending)
        self.home = AppHome(
            model=settings.assistant_model,
            # Every tool the model can use: the built-ins switched on and the teams' own.
            tool_names=list(dict.fromkeys([*settings.assistant_tools, *tools.names])),
            store=store,
            admin=admin,
            targets=targets,
            client=web_client,
            spending=spending,
            ephemeral=ephemeral,
            guests=guests,
            usage=report,
            policies=policies,
        )
        # Deleted and edited messages, and "Forget this message" (issue 15).
        self.follow = FollowSlack(
            redis.client,
            store=store,
            items=items,
            dispatcher=self._dispatcher,
            targets=targets,
            ephemeral=ephemeral,
            guests=guests,
            spending=spending,
        )
        self.messages_tab = MessagesTab(settings.assistant_suggested_prompts, store, web_client)
        self._orphan_sweep: asyncio.Task[None] | None = None
        self._knowledge_check: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, tools: ToolRegistry | None = None) -> Bot:
        metrics = Metrics()
        return cls(
            settings,
            redis=connect_redis(settings),
            web_client=build_web_client(settings, metrics),
            openai_client=build_openai_client(settings, metrics),
            tools=tools,
            metrics=metrics,
        )

    @property
    def embedded_redis_url(self) -> str | None:
        """The URL of the embedded Redis this process started (None: REDIS_URL), for its worker children."""
        server = self._redis.embedded
        return f"unix://{server.socket_file}" if server is not None else None

    @property
    def runs_turns(self) -> bool:
        """False for a front (WORKER_CONCURRENCY=0): it acks and queues, worker processes answer."""
        return self.settings.worker_concurrency > 0

    def start(self) -> None:
        """Start background work: the workers reading the turn queue, the sweep reclaiming turns, the
        check of the shared knowledge stores (now, then every KNOWLEDGE_CHECK_HOURS) and the sweep of
        orphaned files. A front starts none of it, so its event loop only serves acks."""
        if not self.runs_turns:
            log.info("front only: acking and queueing turns for worker processes")
            return
        self._dispatcher.start()
        if self._knowledge.configured:
            every = self.settings.knowledge_check_hours * 3600
            self._knowledge_check = asyncio.create_task(
                check_forever(self._knowledge, every), name="knowledge check"
            )
        if self.settings.orphan_sweep_hours:  # expired threads' files and stores go
            sweeper = OrphanSweeper(self._files.store, self._files.openai)
            every = self.settings.orphan_sweep_hours * 3600
            self._orphan_sweep = asyncio.create_task(
                sweep_forever(sweeper, self._redis.client, every), name="orphan sweep"
            )

    @staticmethod
    def acting_for_token(token: str | None) -> None:
        """Bind the current request (and the work it starts) to its workspace's bot token, as Bolt's
        authorization found it (until the request's own binding ends)."""
        bind(token)

    def later(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run `work` after the listener has acked (Slack waits 3 s; OpenAI may take longer)."""
        self._background.run(work, name=name)

    async def ping(self) -> bool:
        return await self._redis.ping()

    async def not_ready(self) -> str | None:
        """Why this process can't take work now (None: it can): Redis must answer and the turn queue be
        readable. A short reason, for `GET /readyz`."""
        if not await self._redis.ping():
            return "redis unreachable"
        try:
            await read_queue_stats(self._redis.client)
        except RedisError as exc:
            return f"queue unreadable: {type(exc).__name__}"
        return None

    async def metrics_text(self) -> bytes:
        """The metrics in Prometheus' text format, the queue read from Redis now."""
        try:
            stats = await read_queue_stats(self._redis.client)
        except RedisError as exc:
            log.info("metrics: queue not read (%s)", type(exc).__name__)
            self.metrics.queue(None)
        else:
            self.metrics.queue(stats.depth, stats.oldest_seconds)
        return self.metrics.render()

    async def _stop_sweep(self) -> None:
        """Stop the orphan sweep and the knowledge check before the clients they use are closed (briefly
        waiting for them)."""
        tasks = {t for t in (self._orphan_sweep, self._knowledge_check) if t is not None}
        self._orphan_sweep = self._knowledge_check = None
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=SWEEP_STOP_SECONDS)

    async def aclose(self, grace_seconds: float = 20.0) -> None:
        await self._stop_sweep()
        await self._background.drain(min(grace_seconds, COMMAND_GRACE_SECONDS))
        await self._dispatcher.shutdown(grace_seconds)
        await self._tools.mcp.close()
        await self._openai.close()
        if self.web_client.session is not None:
            await self.web_client.session.close()
        await self._redis.close()


def _backend(
    settings: Settings,
    client: AsyncOpenAI,
    redis: RedisHandle,
    knowledge: KnowledgeStores,
    metrics: Metrics,
) -> AssistantBackend:
    """ASSISTANT_BACKEND: OpenAI Conversations, or a thread held in Redis (issue 17)."""
    if settings.assistant_backend == "responses":
        return HeldResponsesBackend(client, redis.client, settings)
    if settings.assistant_backend == "chat_completions":
        return ChatCompletionsBackend(client, redis.client, settings)
    return ResponsesBackend(client, settings, knowledge, metrics)


def _workspaces(settings: Settings, redis: RedisHandle, web_client: AsyncWebClient) -> Workspaces:
    """One workspace's fixed token, or (OAuth) the installations in Redis, refreshed when they rotate."""
    if not settings.oauth:
        return Workspaces(None)
    if settings.slack_bot_token is not None:
        log.warning("SLACK_BOT_TOKEN is ignored: installs with OAuth bring each workspace's own token")
    assert settings.slack_client_id is not None and settings.slack_client_secret is not None
    store = RedisInstallationStore(redis.client)
    rotator = SharedTokenRotator(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get_secret_value(),
        client=web_client,
        store=store,
    )
    return Workspaces(store, rotator)
