"""One turn: a queued user message -> status -> assistant thread -> streamed answer in the Slack thread.

A turn may run more than once (its worker died, Redis or Slack failed midway): its progress record says
what an earlier attempt did. A recorded response is resumed rather than created again, and the Slack
messages already posted are written into rather than posted again. `TurnInterrupted` leaves the turn
queued, to be resumed; every other failure ends in a short notice in the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import (
    AssistantBackend,
    FunctionCall,
    OnUsage,
    Status,
    Step,
    TokenUsage,
    TurnRequest,
    tool_output,
    user_message,
)
from bot.errors import (
    AnswerStopped,
    BotError,
    NoAssistantThread,
    ResponseVanished,
    SlackDeliveryError,
    TurnAbandoned,
    TurnInterrupted,
)
from bot.files.generated import GeneratedFiles
from bot.files.service import FileService
from bot.files.turn_input import FILE_SEARCH_NOTE, TurnInput
from bot.models import Turn, UserContext
from bot.ops.metrics import Metrics
from bot.queue.progress import TurnProgress
from bot.settings import Settings
from bot.slack.budget import ChannelPace, SlackBudget
from bot.slack.citations import CitationRenderer
from bot.slack.client import SLACK_CALL_ERRORS, slack_error
from bot.slack.inert import InertMarkdown
from bot.slack.replies import WARNING_ICON, ReplyStream
from bot.slack.sessions import AgentSession, session_title
from bot.slack.workspaces import NotInstalled, Workspaces
from bot.threads.feedback import Feedback
from bot.threads.follow import ItemRemover
from bot.threads.items import ThreadItems
from bot.threads.policy import Policy, PolicyStore
from bot.threads.store import ThreadStore
from bot.threads.usage import UsageLedger, channel_of
from bot.tools import ToolContext, ToolRegistry
from bot.tools.approvals import Approvals
from bot.tools.mcp import hosted_tool
from bot.turns.status import StatusLine
from bot.turns.steps import PLAN_WORKING, Steps, plan_chunk, plan_done, task_chunk
from bot.turns.stops import Stops, until_stopped
from bot.turns.tool_loop import THINKING_STATUS, ToolLoop

log = logging.getLogger(__name__)

CODE_NOTE = (
    "Files shared in this Slack thread (other than images) are in /mnt/data for the python tool. Files you "
    "save in /mnt/data are shared in the Slack thread after your answer; link them as sandbox paths."
)
RESET_NOTICE = (
    "<@{user}> reset this thread's assistant memory. The next message starts a fresh assistant thread."
)
LOADING_MESSAGES = ["Thinking…", "Reading the thread…", "Writing an answer…"]
# Streamed answers show their steps together, in a plan (chat.startStream `task_display_mode`).
TASK_DISPLAY_MODE = "plan"
# What a function call the user stopped before it ran tells the model (the call must not stay unanswered).
STOPPED_CALL_OUTPUT = json.dumps({"error": "not run: the user stopped this answer"})


@dataclass
class _Live:
    """What one running turn knows that its stop, its session and its steps need."""

    session: AgentSession
    title: str = ""
    session_started: bool = False
    fresh: bool = False  # the turn starts a new assistant thread
    conversation_id: str | None = None
    open_calls: list[FunctionCall] = field(default_factory=list)
    steps: Steps = field(default_factory=Steps)


def hosted_tools(settings: Settings, code_file_ids: list[str]) -> list[dict[str, Any]]:
    """The OpenAI-hosted tools the configuration turns on."""
    tools: list[dict[str, Any]] = []
    if "web_search" in settings.assistant_tools:
        tools.append({"type": "web_search"})
    if settings.code_interpreter:
        # "auto": a container per response, with the thread's files copied in.
        tools.append({"type": "code_interpreter", "container": {"type": "auto", "file_ids": code_file_ids}})
    return tools


def conversation_metadata(turn: Turn) -> dict[str, str]:
    """The bot's own metadata keys on each conversation (read-only for users)."""
    return {
        "slack_team": turn.workspace.team_id,
        "slack_channel": turn.channel,
        "slack_thread_ts": "" if turn.thread.startswith("u:") else (turn.reply_thread_ts or ""),
        "slack_user": turn.user,
    }


