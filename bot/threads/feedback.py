"""Ratings of answers (issue 15 item 3): who may rate, recording once per person and answer, the thread's
`feedback_rating` metadata, the 👎 comment, and the counts `/assistant usage` shows.

Who may rate: the people whose messages the assistant thread answered (recorded with each answer, `offer`)
and the person who started it. These are the bot's own records, so no new Slack scope is needed; Slack's
`conversations.members` would need channels:read, groups:read, im:read and mpim:read, and would also let
any channel member who never spoke to the assistant rate it. In a public channel anyone in the workspace can
see (and click) a message, so Slack showing the buttons is no proof of taking part.

A rating is one Lua script: the answer's HASH holds one field per person, so a second click (a double
click, a Slack resend) with the same value changes nothing, and another value moves that person's one
rating from 👍 to 👎 (or back) in every count: the conversation's, the workspace's and the rater's, by the
UTC day the answer was posted (carried in the buttons' value).

`feedback_rating` (conversation metadata): the conversation's counts, `good=3 bad=1`: one rating per person
and answer, over all its answers (the latest single rating says little in a thread with several answers and
people). It is read-only for users. It takes a pair only once a rating exists: when the user's own keys
already fill the 16 pairs, the counts stay in Redis and the metadata is left alone (logged).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import AssistantBackend
from bot.errors import BotError
from bot.keys import FEEDBACK_COUNTS_TTL, FEEDBACK_TTL, Keys, ms
from bot.models import Workspace
from bot.ops.metrics import Metrics
from bot.slack.client import SLACK_CALL_ERRORS, slack_error
from bot.slack.ephemeral import Ephemeral
from bot.slack.feedback import (
    COMMENT_MAX_CHARS,
    CommentRef,
    FeedbackClick,
    comment_view,
    feedback_blocks,
)
from bot.slack.inert import escape_mrkdwn
from bot.threads.metadata import FEEDBACK_KEY, MAX_PAIRS
from bot.threads.store import ThreadStore
from bot.threads.usage import last_days, utc_day

log = logging.getLogger(__name__)

NOT_A_PARTICIPANT = "Only people taking part in this conversation can rate its answers."
NOT_RECORDED = "Sorry, I couldn't save your rating. Please try again in a minute."
COMMENT_SAVED = "Thanks for your feedback. Your comment on this answer was saved:"
COMMENT_QUOTED_CHARS = 300
# Metadata writes that lost a race with another rating are redone, this often at most.
METADATA_ATTEMPTS = 3

# KEYS: the answer's ratings hash, the conversation's counts, the workspace's day, the rater's day.
# ARGV: user, rating, record JSON, ratings ttl ms, counts ttl ms.
# Returns {0 same rating as before | 1 new | 2 changed, good, bad (the conversation's counts)}.
_RATE = """
local state = 1
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local before = cjson.decode(old)['rating']
  if before == ARGV[2] then state = 0 else
    for k = 2, 4 do redis.call('HINCRBY', KEYS[k], before, -1) end
    state = 2
  end
end
if state ~= 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  for k = 2, 4 do redis.call('HINCRBY', KEYS[k], ARGV[2], 1) end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
return {state, tonumber(redis.call('HGET', KEYS[2], 'good') or '0'),
        tonumber(redis.call('HGET', KEYS[2], 'bad') or '0')}
"""

# KEYS: the answer's ratings hash. ARGV: user, comment. The comment goes with the person's 👎 only.
# Returns 1 when stored, 0 when that person has no 👎 on the answer (any more).
_COMMENT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local record = cjson.decode(old)
if record['rating'] ~= 'bad' then return 0 end
record['comment'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
return 1
"""

_STATES = {0: "repeated", 1: "new", 2: "changed"}


@dataclass(frozen=True)
class Rated:
    result: str  # new, changed, repeated
    good: int
    bad: int


@dataclass(frozen=True)
class Counts:
    good: int = 0
    bad: int = 0


def rating_text(good: int, bad: int) -> str:
    """The `feedback_rating` metadata value (ASCII, far below 512 characters)."""
    return f"good={good} bad={bad}"


def thread_in_channel(thread: str, channel: str) -> bool:
    """Whether an assistant thread ref can belong to a message in `channel` (a button's value is checked
    against where the click came from)."""
    if thread.startswith("u:"):
        return channel.startswith("D")
    return thread.startswith(f"c:{channel}:")


