"""One turn: a queued user message -> status -> assistant thread -> streamed answer in the Slack thread.

A turn may run more than once (its worker died, Redis or Slack failed midway): its progress record says
what an earlier attempt did. A recorded response is resumed rather than created again, and the Slack
messages already posted are written into rather than posted again. `TurnInterrupted` leaves the turn
queued, to be resumed; every other failure ends in a short notice in the thread.
"""

from __future__ import annotations

import contextlib
import logging

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant import AssistantBackend
from bot.errors import BotError, SlackDeliveryError, TurnAbandoned, TurnInterrupted
from bot.files import FileService
from bot.models import Turn, UserContext
from bot.progress import TurnProgress
from bot.replies import WARNING_ICON, ReplyStream
from bot.settings import Settings
from bot.thread_store import ThreadStore

log = logging.getLogger(__name__)

THINKING_STATUS = "is thinking…"
RESET_NOTICE = (
    "<@{user}> reset this thread's assistant memory. The next message starts a fresh assistant thread."
)
LOADING_MESSAGES = ["Thinking…", "Reading the thread…", "Writing an answer…"]


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
    ) -> None:
        self._settings = settings
        self._client = web_client
        self._store = store
        self._backend = backend
        self._files = files

    async def __call__(self, turn: Turn, progress: TurnProgress) -> None:
        try:
            if turn.kind == "reset":
                await self._reset(turn, progress)
            else:
                await self._message(turn, progress)
        except RedisError as exc:
            raise TurnInterrupted(f"Redis: {type(exc).__name__}") from exc

    async def _message(self, turn: Turn, progress: TurnProgress) -> None:
        assert turn.reply_thread_ts is not None  # a message is always answered in a Slack thread
        record = progress.record
        reply = ReplyStream(
            self._client,
            channel=turn.channel,
            thread_ts=turn.reply_thread_ts,
            team_id=turn.workspace.team_id,
            user_id=turn.user,
            flush_seconds=self._settings.stream_flush_seconds,
            max_chars=self._settings.max_message_chars,
            on_message=progress.add_message,
            guard=progress.check_current,
        )
        outcome = "failed"
        try:
            await reply.adopt(record.message_ts)
            if record.attempts > self._settings.max_turn_attempts:
                raise TurnAbandoned(f"attempt {record.attempts}")
            await self._set_status(turn, THINKING_STATUS)
            await self._answer(turn, reply, progress)
            outcome = "answered"
        except TurnInterrupted:
            raise
        except SlackDeliveryError as exc:
            if record.attempts >= self._settings.max_turn_attempts:
                log.warning("turn %s: Slack refused the answer (%s); giving up", turn.id, exc)
                await self._set_status(turn, "")
                return
            # The answer is recorded at OpenAI: a later attempt shows it without running it again.
            raise TurnInterrupted(f"Slack refused the answer: {exc}") from exc
        except BotError as exc:
            log.warning("turn %s: %s: %s", turn.id, type(exc).__name__, exc)
            await self._tell(turn, reply, exc.user_message)
        except RedisError:
            raise
        except Exception:
            log.exception("turn %s failed", turn.id)
            await self._tell(turn, reply, BotError.user_message)
        with contextlib.suppress(RedisError):
            await self._store.record_run(turn.workspace.keys, turn.thread, outcome)

    async def _answer(self, turn: Turn, reply: ReplyStream, progress: TurnProgress) -> None:
        response_id = progress.record.response_id
        extras = None
        if response_id is not None:
            # An earlier attempt created the response: show it, never run the turn twice.
            log.info(
                "turn %s: resuming response %s (attempt %d)", turn.id, response_id, progress.record.attempts
            )
            deltas = self._backend.resume(response_id)
        else:
            keys = turn.workspace.keys
            # --- files (issue 3): shared files in, file_search on, citations on the answer
            if self._files is not None:
                extras = await self._files.prepare(
                    turn, lambda s: self._set_status(turn, s or THINKING_STATUS)
                )
                if not extras.answer_needed:
                    await self._set_status(turn, "")
                    return
            conversation_id, context = await self._store.load(keys, turn.thread, turn.user)
            if conversation_id is None:
                conversation_id = await self._new_conversation(turn, progress)
            instructions = turn_instructions(self._settings.assistant_instructions, turn, context)
            deltas = self._backend.answer(
                conversation_id,
                turn.text,
                instructions=instructions,
                user_key=f"{turn.workspace.team_id}:{turn.user}",
                on_created=progress.save_response,
                extras=extras,
            )
        async with contextlib.aclosing(deltas):
            async for delta in deltas:
                await reply.append(delta)
        if extras is not None:
            await reply.append(extras.citations.footer())
        await reply.finish()
        log.info("turn %s answered in %s message(s)", turn.id, len(reply.message_ts))

    async def _new_conversation(self, turn: Turn, progress: TurnProgress) -> str:
        created = await self._backend.create_conversation(conversation_metadata(turn))
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
            log.info("turn %s: reset %s (conversation %s)", turn.id, turn.thread, conversation_id)
            notice = RESET_NOTICE.format(user=turn.user)
        except BotError as exc:
            log.warning("turn %s: reset failed: %s: %s", turn.id, type(exc).__name__, exc)
            notice = f"{WARNING_ICON} Couldn't reset this thread. {exc.user_message}"
        try:
            response = await self._client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts, markdown_text=notice
            )
        except SlackApiError as exc:
            log.warning("turn %s: reset notice not posted: %s", turn.id, exc.response.get("error"))
            return
        await progress.add_message(str(response["ts"]))

    async def _set_status(self, turn: Turn, status: str) -> None:
        # Best effort: the status is a nicety and is not available on every surface.
        if turn.reply_thread_ts is None:
            return
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=turn.channel,
                thread_ts=turn.reply_thread_ts,
                status=status,
                loading_messages=LOADING_MESSAGES if status else None,
            )
        except SlackApiError as exc:
            log.debug("setStatus not shown: %s", exc.response.get("error") if exc.response else "?")
