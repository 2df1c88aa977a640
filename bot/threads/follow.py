"""The assistant thread follows Slack (issue 15): deleted messages, edits, and "Forget this message".

- A person deletes their message (`message_deleted`): a turn still queued for it is dropped (never
  answered); one that already ran has its user message removed from the conversation (its answer stays in
  Slack and in the conversation; "Forget this message" on the answer removes that too).
- A person edits their message (`message_changed` with a new text): a turn still queued for it is answered
  with the new text. Once the turn has started, the edit changes nothing: the conversation keeps what was
  answered, so the answer in Slack and what the assistant remembers agree (to change it, the person writes
  again, or forgets the message and writes again). Edits that keep the text (Slack's language detection,
  unfurls) are ignored.
- The thread's owner uses "Forget this message" on a message or on its answer: the user message and every
  item of its answer (messages, reasoning, tool calls and outputs) leave the conversation, and the owner is
  told in an ephemeral.

Removing items goes through the thread's turn queue (a `delete` or `forget` turn, after the turns already
queued), like reset: it never cuts into a running answer, and the answer of a turn that runs meanwhile is
recorded before the removal runs. Which items a message became is in `bot.threads.items`.

Known limit: a worker that took a queued turn off the queue a moment before the edit or deletion (between
reading the queue's head and starting the turn) answers the original text; a deletion then still removes
the message afterwards (a `delete` turn is queued whenever the dropped turn may have run).
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.assistant.backend import AssistantBackend
from bot.errors import (
    AssistantUnavailable,
    BotError,
    NoAssistantThread,
    NotYourThread,
    StoreUnavailable,
    TurnInterrupted,
)
from bot.keys import TURN_GROUP, Keys
from bot.models import MessageAction, MessageChange, Turn
from bot.queue.dispatcher import Dispatcher
from bot.slack.ephemeral import Ephemeral
from bot.threads.guests import Guests
from bot.threads.items import MessageItems, ThreadItems
from bot.threads.spending import Spending
from bot.threads.store import ThreadStore
from bot.threads.targets import Targets, ThreadTarget

log = logging.getLogger(__name__)

FORGOTTEN = "Done: this assistant thread no longer remembers that message or its answer."
FORGOTTEN_UNANSWERED = "Done: that message won't be answered, and this assistant thread won't remember it."
NOTHING_TO_FORGET = "This assistant thread holds nothing for that message (it may be forgotten already)."
FORGET_FAILED = "Couldn't forget that message."


class NotTheOwner(NotYourThread):
    user_message = "Only the person who started this assistant thread can make it forget messages."


# KEYS: the thread's queue index, the turn stream, the turn's progress record.
# ARGV: index member, entry id, group, the new turn json ('': drop the turn), thread ref, ts.
# Replaces (or drops) a turn that has not started: its record does not exist yet. 1 when done, 0 when the
# turn started meanwhile or is gone.
_REQUEUE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then
  local id = redis.call('XADD', KEYS[2], '*', 'thread', ARGV[5], 'turn', ARGV[4])
  redis.call('ZADD', KEYS[1], 0, ARGV[6] .. '|' .. id)
end
return 1
"""