def turn_instructions(base: str, turn: Turn, context: UserContext | None) -> str:
    """Per-turn instructions: who is speaking and where, which the conversation itself does not hold."""
    where = "a direct message" if turn.is_dm else f"a thread in the Slack channel <#{turn.channel}>"
    lines = [base, "", f"You are in {where}. This message is from the Slack user <@{turn.user}>."]
    if turn.external:
        lines.append(
            "This user is from another organization (Slack Connect): do not share information about "
            "this workspace, its people or its internal documents beyond what is in this conversation."
        )
    if context and context.channel_ids:
        viewing = ", ".join(f"<#{c}>" for c in context.channel_ids)
        lines.append(f"The user is currently looking at {viewing} in Slack.")
    return "\n".join(lines)


class TurnRunner:
    def __init__(
        self,
        *,
        settings: Settings,
        web_client: AsyncWebClient,
        store: ThreadStore,
        backend: AssistantBackend,
        files: FileService | None = None,
        registry: ToolRegistry | None = None,
        generated: GeneratedFiles | None = None,
        budget: SlackBudget,
        metrics: Metrics | None = None,
        usage: UsageLedger | None = None,
        workspaces: Workspaces | None = None,
        policies: PolicyStore | None = None,
        feedback: Feedback | None = None,
        items: ThreadItems | None = None,
        remover: ItemRemover | None = None,
        stops: Stops | None = None,
        approvals: Approvals | None = None,
    ) -> None:
        self._policies = policies
        self._mcp_servers = settings.mcp_server_list()  # issue 16
        self._settings = settings
        self._feedback = feedback
        self._items = items  # which conversation items each message became (issue 15)
        self._remover = remover
        self._stops = stops
        self._workspaces = workspaces or Workspaces(None)
        self._metrics = metrics or Metrics()
        self._texted: set[str] = set()  # running turns whose first text is out (counted once)
        self._usage = usage
        self._budget = budget
        self._statuses: dict[str, StatusLine] = {}  # the running turns' status lines, by turn id
        self._client = web_client
        self._store = store
        self._backend = backend
        self._files = files
        self._registry = registry if registry is not None else ToolRegistry([])
        self._loop = ToolLoop(backend, self._registry, settings, generated, approvals)

    async def __call__(self, turn: Turn, progress: TurnProgress) -> None:
        try:
            # Every Slack call of the turn carries its own workspace's token (OAuth installs).
            async with self._workspaces.acting_for(turn.workspace.keys):
                if turn.kind == "reset":
                    await self._reset(turn, progress)
                elif turn.kind in ("delete", "forget"):
                    if self._remover is not None:
                        await self._remover.run(turn, self._backend)
                else:
                    await self._message(turn, progress)
        except NotInstalled:
            # Uninstalled since it was queued: there is no one to answer, and no token to answer with.
            log.warning("turn %s dropped: the app is no longer installed in its workspace", turn.id)
        except RedisError as exc:
            raise TurnInterrupted(f"Redis: {type(exc).__name__}") from exc

    async def _message(self, turn: Turn, progress: TurnProgress) -> None:
        assert turn.reply_thread_ts is not None  # a message is always answered in a Slack thread
        record = progress.record
        keys, thread_ts = turn.workspace.keys, turn.reply_thread_ts
        live = _Live(AgentSession(self._client, self._pace(turn), turn.channel, thread_ts))
        reply = ReplyStream(
            self._client,
            channel=turn.channel,
            thread_ts=turn.reply_thread_ts,
            # The recipient's own team: a Slack Connect guest's, when the bot serves one.
            team_id=turn.user_team or turn.workspace.team_id,
            user_id=turn.user,
            flush_seconds=self._settings.stream_flush_seconds,
            max_chars=self._settings.max_message_chars,
            on_message=progress.add_message,
            guard=progress.check_current,
            pace=self._pace(turn),
            task_display_mode=TASK_DISPLAY_MODE,
        )
        # "interrupted" unless the turn ends here (also when its drain is cancelled: it stays queued).
        outcome = "interrupted"
        self._statuses[turn.id] = StatusLine(lambda text: self._send_status(turn, text), self._pace(turn))
        try:
            await reply.adopt(record.message_ts)
            if record.attempts > self._settings.max_turn_attempts:
                raise TurnAbandoned(f"attempt {record.attempts}")
            if record.stopped:
                raise AnswerStopped("stopped before this attempt")
            if self._stops is not None:
                await self._stops.running(keys, turn.channel, thread_ts, turn.id)
            await self._begin_session(turn, live)
            with self._watch_stop(turn) as stopped:
                await until_stopped(self._answer(turn, reply, progress, live), stopped)
            outcome = "answered"
        except AnswerStopped as exc:
            outcome = "stopped"
            await self._stopped(turn, reply, progress, live, exc)
        except (TurnInterrupted, RedisError):
            raise  # it stays queued: another attempt ends it
        except SlackDeliveryError as exc:
            if record.attempts >= self._settings.max_turn_attempts:
                log.warning("turn %s: Slack refused the answer (%s); giving up", turn.id, exc)
                outcome = "given_up"
                await self._set_status(turn, "")
                return
            # The answer is recorded at OpenAI: a later attempt shows it without running it again.
            raise TurnInterrupted(f"Slack refused the answer: {exc}") from exc
        except TurnAbandoned as exc:
            log.warning("turn %s: %s: %s", turn.id, type(exc).__name__, exc)
            outcome = "given_up"
            await self._tell(turn, reply, exc.user_message)
        except BotError as exc:
            log.warning("turn %s: %s: %s", turn.id, type(exc).__name__, exc)
            outcome = "failed"
            await self._tell(turn, reply, exc.user_message)
        except Exception:
            log.exception("turn %s failed", turn.id)
            outcome = "failed"
            await self._tell(turn, reply, BotError.user_message)
        finally:
            self._texted.discard(turn.id)
            self._metrics.turn_done(outcome, turn.received_at)
            await self._statuses.pop(turn.id).close()
            if outcome != "interrupted":  # the turn ended: the session waits for the next message
                if live.conversation_id is not None and progress.record.response_ids:
                    # Answered, stopped or failed, OpenAI holds the message now: record its items (out of
                    # the stop's reach) so deleting or forgetting it in Slack can remove them.
                    await self._remember_items(turn, live.conversation_id, progress, outcome)
                await live.session.active()
                if self._stops is not None:
                    await self._stops.ended(keys, turn.channel, thread_ts, turn.id)
        with contextlib.suppress(RedisError):
            ran = outcome if outcome in ("answered", "stopped") else "failed"
            await self._store.record_run(turn.workspace.keys, turn.thread, ran)

    def _watch_stop(self, turn: Turn) -> contextlib.AbstractContextManager[asyncio.Event]:
        """An event set when the user stops this turn (never, where stops are not wired)."""
        if self._stops is None:
            return contextlib.nullcontext(asyncio.Event())
        return self._stops.watch.watching(turn.workspace.keys, turn.id)

    async def _begin_session(self, turn: Turn, live: _Live) -> None:
        """The Slack thread's agent session goes `processing` (named after this question if this creates
        it); where Slack has no session for the app, the assistant status says it is thinking instead."""
        live.title = session_title(turn.text)
        live.session_started = True
        if not await live.session.processing(title=live.title):
            await self._set_status(turn, THINKING_STATUS)

    async def _stopped(
        self, turn: Turn, reply: ReplyStream, progress: TurnProgress, live: _Live, exc: AnswerStopped
    ) -> None:
        """The user stopped the answer: recorded (a terminal state: a retry does not run the turn again),
        the response cancelled at OpenAI, calls it left unanswered closed, and the message ended."""
        earlier = progress.record.stopped and not live.session_started  # a retry of a stopped turn
        log.info("turn %s stopped by the user (%s)", turn.id, exc)
        await progress.mark_stopped()
        if progress.record.response_ids:
            await self._backend.cancel(progress.record.response_ids[-1])
        if live.open_calls and live.conversation_id is not None:
            outputs = [tool_output(c.call_id, STOPPED_CALL_OUTPUT) for c in live.open_calls]
            try:
                await self._backend.add_items(live.conversation_id, outputs)
            except BotError as err:
                log.warning("turn %s: %d stopped call(s) not closed: %s", turn.id, len(outputs), err)
        if earlier:
            await live.session.settle()
            if reply.message_ts:
                return  # the attempt that was stopped ended its messages (or they show what it had)
        try:
            await reply.stopped(AnswerStopped.user_message)
        except SlackDeliveryError as err:
            log.warning("turn %s: the stopped answer was not ended: %s", turn.id, err)

    async def _answer(self, turn: Turn, reply: ReplyStream, progress: TurnProgress, live: _Live) -> None:
        recorded = list(progress.record.response_ids)
        if recorded:
            # An earlier attempt created the response(s): show them, never run the turn twice.
            log.info("turn %s: resuming %s (attempt %d)", turn.id, recorded[-1], progress.record.attempts)
        # The channel's policy limits are taken before the files are brought in (over them, no work at all).
        policy = await self._policy(turn, charge=not recorded)
        extras = await self._input(turn, resuming=bool(recorded))
        if extras is None:
            return
        # A retried turn sends no new message, and its citation markers are not rebuilt from a replay.
        items = None if recorded else [user_message(extras.text, extras.parts)]
        citations = None if recorded else extras.citations
        request = await self._request(turn, progress, extras, policy, resuming=bool(recorded), live=live)
        live.conversation_id = request.conversation_id
        if live.fresh:
            # A new assistant thread in a Slack thread that had one (a reset): the session takes its name.
            await live.session.rename(live.title)
        try:
            await self._stream(turn, reply, progress, request, items, recorded, citations, live)
        except ResponseVanished as exc:
            if len(progress.record.response_ids) > 1:
                raise  # past a tool round: its calls can't be asked again; the user is told
            log.warning("turn %s: %s; asking again", turn.id, exc)
            # The answer so far is rewritten in place; the message goes in again unless OpenAI kept it.
            await reply.restart()
            await progress.forget_responses()
            # A resumed turn's recorded input has no text: look for the message's own.
            held = await self._backend.holds_message(request.conversation_id, extras.text or turn.text)
            again = [] if held else (items or [user_message(turn.text)])
            fresh = CitationRenderer(extras.citations.files) if items else None
            await self._stream(turn, reply, progress, request, again, [], fresh, live)

    async def _remember_items(
        self, turn: Turn, conversation_id: str, progress: TurnProgress, outcome: str
    ) -> None:
        """Record which conversation items the message and its answer became (so deleting or forgetting
        the message in Slack can remove them). Best effort: the answer stands either way."""
        if self._items is None:
            return
        try:
            keys, responses = turn.workspace.keys, list(progress.record.response_ids)
            if outcome == "answered" and self._backend.defers_turn_items:
                # The responses name the turn's items: they are looked up if the message is ever removed.
                await self._items.record(keys, turn.thread, turn.ts, responses, progress.record.message_ts)
                return
            added = await self._backend.turn_items(conversation_id)
            if added is None:
                log.warning("turn %s: its conversation items were not found", turn.id)
                return
            await self._items.record(keys, turn.thread, turn.ts, added, progress.record.message_ts)
        except (BotError, RedisError) as exc:
            log.warning("turn %s: conversation items not recorded: %s", turn.id, type(exc).__name__)

    async def _stream(
        self,
        turn: Turn,
        reply: ReplyStream,
        progress: TurnProgress,
        request: TurnRequest,
        items: list[dict[str, Any]] | None,
        recorded: list[str],
        citations: CitationRenderer | None,
        live: _Live,
    ) -> None:
        offered = frozenset(str(t.get("name")) for t in request.tools if t.get("type") == "function")
        ctx = ToolContext(
            turn.workspace.team_id,
            turn.user,
            turn.channel,
            turn.reply_thread_ts,
            self._client,
            turn.external,
            offered,
            turn.workspace.keys,
            turn.id,
        )
        pieces = self._loop.run(
            request,
            items=items,
            recorded=recorded,
            ctx=ctx,
            on_created=progress.save_response,
            citations=citations,
            on_usage=self._usage_counter(turn),
            open_calls=live.open_calls,
        )
        # The model's text (and what tools, files and web pages put in it) is made inert on its way in; what
        # the bot itself adds (the Sources, notices) is built inert.
        inert = InertMarkdown()
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                if isinstance(piece, Status):
                    await self._set_status(turn, piece.text)
                elif isinstance(piece, Step):
                    await self._show_step(reply, live, piece)
                else:
                    self._statuses[turn.id].forget()  # a status not shown yet would come after the text
                    await reply.append(inert.feed(piece))
                    self._first_text(turn, piece)
        await reply.append(inert.flush())
        if citations is not None:
            await reply.append(citations.footer())
        if live.steps.several:
            await reply.step(plan_chunk(plan_done(len(live.steps.seen))))
        await reply.finish(blocks=await self._buttons(turn, progress, request))
        log.info("turn %s answered in %s message(s)", turn.id, len(reply.message_ts))

    async def _buttons(
        self, turn: Turn, progress: TurnProgress, request: TurnRequest
    ) -> list[dict[str, Any]] | None:
        """The feedback buttons of a finished answer (issue 15), rating the response that wrote it."""
        ids = progress.record.response_ids
        if self._feedback is None or not ids:
            return None
        return await self._feedback.offer(
            turn.workspace, turn.thread, turn.user, ids[-1], request.conversation_id
        )

    @staticmethod
    async def _show_step(reply: ReplyStream, live: _Live, step: Step) -> None:
        if live.steps.add(step):
            await reply.step(plan_chunk(PLAN_WORKING))
        await reply.step(task_chunk(step))

    def _first_text(self, turn: Turn, piece: str) -> None:
        if piece and turn.id not in self._texted:
            self._texted.add(turn.id)
            self._metrics.first_text(turn.received_at)

    def _usage_counter(self, turn: Turn) -> OnUsage:
        """Counts each ended response's tokens: in the metrics, and for the turn's user, channel and
        workspace in the usage ledger (issue 13)."""
        ledger, metrics = self._usage, self._metrics
        channel = channel_of(turn.channel, is_dm=turn.is_dm)

        async def count(response_id: str, usage: TokenUsage) -> None:
            metrics.tokens(input=usage.input, output=usage.output)
            if ledger is not None:
                await ledger.record(
                    turn.workspace.keys, user=turn.user, channel=channel, response_id=response_id, usage=usage
                )

        return count

    async def _input(self, turn: Turn, *, resuming: bool) -> TurnInput | None:
        """The turn's text and files (issue 3: shared files in, file_search on, citations on the answer);
        None when nothing is left to answer."""
        if self._files is None:
            return TurnInput(turn.text)
        if resuming:
            return await self._files.recorded_input(turn.workspace.keys, turn.thread)
        extras = await self._files.prepare(turn, lambda s: self._set_status(turn, s or THINKING_STATUS))
        if not extras.answer_needed:
            await self._set_status(turn, "")
            return None
        return extras

    async def _policy(self, turn: Turn, *, charge: bool) -> Policy:
        """The channel's policy (issue 15), read at turn time (one HMGET), so a change applies from every
        thread's next turn; its spend limits taken when the turn starts (`charge`). Raises PolicyLimited."""
        if self._policies is None:
            return Policy()
        keys = turn.workspace.keys
        policy = await self._policies.applied(keys, turn.channel, is_dm=turn.is_dm)
        if charge:
            await self._policies.take(keys, turn.channel, turn.user, turn.thread, policy)
        return policy

    async def _request(
        self,
        turn: Turn,
        progress: TurnProgress,
        extras: TurnInput,
        policy: Policy,
        *,
        resuming: bool,
        live: _Live,
    ) -> TurnRequest:
        """What every response of this turn sends: the thread's conversation, instructions and tools."""
        conversation_id, context = await self._store.load(turn.workspace.keys, turn.thread, turn.user)
        if conversation_id is None:
            if resuming:
                raise NoAssistantThread("the thread lost its conversation while its turn was retried")
            conversation_id = await self._new_conversation(turn, progress)
            live.fresh = True
        base = self._settings.assistant_instructions
        if policy.instructions:  # the channel's own, added to the assistant's
            base += f"\n\n{policy.instructions}"
        instructions = turn_instructions(base, turn, context)
        # A Slack Connect guest's turn: no tools that read the workspace, no shared knowledge stores.
        specs = self._registry.specs(external=turn.external)
        tools = [*specs, *extras.tools, *hosted_tools(self._settings, extras.code_file_ids)]
        # The policy's allowlist is hard: a tool not in it is not offered (file_search covers the thread's
        # files and the knowledge stores).
        tools = [
            t
            for t in tools
            if policy.offers(str(t.get("name") if t.get("type") == "function" else t.get("type")))
        ]
        tools += await self._mcp_tools(turn, policy)
        knowledge = not turn.external and policy.offers("file_search")
        shared = self._settings.knowledge_vector_store_ids if policy.knowledge is None else policy.knowledge
        searching = any(t.get("type") == "file_search" for t in tools)
        if searching or (knowledge and shared):
            instructions += f"\n\n{FILE_SEARCH_NOTE}"
        if any(t.get("type") == "code_interpreter" for t in tools):
            instructions += f"\n\n{CODE_NOTE}"
        return TurnRequest(
            conversation_id,
            instructions,
            user_key=f"{turn.workspace.team_id}:{turn.user}",
            tools=tools,
            knowledge=knowledge,
            model=policy.model,
            knowledge_ids=policy.knowledge,
        )

    async def _mcp_tools(self, turn: Turn, policy: Policy) -> list[dict[str, Any]]:
        """The MCP servers the channel's policy offers (issue 16): hosted ones as the Responses `mcp` tool,
        bot-side ones as their function tools; only those that serve the turn's workspace. None for a Slack
        Connect guest: they reach company systems."""
        if turn.external:
            return []
        team = turn.workspace.team_id
        servers = [
            s
            for s in self._mcp_servers
            if s.serves(team) and policy.offers_server(s.label, default=s.default)
        ]
        hosted = [hosted_tool(s) for s in servers if s.transport == "hosted"]
        bot_side = [s.label for s in servers if s.transport != "hosted"]
        return hosted + await self._registry.mcp_specs(bot_side)

    async def _new_conversation(self, turn: Turn, progress: TurnProgress) -> str:
        created = await self._backend.create_conversation(
            conversation_metadata(turn), keys=turn.workspace.keys
        )
        try:
            bound = await progress.bind_conversation(created)
        except TurnInterrupted:
            await self._discard_conversation(created)
            raise
        if bound != created:
            # Another worker bound the thread first (it took this turn over): keep one history.
            await self._discard_conversation(created)
        else:
            log.info("turn %s: new assistant thread %s for %s", turn.id, created, turn.thread)
        return bound

    async def _discard_conversation(self, conversation_id: str) -> None:
        try:
            await self._backend.delete_conversation(conversation_id)
        except BotError as exc:
            log.warning("unused conversation %s not deleted: %s", conversation_id, exc)

    async def _tell(self, turn: Turn, reply: ReplyStream, message: str) -> None:
        try:
            await reply.fail(message)
        except SlackDeliveryError as exc:
            log.warning("turn %s: could not tell the user about the failure: %s", turn.id, exc)
            await self._set_status(turn, "")

    async def _reset(self, turn: Turn, progress: TurnProgress) -> None:
        """Delete the remote conversation and forget the mapping; the next message starts afresh."""
        if progress.record.message_ts:
            return  # an earlier attempt did it all and posted the notice
        keys = turn.workspace.keys
        try:
            conversation_id = await self._store.conversation_id(keys, turn.thread)
            if conversation_id is not None:
                await self._backend.delete_conversation(conversation_id)
            if self._files is not None:  # files (issue 3): the thread's vector store and uploads go too
                await self._files.forget_thread(keys, turn.thread)
            await self._store.forget(keys, turn.thread)
            if self._items is not None:
                await self._items.forget_thread(keys, turn.thread)
            log.info("turn %s: reset %s (conversation %s)", turn.id, turn.thread, conversation_id)
            notice = RESET_NOTICE.format(user=turn.user)
            self._metrics.turn_done("reset", turn.received_at)
        except BotError as exc:
            log.warning("turn %s: reset failed: %s: %s", turn.id, type(exc).__name__, exc)
            notice = f"{WARNING_ICON} Couldn't reset this thread. {exc.user_message}"
            self._metrics.turn_done("reset_failed", turn.received_at)
        await self._pace(turn).wait("chat.postMessage")
        try:
            response = await self._client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts, markdown_text=notice
            )
        except SLACK_CALL_ERRORS as exc:
            log.warning("turn %s: reset notice not posted: %s", turn.id, slack_error(exc))
            return
        await progress.add_message(str(response["ts"]))

    def _pace(self, turn: Turn) -> ChannelPace:
        return ChannelPace(self._budget, turn.workspace.keys, turn.channel)

    async def _set_status(self, turn: Turn, status: str) -> None:
        # Best effort: the status is a nicety, paced by the workspace's budget (answers come first).
        await self._statuses[turn.id].show(status)

    async def _send_status(self, turn: Turn, status: str) -> None:
        if turn.reply_thread_ts is None:
            return
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=turn.channel,
                thread_ts=turn.reply_thread_ts,
                status=status,
                loading_messages=LOADING_MESSAGES if status else None,
            )
        except SLACK_CALL_ERRORS as exc:
            log.debug("setStatus not shown: %s", slack_error(exc))