class FeedbackLedger:
    """Ratings and participants in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._rate = redis.register_script(_RATE)
        self._comment = redis.register_script(_COMMENT)

    async def participant(self, keys: Keys, thread: str, user: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.thread_participants(thread), user)
            pipe.pexpire(keys.thread_participants(thread), ms(FEEDBACK_TTL))
            await pipe.execute()

    async def may_rate(self, keys: Keys, thread: str, user: str) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sismember(keys.thread_participants(thread), user)
            pipe.hget(keys.thread(thread), "user")
            member, owner = await pipe.execute()
        return bool(member) or (owner is not None and str(owner) == user)

    async def rate(self, click: FeedbackClick) -> Rated:
        keys, value = click.workspace.keys, click.value
        day = value.day
        record = {
            "rating": value.rating,
            "response_id": value.response_id,
            "conversation_id": value.conversation_id,
            "thread": value.thread,
            "channel": click.channel,
            "answer_ts": click.answer_ts,
            "at": round(time.time(), 3),
        }
        state, good, bad = await self._rate(
            keys=[
                keys.feedback(click.channel, click.answer_ts),
                keys.feedback_thread(value.conversation_id),
                keys.feedback_day(day),
                keys.feedback_user_day(day, click.user),
            ],
            args=[click.user, value.rating, json.dumps(record), ms(FEEDBACK_TTL), ms(FEEDBACK_COUNTS_TTL)],
        )
        return Rated(_STATES[int(state)], int(good), int(bad))

    async def counts_of(self, keys: Keys, conversation_id: str) -> Counts:
        fields = await self._redis.hgetall(keys.feedback_thread(conversation_id))
        return _counts(fields)

    async def comment(self, keys: Keys, ref: CommentRef, user: str, text: str) -> bool:
        stored = await self._comment(keys=[keys.feedback(ref.channel, ref.answer_ts)], args=[user, text])
        return bool(stored)

    async def rating_of(self, keys: Keys, channel: str, answer_ts: str, user: str) -> dict[str, Any] | None:
        """One person's rating record of an answer (None: none)."""
        raw = await self._redis.hget(keys.feedback(channel, answer_ts), user)
        return json.loads(raw) if raw else None

    async def days(self, keys: Keys, days: list[str], user: str | None = None) -> Counts:
        """The ratings of answers posted over these days: the workspace's, or those `user` gave."""
        names = [keys.feedback_user_day(d, user) if user else keys.feedback_day(d) for d in days]
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(name)
            found = await pipe.execute()
        total = [_counts(h) for h in found]
        return Counts(sum(c.good for c in total), sum(c.bad for c in total))


def _counts(fields: dict[Any, Any]) -> Counts:
    def get(name: str) -> int:
        raw = fields.get(name) or fields.get(name.encode()) or 0
        return max(0, int(raw))

    return Counts(get("good"), get("bad"))


