"""Which conversation items each Slack message of an assistant thread became (issue 15).

A thread follows Slack: a deleted message, or one the owner asks to forget, must leave the OpenAI conversation
too, and Slack names messages by ts while the conversation names items by id. One HASH per thread
(`Keys.thread_items`) maps them, written once per answered turn (one EVALSHA: the fields and the TTL):

- `<ts of the user's message>` -> JSON {"in": the user message's item ids, "out": the answer's item ids
  (messages, reasoning, tool calls and outputs), "answers": the Slack ts of the answer's messages}; where the
  backend can find a turn's items later (`defers_turn_items`), an answered turn records {"responses": its
  response ids, "answers": ...} instead, and the ids are looked up the day a message is deleted or forgotten
  (a request to OpenAI then, not on every answer);
- `a:<ts of an answer message>` -> the ts of the user's message it answers (the shortcut may be used on
  either).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bot.assistant.backend import TurnItems
from bot.keys import ITEMS_TTL, Keys, ms

# KEYS: the thread's items hash. ARGV: ttl_ms, field, value, [field, value ...].
_RECORD = """
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

ANSWER_PREFIX = "a:"


@dataclass
class MessageItems:
    """The items one user message (and its answer) became."""

    ts: str  # the user message's Slack ts
    user: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    answer_ts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)  # the turn's responses, its items not looked up yet

    @property
    def unresolved(self) -> bool:
        return bool(self.responses) and not self.user and not self.answer

    def dump(self) -> str:
        data: dict[str, list[str]] = {"in": self.user, "out": self.answer, "answers": self.answer_ts}
        if self.unresolved:
            data["responses"] = self.responses
        return json.dumps(data)

    @classmethod
    def load(cls, ts: str, raw: str) -> MessageItems:
        data = json.loads(raw)
        fields = [list(data.get(k, [])) for k in ("in", "out", "answers", "responses")]
        return cls(ts, *fields)


class ThreadItems:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)

    async def record(
        self, keys: Keys, thread: str, ts: str, items: TurnItems | list[str], answer_ts: list[str]
    ) -> None:
        """What the turn for message `ts` added to the conversation (its items, or the ids of its responses
        to find them by later), and the Slack messages of its answer."""
        if isinstance(items, TurnItems):
            entry = MessageItems(ts, items.user, items.answer, answer_ts)
        else:
            entry = MessageItems(ts, [], [], answer_ts, responses=items)
        args: list[str | int] = [ms(ITEMS_TTL), ts, entry.dump()]
        for answer in answer_ts:
            args += [ANSWER_PREFIX + answer, ts]
        await self._record(keys=[keys.thread_items(thread)], args=args)

    async def find(self, keys: Keys, thread: str, ts: str) -> MessageItems | None:
        """The items of the user message `ts`, or of the message an answer message `ts` answers."""
        key = keys.thread_items(thread)
        own, answered = await self._redis.hmget(key, [ts, ANSWER_PREFIX + ts])
        if own:
            return MessageItems.load(ts, str(own))
        if not answered:
            return None
        raw = await self._redis.hget(key, str(answered))
        return MessageItems.load(str(answered), str(raw)) if raw else None

    async def drop_user(self, keys: Keys, thread: str, entry: MessageItems) -> None:
        """The user's message is gone from the conversation; its answer stays (and can still be forgotten)."""
        kept = MessageItems(entry.ts, [], entry.answer, entry.answer_ts)
        await self._redis.hset(keys.thread_items(thread), entry.ts, kept.dump())

    async def drop(self, keys: Keys, thread: str, entry: MessageItems) -> None:
        """The message and its answer are gone from the conversation."""
        fields = [entry.ts, *(ANSWER_PREFIX + a for a in entry.answer_ts)]
        await self._redis.hdel(keys.thread_items(thread), *fields)

    async def forget_thread(self, keys: Keys, thread: str) -> None:
        """The thread was reset: its conversation, and so every item, is gone."""
        await self._redis.delete(keys.thread_items(thread))
