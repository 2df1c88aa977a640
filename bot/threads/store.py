"""The Slack key -> assistant thread map in Redis.

One HASH per assistant thread (`Keys.thread`), registered when its first message is queued so that
replies in a Slack thread the bot answers are recognised at once; the OpenAI conversation itself is
created lazily by the first turn and its id stored in the same hash.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from bot.keys import CONTEXT_TTL, THREAD_TTL, Keys, ms
from bot.models import UserContext


class ThreadStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def resolve(self, keys: Keys, thread: str) -> str:
        """Follow an alias: a Slack thread under a top-level DM continues the user's own thread."""
        target = await self._redis.get(keys.alias(thread))
        return str(target) if target else thread

    async def load(self, keys: Keys, thread: str, user: str) -> tuple[str | None, UserContext | None]:
        """The thread's conversation id and the user's Slack context, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.thread(thread), "conversation_id")
            pipe.get(keys.user_context(user))
            conversation_id, raw_context = await pipe.execute()
        context = UserContext.model_validate_json(raw_context) if raw_context else None
        return (str(conversation_id) if conversation_id else None), context

    async def bind(self, keys: Keys, thread: str, conversation_id: str) -> None:
        now = f"{time.time():.3f}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.thread(thread), mapping={"conversation_id": conversation_id, "created_at": now})
            pipe.pexpire(keys.thread(thread), ms(THREAD_TTL))
            await pipe.execute()

    async def conversation_id(self, keys: Keys, thread: str) -> str | None:
        value = await self._redis.hget(keys.thread(thread), "conversation_id")
        return str(value) if value else None

    async def remember_context(self, keys: Keys, user: str, context: UserContext) -> None:
        await self._redis.set(keys.user_context(user), context.model_dump_json(), px=ms(CONTEXT_TTL))

    async def forget(self, keys: Keys, thread: str) -> None:
        """Drop the thread's conversation; the thread stays known, so its next message starts afresh."""
        await self._redis.hdel(keys.thread(thread), "conversation_id", "created_at")

    async def owner(self, keys: Keys, thread: str) -> tuple[bool, str | None]:
        """Whether the thread is known, and the user who started it."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.thread(thread))
            pipe.hget(keys.thread(thread), "user")
            exists, user = await pipe.execute()
        return bool(exists), (str(user) if user else None)

    async def record(self, keys: Keys, thread: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in (await self._redis.hgetall(keys.thread(thread))).items()}

    async def record_run(self, keys: Keys, thread: str, outcome: str) -> None:
        await self._redis.hset(
            keys.thread(thread), mapping={"last_run": outcome, "last_run_at": f"{time.time():.3f}"}
        )

    async def recent(self, keys: Keys, user: str, count: int) -> list[tuple[str, float, dict[str, str]]]:
        """The user's most recent threads, newest first, with each thread's record."""
        raw = await self._redis.zrevrange(keys.user_threads(user), 0, count - 1, withscores=True)
        entries = [(str(pair[0]), float(pair[1])) for pair in raw]
        async with self._redis.pipeline(transaction=False) as pipe:
            for thread, _ in entries:
                pipe.hgetall(keys.thread(str(thread)))
            records = await pipe.execute()
        return [
            (str(thread), float(score), {str(k): str(v) for k, v in record.items()})
            for (thread, score), record in zip(entries, records, strict=True)
            if record
        ]