class FollowSlack:
    def __init__(
        self,
        redis: Redis,
        *,
        store: ThreadStore,
        items: ThreadItems,
        dispatcher: Dispatcher,
        targets: Targets,
        ephemeral: Ephemeral,
        guests: Guests,
        spending: Spending,
    ) -> None:
        self._redis = redis
        self._store = store
        self._items = items
        self._dispatcher = dispatcher
        self._targets = targets
        self._ephemeral = ephemeral
        self._guests = guests
        self._spending = spending
        self._requeue = redis.register_script(_REQUEUE)

    # ---- Slack events ---------------------------------------------------------------------------

    async def changed(self, change: MessageChange) -> None:
        """A message edited or deleted in Slack. Bad input (a thread or message the bot never saw) is
        ignored with a log line; a Redis failure too (nobody is waiting for an answer)."""
        try:
            await self._changed(change)
        except (RedisError, BotError) as exc:
            log.warning("%s of %s:%s not followed: %s", _what(change), change.channel, change.ts, exc)

    async def _changed(self, change: MessageChange) -> None:
        keys = change.workspace.keys
        if not change.deleted and change.text == change.previous_text:
            log.debug("edit of %s:%s keeps the text: nothing to do", change.channel, change.ts)
            return
        thread = change.thread
        if change.is_dm and change.thread_ts is not None:
            thread = await self._store.resolve(keys, thread)
        known, _ = await self._store.owner(keys, thread)
        if not known:
            log.info("%s of %s:%s ignored: not an assistant thread", _what(change), change.channel, change.ts)
            return
        if not change.deleted:
            if await self._rewrite_queued(keys, thread, change.channel, change.ts, change.text, change.user):
                log.info("edit of %s:%s applied to its queued turn", change.channel, change.ts)
            else:
                log.info("edit of %s:%s after its turn started: nothing changes", change.channel, change.ts)
            return
        dropped = await self._rewrite_queued(keys, thread, change.channel, change.ts, None, change.user)
        if dropped:
            # Never answered; the removal is queued anyway, in case a worker took the turn just before.
            log.info("deletion of %s:%s: its queued turn dropped", change.channel, change.ts)
        elif not await self._holds(keys, thread, change):
            log.info("deletion of %s:%s ignored: the thread holds nothing for it", change.channel, change.ts)
            return
        await self._queue(
            "delete", keys, thread, channel=change.channel, user=change.user, target=change.ts, notice_ts=None
        )

    async def _holds(self, keys: Keys, thread: str, change: MessageChange) -> bool:
        """Whether the conversation holds (or may soon hold) something of the message: its items are
        recorded, or its turn has started and not finished."""
        if await self._items.find(keys, thread, change.ts) is not None:
            return True
        return await self._running(keys, change.channel, change.ts)

    async def _running(self, keys: Keys, channel: str, ts: str) -> bool:
        """Whether the turn of message `ts` has started and not finished (its items are not recorded yet)."""
        record = keys.turn(f"{channel}:{ts}")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(record)
            pipe.hget(record, "done")
            started, done = await pipe.execute()
        return bool(started) and done != "1"

    async def _rewrite_queued(
        self, keys: Keys, thread: str, channel: str, ts: str, text: str | None, author: str | None = None
    ) -> bool:
        """Give the queued turn of message `ts` a new text, or drop it (`text` None). False when no such
        turn is waiting (it started, ran, or never was), or when it is not `author`'s message."""
        index = keys.queue(thread)
        for member in await self._redis.zrangebylex(index, f"[{ts}|", f"[{ts}|~"):
            entry_id = str(member).split("|", 1)[1]
            entries = await self._redis.xrange(keys.turns(), entry_id, entry_id)
            if not entries:
                continue
            fields = entries[0][1] or {}
            raw = fields.get("turn")
            turn = Turn.model_validate_json(str(raw)) if raw else None
            if turn is None or turn.kind != "message" or turn.channel != channel or turn.ts != ts:
                continue
            if author is not None and turn.user != author:
                continue
            new = "" if text is None else turn.model_copy(update={"text": text}).model_dump_json()
            done = await self._requeue(
                keys=[index, keys.turns(), keys.turn(turn.id)],
                args=[str(member), entry_id, TURN_GROUP, new, thread, ts],
            )
            return bool(done)
        return False

    # ---- the "Forget this message" shortcut -----------------------------------------------------

    async def forget_shortcut(self, action: MessageAction, *, request_id: str) -> None:
        """Forget the message the shortcut was used on (or the message an answer answers) and its answer.
        The owner hears back once it is done (from the queued turn); refusals and mistakes at once."""
        if self._guests.refuses(action.external):
            await self._guests.turn_away(action.workspace, action.channel, action.user, action.thread_ts)
            return
        try:
            await self._spending.pay(action.workspace, action.user)
            target = await self._targets.of_action(action)
            text = await self._forget(target, action, request_id=request_id)
        except BotError as exc:
            log.info(
                "forget on %s:%s refused: %s: %s", action.channel, action.message_ts, type(exc).__name__, exc
            )
            text = exc.user_message
        except RedisError as exc:
            log.warning("forget on %s:%s: Redis: %s", action.channel, action.message_ts, type(exc).__name__)
            text = StoreUnavailable.user_message
        if text:
            await self._ephemeral.whisper(action.channel, action.user, text, action.thread_ts)

    async def _forget(self, target: ThreadTarget, action: MessageAction, *, request_id: str) -> str | None:
        keys, thread = target.workspace.keys, target.thread
        known, owner = await self._store.owner(keys, thread)
        if not known:
            raise NoAssistantThread(f"{thread} unknown")
        if owner != target.user:
            raise NotTheOwner(f"{target.user} is not the owner of {thread}")
        entry = await self._items.find(keys, thread, action.message_ts)
        target_ts = entry.ts if entry is not None else action.message_ts
        if entry is None:
            if await self._rewrite_queued(keys, thread, action.channel, action.message_ts, None):
                log.info("forget: the queued turn of %s:%s dropped", action.channel, action.message_ts)
                return FORGOTTEN_UNANSWERED
            if not await self._running(keys, action.channel, action.message_ts):
                log.info("forget on %s:%s: nothing held for it", action.channel, action.message_ts)
                return NOTHING_TO_FORGET
        await self._queue(
            "forget",
            keys,
            thread,
            channel=action.channel,
            user=action.user,
            target=target_ts,  # a message being answered: its forget turn runs after the answer
            notice_ts=action.thread_ts,
            request_id=request_id,
        )
        return None  # the queued turn tells the owner once it is done

    async def _queue(
        self,
        kind: str,
        keys: Keys,
        thread: str,
        *,
        channel: str,
        user: str,
        target: str,
        notice_ts: str | None,
        request_id: str | None = None,
    ) -> None:
        now = time.time()
        turn = Turn.model_validate(
            {
                "kind": kind,
                "workspace": {"team_id": keys.team_id, "enterprise_id": keys.enterprise_id},
                "thread": thread,
                "channel": channel,
                "user": user,
                "text": "",
                # After every turn already queued for the thread (Slack ts are epoch seconds too).
                "ts": f"{now:.6f}",
                "reply_thread_ts": notice_ts,
                "is_dm": channel.startswith("D"),
                "received_at": now,
                "target_ts": target,
            }
        )
        await self._dispatcher.submit_reset(turn, request_id=request_id or f"{kind}:{channel}:{target}")