class Feedback:
    """What the listeners call: a click on the buttons, the 👎 comment modal's submission; and `offer`, the
    buttons of an answer about to be finished (the turn runner)."""

    def __init__(
        self,
        ledger: FeedbackLedger,
        store: ThreadStore,
        backend: AssistantBackend,
        client: AsyncWebClient,
        ephemeral: Ephemeral,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._backend = backend
        self._client = client
        self._ephemeral = ephemeral
        self._metrics = metrics
        self._clock = clock

    async def offer(
        self, workspace: Workspace, thread: str, user: str, response_id: str, conversation_id: str
    ) -> list[dict[str, Any]]:
        """The buttons of an answer to `user`, who may rate from now on (recorded first: a click can only
        come once the buttons are shown)."""
        try:
            await self._ledger.participant(workspace.keys, thread, user)
        except RedisError as exc:  # the thread's starter may still rate; the answer goes on
            log.warning("participant of %s not recorded: Redis %s", thread, type(exc).__name__)
        return feedback_blocks(response_id, conversation_id, utc_day(self._clock()), thread)

    async def clicked(self, click: FeedbackClick, *, trigger_id: str) -> None:
        value = click.value
        keys = click.workspace.keys
        try:
            allowed = thread_in_channel(value.thread, click.channel) and await self._ledger.may_rate(
                keys, value.thread, click.user
            )
            if not allowed:
                log.info(
                    "feedback by %s on %s:%s refused: not a participant",
                    click.user,
                    click.channel,
                    click.answer_ts,
                )
                self._metrics.feedback(value.rating, "refused")
                await self._ephemeral.whisper(click.channel, click.user, NOT_A_PARTICIPANT, click.thread_ts)
                return
            rated = await self._ledger.rate(click)
        except RedisError as exc:
            log.warning("feedback not recorded: Redis %s", type(exc).__name__)
            await self._ephemeral.whisper(click.channel, click.user, NOT_RECORDED, click.thread_ts)
            return
        self._metrics.feedback(value.rating, rated.result)
        log.info(
            "feedback %s (%s) by %s on %s (response %s)",
            value.rating,
            rated.result,
            click.user,
            click.answer_ts,
            value.response_id,
        )
        if value.rating == "bad" and rated.result != "repeated":
            await self._open_comment(click, trigger_id)
        if rated.result != "repeated":
            await self._show(keys, value.thread, value.conversation_id, Counts(rated.good, rated.bad))

    async def _open_comment(self, click: FeedbackClick, trigger_id: str) -> None:
        ref = CommentRef(click.channel, click.answer_ts, click.thread_ts, click.value.thread)
        try:
            await self._client.views_open(trigger_id=trigger_id, view=comment_view(ref))
        except SLACK_CALL_ERRORS as exc:  # the rating stands; only the optional comment is lost
            log.warning("feedback comment modal not opened: %s", slack_error(exc))

    async def _show(self, keys: Keys, thread: str, conversation_id: str, counts: Counts) -> None:
        """Write the conversation's counts into its `feedback_rating`; redone when a rating recorded
        meanwhile (another click, another replica) changed them, so the last write holds the last counts."""
        try:
            if await self._store.conversation_id(keys, thread) != conversation_id:
                return  # the thread was reset since: its old conversation is gone
            for _ in range(METADATA_ATTEMPTS):
                info = await self._backend.info(conversation_id)
                value = rating_text(counts.good, counts.bad)
                if info.metadata.get(FEEDBACK_KEY) != value:
                    if FEEDBACK_KEY not in info.metadata and len(info.metadata) >= MAX_PAIRS:
                        log.info("feedback_rating not shown on %s: its metadata is full", conversation_id)
                        return
                    await self._backend.set_metadata(conversation_id, {**info.metadata, FEEDBACK_KEY: value})
                latest = await self._ledger.counts_of(keys, conversation_id)
                if latest == counts:
                    return
                counts = latest
        except (BotError, RedisError) as exc:
            log.warning("feedback_rating of %s not written: %s", conversation_id, type(exc).__name__)

    async def commented(self, workspace: Workspace, user: str, private_metadata: str, text: str) -> None:
        """The 👎 modal was submitted: its comment (if any) goes with the person's rating of that answer."""
        ref = CommentRef.load(private_metadata)
        comment = text.strip()[:COMMENT_MAX_CHARS]
        if ref is None:
            log.warning("a feedback comment for an unreadable answer reference was dropped")
            return
        if not comment:
            return
        try:
            stored = await self._ledger.comment(workspace.keys, ref, user, comment)
        except RedisError as exc:
            log.warning("feedback comment not stored: Redis %s", type(exc).__name__)
            await self._ephemeral.whisper(ref.channel, user, NOT_RECORDED, ref.thread_ts)
            return
        if not stored:
            log.info("feedback comment by %s dropped: no 👎 of theirs on %s", user, ref.answer_ts)
            return
        self._metrics.feedback_comment()
        await self._ephemeral.whisper(ref.channel, user, comment_receipt(comment), ref.thread_ts)

    async def usage_lines(self, workspace: Workspace, user: str, *, admin: bool, days: int) -> list[str]:
        """`/assistant usage` lines: the ratings the user gave, and (admins) the workspace's."""
        window = last_days(self._clock(), days)
        own = await self._ledger.days(workspace.keys, window, user)
        lines = [f"• Answers you rated, last {days} days: {thumbs(own)}"]
        if admin:
            team = await self._ledger.days(workspace.keys, window)
            lines.append(f"• Ratings of answers in this workspace, last {days} days: {thumbs(team)}")
        return lines


def thumbs(counts: Counts) -> str:
    return f"👍 {counts.good} · 👎 {counts.bad}"


def comment_receipt(comment: str) -> str:
    """The comment quoted back to its author, inert (it is anyone's text)."""
    shown = comment if len(comment) <= COMMENT_QUOTED_CHARS else comment[: COMMENT_QUOTED_CHARS - 1] + "…"
    quoted = "\n".join(f"> {escape_mrkdwn(line)}" for line in shown.splitlines() or [""])
    return f"{COMMENT_SAVED}\n{quoted}"
