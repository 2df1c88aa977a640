"""One answer in a Slack thread: streamed with chat.startStream/appendStream/stopStream (slack-sdk's
`chat_stream`), split into several messages past Slack's per-message limit, and carried on with
chat.update when Slack says the stream has expired.

Text is sent at once when it first arrives and then at most once per `flush_seconds`, so a fast model
does not turn into hundreds of Slack calls (and 429s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import SlackDeliveryError
from bot.markdown import FENCE, inside_code_block, split_point

log = logging.getLogger(__name__)

WARNING_ICON = ":warning:"


@dataclass
class _Message:
    text: str = ""
    ts: str | None = None
    stream: AsyncChatStream | None = None
    # False once the stream is gone: the message is then written with chat.postMessage / chat.update.
    streaming: bool = True


def _slack_error(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "unknown")) if exc.response is not None else "unknown"


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
    ) -> None:
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        self._team_id = team_id
        self._user_id = user_id
        self._flush_seconds = flush_seconds
        self._max_chars = max_chars
        self._messages: list[_Message] = [_Message()]
        self._pending = ""
        self._last_flush = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        self._timer_error: BaseException | None = None
        self._lock = asyncio.Lock()

    @property
    def message_ts(self) -> list[str]:
        return [m.ts for m in self._messages if m.ts]

    @property
    def text(self) -> str:
        return "".join(m.text for m in self._messages) + self._pending

    async def append(self, delta: str) -> None:
        self._raise_timer_error()
        if not delta:
            return
        self._pending += delta
        wait = self._last_flush + self._flush_seconds - asyncio.get_running_loop().time()
        if wait <= 0:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(wait))

    async def finish(self) -> None:
        """Send what is left and close the message."""
        await self._stop_timer()
        await self._flush()
        if not self.message_ts:
            # The model said nothing: still answer, so the user is not left with a silent thread.
            self._pending = "_(The assistant returned an empty answer.)_"
            await self._flush()
        await self._close(self._messages[-1])

    async def fail(self, user_message: str) -> None:
        """End the answer with a short notice; a new message when nothing was shown yet."""
        await self._stop_timer()
        separator = "\n\n" if self.text.strip() else ""
        if separator and inside_code_block(self.text):
            separator = "\n" + FENCE + "\n\n"
        self._pending += f"{separator}{WARNING_ICON} {user_message}"
        await self._flush()
        await self._close(self._messages[-1])

    async def _flush_later(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            self._timer = None
            await self._flush()
        except SlackDeliveryError as exc:
            self._timer_error = exc

    def _raise_timer_error(self) -> None:
        if self._timer_error is not None:
            error, self._timer_error = self._timer_error, None
            raise error

    async def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._raise_timer_error()

    async def _flush(self) -> None:
        async with self._lock:
            self._last_flush = asyncio.get_running_loop().time()
            text, self._pending = self._pending, ""
            while text:
                msg = self._messages[-1]
                room = self._max_chars - len(msg.text)
                if len(text) <= room:
                    await self._send(msg, text)
                    return
                # Past the limit: end this message at a clean break and go on in a new one.
                cut = split_point(text, max(room - len(FENCE) - 1, 0))
                head, text = text[:cut], text[cut:]
                if inside_code_block(msg.text + head):
                    head += "\n" + FENCE
                    text = FENCE + "\n" + text
                if head:
                    await self._send(msg, head)
                await self._close(msg)
                self._messages.append(_Message())

    async def _send(self, msg: _Message, piece: str) -> None:
        msg.text += piece
        if msg.streaming:
            try:
                if msg.stream is None:
                    msg.stream = await self._client.chat_stream(
                        channel=self._channel,
                        thread_ts=self._thread_ts,
                        recipient_team_id=self._team_id,
                        recipient_user_id=self._user_id,
                        buffer_size=1,
                    )
                await msg.stream.append(markdown_text=piece)
                msg.ts = msg.stream.ts
                return
            except SlackApiError as exc:
                log.warning("streaming to Slack failed (%s); continuing with chat.update", _slack_error(exc))
                msg.ts = msg.ts or (msg.stream.ts if msg.stream else None)
                msg.streaming = False
        await self._write_whole(msg)

    async def _close(self, msg: _Message) -> None:
        if not (msg.streaming and msg.stream is not None):
            return
        try:
            await msg.stream.stop()
        except SlackApiError as exc:
            log.warning(
                "closing the Slack stream failed (%s); writing it with chat.update", _slack_error(exc)
            )
            msg.streaming = False
            await self._write_whole(msg)

    async def _write_whole(self, msg: _Message) -> None:
        method = "chat.update" if msg.ts else "chat.postMessage"
        try:
            if msg.ts:
                await self._client.chat_update(channel=self._channel, ts=msg.ts, markdown_text=msg.text)
            else:
                response = await self._client.chat_postMessage(
                    channel=self._channel, thread_ts=self._thread_ts, markdown_text=msg.text
                )
                msg.ts = str(response["ts"])
        except SlackApiError as exc:
            raise SlackDeliveryError(f"{method} failed: {_slack_error(exc)}") from exc
