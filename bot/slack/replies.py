"""One answer in a Slack thread: streamed with chat.startStream/appendStream/stopStream, split into
several messages past Slack's per-message limit, and carried on with chat.update when Slack says the
stream has expired.

Text is sent at once when it first arrives and then at most once per `flush_seconds`, so a fast model
does not turn into hundreds of Slack calls (and 429s). Every call is also paced by the workspace's Slack
budget (`pace`, shared by every replica): a stream starts only when its chat.stopStream can be reserved
with it, else the message is posted whole once complete; an append the budget has no room for yet waits,
with its text, for a later flush or rides on chat.stopStream.

A retried turn *adopts* the messages an earlier attempt posted (their ts come from the turn's progress
record): a stream left open is stopped, and the answer is written into those messages with chat.update
instead of being posted again. `on_message` reports each new message's ts as soon as Slack gives it, so the
record is always current (a message it cannot record is deleted again), and `guard` is asked before any
whole-message write, so a worker that lost the turn to another never overwrites that worker's answer.
When Slack answers `msg_too_long`, messages get smaller and the text carries on in the next one.

Streams carry Slack's chunks (as slack-sdk's own chat stream helper does): the text as `markdown_text`
chunks, and the turn's thinking steps (`task_update`, `plan_update`, issue 15) with it, so a message can
show both whichever comes first. A message written whole has no place for steps: they are dropped there.
When the user presses the agent session's stop button Slack refuses further writes (`stopped_by_user`):
that ends the answer with `AnswerStopped`, and `stopped` closes the message with what Slack showed and a
short note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import AnswerStopped, BotError, SlackDeliveryError
from bot.slack.client import SLACK_CALL_ERRORS, SLACK_TRANSPORT_ERRORS
from bot.slack.client import slack_error as _slack_error
from bot.slack.markdown import FENCE, inside_code_block, split_point

log = logging.getLogger(__name__)

WARNING_ICON = ":warning:"
# msg_too_long: messages are halved down to this size before giving up.
MIN_MESSAGE_CHARS = 200
# Slack's answers to blocks it will not show (the answer then goes without them).
BLOCKS_REFUSED = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_many"})
# A message written whole (no stream) is updated at most this often while the answer grows (Tier 3).
UPDATE_EVERY_SECONDS = 5.0
# What Slack answers a write to a stream the user stopped (ref chat.appendStream.json).
STOPPED_BY_USER = "stopped_by_user"

Chunk = dict[str, Any]


def text_chunk(text: str) -> Chunk:
    return {"type": "markdown_text", "text": text}


OnMessage = Callable[[str], Awaitable[None]]
# Raises when this answer must no longer be written (another worker took the turn over).
Guard = Callable[[], Awaitable[None]]


class Pace(Protocol):
    """Slack's rate limits for one answer (`bot.slack.budget.ChannelPace`)."""

    async def stream(self) -> bool: ...

    async def now(self, method: str) -> float: ...

    async def wait(self, method: str) -> None: ...


class _TooLong(Exception):
    """Slack refused a piece as too long (`msg_too_long`)."""