class ItemRemover:
    """Runs the queued `delete` and `forget` turns (on the worker running the thread's turns)."""

    def __init__(self, store: ThreadStore, items: ThreadItems, ephemeral: Ephemeral) -> None:
        self._store = store
        self._items = items
        self._ephemeral = ephemeral

    async def run(self, turn: Turn, backend: AssistantBackend) -> None:
        """A `delete` or `forget` turn: remove the message's items (and, for `forget`, its answer's) from
        the conversation, then forget the record. Redis errors propagate (the turn is retried; removing
        again is harmless)."""
        keys, thread = turn.workspace.keys, turn.thread
        assert turn.target_ts is not None
        forget = turn.kind == "forget"
        conversation_id = await self._store.conversation_id(keys, thread)
        entry = await self._items.find(keys, thread, turn.target_ts)
        if conversation_id is None or entry is None:
            log.info("turn %s: nothing recorded for %s; nothing to remove", turn.id, turn.target_ts)
            text = NOTHING_TO_FORGET
        else:
            try:
                entry = await self._resolved(entry, conversation_id, backend)
                ids = entry.user + (entry.answer if forget else [])
                removed = await backend.delete_items(conversation_id, ids)
            except BotError as exc:
                log.warning("turn %s: items of %s not removed: %s", turn.id, turn.target_ts, exc)
                if not forget and isinstance(exc, AssistantUnavailable):
                    # A deleted message must still leave: the removal stays queued (removing is idempotent).
                    raise TurnInterrupted(f"OpenAI: {type(exc).__name__}") from exc
                if forget:
                    await self._tell(turn, f"{FORGET_FAILED} {exc.user_message}")
                return
            if forget:
                await self._items.drop(keys, thread, entry)
            else:
                await self._items.drop_user(keys, thread, entry)
            log.info("turn %s: %d item(s) of %s removed from %s", turn.id, removed, entry.ts, conversation_id)
            text = FORGOTTEN
        if forget:
            await self._tell(turn, text)

    @staticmethod
    async def _resolved(entry: MessageItems, conversation_id: str, backend: AssistantBackend) -> MessageItems:
        """The entry with its item ids, looked up from its turn's responses when it was recorded with those
        only. Found nowhere (the response expired, or its items were compacted away), it has none."""
        if not entry.unresolved:
            return entry
        found = await backend.turn_items(conversation_id, entry.responses)
        if found is None:
            log.warning("items of %s not found from its responses", entry.ts)
            return MessageItems(entry.ts, [], [], entry.answer_ts)
        return MessageItems(entry.ts, found.user, found.answer, entry.answer_ts)

    async def _tell(self, turn: Turn, text: str) -> None:
        await self._ephemeral.whisper(turn.channel, turn.user, text, turn.reply_thread_ts)


def _what(change: MessageChange) -> str:
    return "deletion" if change.deleted else "edit"