class _NoBudget(Exception):
    """No room in this workspace's budget for the call yet: try again after `wait` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"{wait:.1f}s")
        self.wait = wait


@dataclass
class _Message:
    text: str = ""
    ts: str | None = None
    # False once the stream is gone, or when there was no budget for one: the message is then written
    # whole, with chat.postMessage / chat.update.
    streaming: bool = True
    sent: int = 0  # characters of `text` Slack has


class ReplyStream:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        channel: str,
        thread_ts: str,
        team_id: str,
        user_id: str,
        flush_seconds: float,
        max_chars: int,
        on_message: OnMessage | None = None,
        pace: Pace,
        guard: Guard | None = None,
        task_display_mode: str | None = None,
    ) -> None:
        self._client = client
        self._task_display_mode = task_display_mode
        self._chunks: list[Chunk] = []  # steps (task/plan chunks) not sent yet
        # `stopped` or `fail` is ending the answer: Slack's stopped_by_user then only means "write it whole".
        self._stopping = False
        self._channel = channel
        self._thread_ts = thread_ts
        self._team_id = team_id
        self._user_id = user_id
        self._flush_seconds = flush_seconds
        self._max_chars = max_chars
        self._on_message = on_message
        self._guard = guard
        self._pace = pace
        self._messages: list[_Message] = [_Message()]
        # Messages of an earlier attempt not reused yet, in order.
        self._spare_ts: list[str] = []
        self._pending = ""
        self._last_flush = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        self._timer_busy = False  # the timer is flushing (not sleeping): it is waited for, not cancelled
        self._timer_error: BaseException | None = None
        self._closing = False  # finish/fail/restart under way: no new timer
        self._last_update = float("-inf")
        self._lock = asyncio.Lock()
        # Blocks under the finished answer's last message (its feedback buttons), given by `finish`.
        self._final_blocks: list[dict[str, Any]] | None = None

    @property
    def message_ts(self) -> list[str]:
        return [m.ts for m in self._messages if m.ts]

    @property
    def text(self) -> str:
        return "".join(m.text for m in self._messages) + self._pending

    async def adopt(self, message_ts: list[str]) -> None:
        """Write into the messages an earlier attempt posted (stopping a stream it left open: only its last
        message can be, since a message is closed before the next one starts)."""
        if message_ts:
            await self._pace.wait("chat.stopStream")
            try:
                await self._client.chat_stopStream(channel=self._channel, ts=message_ts[-1])
            except SLACK_CALL_ERRORS as exc:
                log.debug("adopted message not streaming (%s)", _slack_error(exc))
            self._messages = [_Message(ts=message_ts[0], streaming=False)]
            self._spare_ts = list(message_ts[1:])

    async def restart(self) -> None:
        """Start the answer over: what was shown is rewritten in place by the text that follows."""
        self._closing = True
        await self._stop_timer()
        self._pending = ""
        for msg in self._messages:
            if msg.streaming and msg.ts:
                msg.text = msg.text[: msg.sent]  # nothing more of the old answer
                await self._close(msg)
        shown = self.message_ts
        self._messages = [_Message(ts=shown[0], streaming=False)] if shown else [_Message()]
        self._spare_ts = shown[1:] + self._spare_ts
        self._closing = False

    async def append(self, delta: str) -> None:
        self._raise_timer_error()
        if not delta:
            return
        self._pending += delta
        await self._flush_when_due()

    async def step(self, chunk: Chunk) -> None:
        """A thinking step (a `task_update` or `plan_update` chunk), sent with the text, in order."""
        self._raise_timer_error()
        self._chunks.append(chunk)
        await self._flush_when_due()

    async def stopped(self, note: str) -> None:
        """End the answer where the user stopped it: what Slack showed stays, text and steps not sent yet
        go, and `note` ends the message (a message of its own when nothing was shown)."""
        self._closing = True
        self._stopping = True
        self._final_blocks = None  # a stopped answer is not offered for rating
        with contextlib.suppress(BotError):  # a flush that failed, on the stopped stream most likely
            await self._stop_timer()
        self._pending, self._chunks = "", []
        last = self._messages[-1]
        last.text = last.text[: last.sent]
        separator = "\n\n" if self.text.strip() else ""
        if separator and inside_code_block(self.text):
            separator = "\n" + FENCE + "\n\n"
        self._pending = f"{separator}{note}"
        await self._flush_and_close()

    async def _flush_when_due(self) -> None:
        wait = self._last_flush + self._flush_seconds - asyncio.get_running_loop().time()
        if wait <= 0:
            wait = await self._flush() or 0.0
        if wait > 0:
            self._flush_in(wait)

    async def finish(self, blocks: list[dict[str, Any]] | None = None) -> None:
        """Send what is left and close the message; `blocks` go under the answer's last message."""
        self._closing = True
        self._final_blocks = blocks or None
        await self._stop_timer()
        if not self.text.strip():
            # The model said nothing: still answer, so the user is not left with a silent thread.
            self._pending = "_(The assistant returned an empty answer.)_"
        await self._flush_and_close()

    async def fail(self, user_message: str) -> None:
        """End the answer with a short notice; a new message when nothing was shown yet."""
        self._closing = True
        self._final_blocks = None
        self._stopping = True  # a stream the user stopped meanwhile still gets the notice, with chat.update
        await self._stop_timer()
        separator = "\n\n" if self.text.strip() else ""
        if separator and inside_code_block(self.text):
            separator = "\n" + FENCE + "\n\n"
        self._pending += f"{separator}{WARNING_ICON} {user_message}"
        await self._flush_and_close()

    async def _flush_and_close(self) -> None:
        last = self._messages[-1]
        if last.streaming and last.ts and self._pending and len(last.text + self._pending) <= self._max_chars:
            # The last piece rides on chat.stopStream: one Slack call fewer per answer.
            last.text += self._pending
            self._pending = ""
            await self._close(last, last_message=True)
        else:
            if not last.streaming and last.sent < len(last.text):
                # Written whole and not (fully) yet: it goes out with the rest, as one complete message.
                self._pending, last.text, last.sent = last.text + self._pending, "", 0
            await self._flush(final=True)
            await self._close(self._messages[-1], last_message=True)
        await self._drop_spares()

    async def _drop_spares(self) -> None:
        """Messages of an earlier attempt the answer no longer needs (it came out shorter) go."""
        spare, self._spare_ts = self._spare_ts, []
        for ts in spare:
            await self._pace.wait("chat.delete")
            try:
                await self._client.chat_delete(channel=self._channel, ts=ts)
            except SLACK_CALL_ERRORS as exc:
                log.warning("leftover message not deleted: %s", _slack_error(exc))

    def _flush_in(self, delay: float) -> None:
        if self._timer is None and not self._closing:
            self._timer = asyncio.create_task(self._flush_later(delay))

    async def _flush_later(self, delay: float) -> None:
        """The timer: flush after `delay`, and again as long as the budget asks to wait (until closing)."""
        try:
            while True:
                await asyncio.sleep(delay)
                self._timer_busy = True
                again = await self._flush()
                self._timer_busy = False
                if again is None or self._closing:
                    return
                delay = again
        except BotError as exc:
            self._timer_error = exc
        except Exception as exc:  # surfaced on the next append or finish, never lost with the task
            self._timer_error = SlackDeliveryError(f"flush failed: {type(exc).__name__}")
        finally:
            self._timer_busy = False
            if self._timer is asyncio.current_task():
                self._timer = None

    def _raise_timer_error(self) -> None:
        if self._timer_error is not None:
            error, self._timer_error = self._timer_error, None
            raise error

    async def _stop_timer(self) -> None:
        """No more timer flushes: a sleeping timer is cancelled, a flushing one is waited for (cancelling a
        Slack call midway would leave it unknown whether Slack has the text)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            if not self._timer_busy:
                timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._raise_timer_error()

    async def _flush(self, *, final: bool = False) -> float | None:
        """Send the pending text. A `final` flush sends it all; otherwise a call the budget has no room for
        yet keeps its text pending: the seconds to wait before flushing again, else None."""
        async with self._lock:
            self._last_flush = asyncio.get_running_loop().time()
            text, self._pending = self._pending, ""
            while text:
                msg = self._messages[-1]
                room = self._max_chars - len(msg.text)
                if len(text) <= room:
                    head, rest, full = text, "", False
                else:
                    # Past the limit: end this message at a clean break and go on in a new one.
                    cut = split_point(text, max(room - len(FENCE) - 1, 0))
                    head, rest, full = text[:cut], text[cut:], True
                    if inside_code_block(msg.text + head):
                        head += "\n" + FENCE
                        rest = FENCE + "\n" + rest
                try:
                    await self._send(msg, head, complete=full or (final and not rest))
                except _TooLong:
                    self._shrink(len(msg.text) + len(head))
                    # What Slack does not have yet (this piece, and text a whole-message write held back)
                    # is split again at the smaller size.
                    unsent, msg.text = msg.text[msg.sent :], msg.text[: msg.sent]
                    text = unsent + self._unfence(head) + self._unfence_start(rest, head)
                    if msg.text:
                        await self._next_message(msg)
                    continue
                except _NoBudget as exc:
                    self._pending = text + self._pending
                    return exc.wait
                text = rest
                if full:
                    await self._next_message(msg)
            if self._chunks:
                # Steps with no text to ride on: on their own (streams only).
                try:
                    await self._deliver(self._messages[-1], final)
                except _NoBudget as exc:
                    return exc.wait
                except _TooLong:
                    log.warning("Slack refused %d step(s) as too long; not shown", len(self._chunks))
                    self._chunks = []
        return None

    def _take_chunks(self, text: str) -> list[Chunk]:
        """The chunks of one stream call: `text`, then the steps waiting (taken: put back on failure)."""
        chunks = [text_chunk(text)] if text else []
        chunks += self._chunks
        self._chunks = []
        return chunks

    def _shrink(self, refused: int) -> None:
        smaller = min(self._max_chars, refused) // 2
        if smaller < MIN_MESSAGE_CHARS:
            raise SlackDeliveryError("msg_too_long even for a short message")
        log.warning("Slack refused a message as too long; splitting at %d chars", smaller)
        self._max_chars = smaller

    @staticmethod
    def _unfence(head: str) -> str:
        return head.removesuffix("\n" + FENCE) if head.endswith("\n" + FENCE) else head

    @staticmethod
    def _unfence_start(rest: str, head: str) -> str:
        return rest.removeprefix(FENCE + "\n") if head.endswith("\n" + FENCE) else rest

    async def _next_message(self, msg: _Message) -> None:
        await self._close(msg)
        if self._spare_ts:
            self._messages.append(_Message(ts=self._spare_ts.pop(0), streaming=False))
        else:
            self._messages.append(_Message())

    async def _send(self, msg: _Message, piece: str, *, complete: bool) -> None:
        """Add `piece` to the message and bring Slack up to date as far as the budget allows; `complete`:
        the message gets no more text."""
        msg.text += piece
        try:
            await self._deliver(msg, complete)
        except (_TooLong, _NoBudget):
            msg.text = msg.text[: len(msg.text) - len(piece)]
            raise

    async def _deliver(self, msg: _Message, complete: bool) -> None:
        unsent = msg.text[msg.sent :]
        if not msg.streaming:
            self._chunks = []  # a message written whole shows no steps
        if msg.streaming and (unsent or self._chunks):
            steps = list(self._chunks)
            chunks = self._take_chunks(unsent)
            try:
                if msg.ts is None:
                    if await self._pace.stream():
                        mode = (
                            {"task_display_mode": self._task_display_mode} if self._task_display_mode else {}
                        )
                        response = await self._client.chat_startStream(
                            channel=self._channel,
                            thread_ts=self._thread_ts,
                            recipient_team_id=self._team_id,
                            recipient_user_id=self._user_id,
                            chunks=chunks,
                            **mode,
                        )
                        msg.sent = len(msg.text)
                        await self._started(msg, str(response["ts"]))
                        return
                    log.info("no Slack budget for a stream in %s; the answer is posted whole", self._channel)
                    msg.streaming = False
                else:
                    wait = await self._pace.now("chat.appendStream")
                    if wait > 0:
                        self._chunks = steps + self._chunks
                        if complete:
                            return  # rides on chat.stopStream
                        raise _NoBudget(wait)
                    await self._client.chat_appendStream(channel=self._channel, ts=msg.ts, chunks=chunks)
                    msg.sent = len(msg.text)
                    return
            except SlackApiError as exc:
                error = _slack_error(exc)
                if error == "msg_too_long":
                    self._chunks = steps + self._chunks
                    raise _TooLong from exc
                if error == STOPPED_BY_USER and not self._stopping:
                    msg.streaming = False
                    raise AnswerStopped("Slack: stopped_by_user") from exc
                log.warning("streaming to Slack failed (%s); continuing with chat.update", _slack_error(exc))
                msg.streaming = False
                await self._abandon_stream(msg, _slack_error(exc))
            except SLACK_TRANSPORT_ERRORS as exc:
                # Unknown whether Slack showed it: a later attempt rewrites the recorded messages whole.
                raise SlackDeliveryError(f"Slack stream call got no answer: {type(exc).__name__}") from exc
        if msg.streaming or msg.sent == len(msg.text):
            return
        if not complete:
            # Written whole: a new message once it is complete; an update now and then, budget allowing.
            loop = asyncio.get_running_loop()
            if msg.ts is None or loop.time() < self._last_update + UPDATE_EVERY_SECONDS:
                return
            if await self._pace.now("chat.update") > 0:
                return
            self._last_update = loop.time()
        else:
            await self._pace.wait("chat.update" if msg.ts else "chat.postMessage")
        await self._write_whole(msg)

    async def _abandon_stream(self, msg: _Message, error: str) -> None:
        """Close a stream Slack refused a call on (its chat.stopStream was reserved), unless it is gone."""
        if msg.ts is None or error == "message_not_in_streaming_state":
            return
        try:
            await self._client.chat_stopStream(channel=self._channel, ts=msg.ts)
        except SLACK_CALL_ERRORS as exc:
            log.debug("refused stream not stopped (%s)", _slack_error(exc))

    async def _started(self, msg: _Message, ts: str | None) -> None:
        if ts and msg.ts != ts:
            msg.ts = ts
            if self._on_message is None:
                return
            try:
                await self._on_message(ts)
            except BotError:
                # Not recorded, so a retry could not reuse it: take it back rather than leave a stray.
                try:
                    await self._client.chat_delete(channel=self._channel, ts=ts)
                except SLACK_CALL_ERRORS as exc:
                    log.warning("unrecorded message not deleted: %s", _slack_error(exc))
                msg.ts, msg.streaming = None, False
                raise

    async def _close(self, msg: _Message, *, last_message: bool = False) -> None:
        """Stop the message's stream with the text Slack does not have yet (its chat.stopStream was
        reserved with the stream); chat.update if that fails. The answer's last message gets the final
        blocks (with one more chat.update when it was written whole)."""
        blocks = self._final_blocks if last_message else None
        if not (msg.streaming and msg.ts):
            if blocks and msg.ts:
                await self._pace.wait("chat.update")
                with contextlib.suppress(SlackDeliveryError, _TooLong):  # the answer stands without them
                    await self._write_whole(msg, blocks)
            return
        steps = list(self._chunks)
        chunks = self._take_chunks(msg.text[msg.sent :])
        try:
            try:
                await self._client.chat_stopStream(
                    channel=self._channel, ts=msg.ts, chunks=chunks or None, blocks=blocks
                )
            except SlackApiError as exc:
                if not blocks or _slack_error(exc) not in BLOCKS_REFUSED:
                    raise
                # The answer matters more than its buttons.
                log.warning("Slack refused the answer's blocks (%s); closing without them", _slack_error(exc))
                blocks = None
                await self._client.chat_stopStream(channel=self._channel, ts=msg.ts, chunks=chunks or None)
            msg.sent = len(msg.text)
            msg.streaming = False
        except SlackApiError as exc:
            if _slack_error(exc) == STOPPED_BY_USER and not self._stopping:
                self._chunks = steps + self._chunks
                msg.streaming = False
                raise AnswerStopped("Slack: stopped_by_user") from exc
            log.warning(
                "closing the Slack stream failed (%s); writing it with chat.update", _slack_error(exc)
            )
            msg.streaming = False
            await self._pace.wait("chat.update")
            try:
                await self._write_whole(msg, blocks)
            except _TooLong as too_long:
                raise SlackDeliveryError("chat.update after chat.stopStream: msg_too_long") from too_long
        except SLACK_TRANSPORT_ERRORS as exc:
            raise SlackDeliveryError(f"chat.stopStream got no answer: {type(exc).__name__}") from exc

    async def _write_whole(self, msg: _Message, blocks: list[dict[str, Any]] | None = None) -> None:
        method = "chat.update" if msg.ts else "chat.postMessage"
        # Slack takes markdown_text or blocks, not both: with blocks the text goes in a markdown block
        # (and stays the message's `text`, what notifications show).
        content: dict[str, Any] = {"markdown_text": msg.text}
        if blocks:
            content = {"text": msg.text, "blocks": [{"type": "markdown", "text": msg.text}, *blocks]}
        if self._guard is not None:
            # A whole-message write could overwrite what a worker that took the turn over has written.
            await self._guard()
        try:
            if msg.ts:
                await self._client.chat_update(channel=self._channel, ts=msg.ts, **content)
            else:
                response = await self._client.chat_postMessage(
                    channel=self._channel, thread_ts=self._thread_ts, **content
                )
                await self._started(msg, str(response["ts"]))
            msg.sent = len(msg.text)
        except SlackApiError as exc:
            if _slack_error(exc) == "msg_too_long":
                raise _TooLong from exc
            if blocks and _slack_error(exc) in BLOCKS_REFUSED:
                log.warning(
                    "Slack refused the answer's blocks (%s); writing it without them", _slack_error(exc)
                )
                await self._write_whole(msg)
                return
            raise SlackDeliveryError(f"{method} failed: {_slack_error(exc)}") from exc
        except SLACK_TRANSPORT_ERRORS as exc:
            raise SlackDeliveryError(f"{method} got no answer: {type(exc).__name__}") from exc
