"""Submits that arrive together go to Redis together: one pipeline, one connection, one write and one read
for a whole burst of Slack requests, instead of a connection (and a round trip) per request.

Each submit is still its own atomic script (dedupe, spend limits, XADD, index): a pipeline only saves the
round trips, it makes nothing atomic across submits and changes nothing a submit guarantees. A request
waits at most for the pipeline in flight (one round trip) before its own goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

# Requests sent in one pipeline at most (a burst larger than this goes in several, back to back).
MAX_BATCH = 500


@dataclass
class _Call:
    keys: list[str]
    args: list[Any]
    member: str
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ScriptBatcher:
    """Runs one Lua script (and SADDs its caller's member to a registry set after it) for many callers,
    pipelined: `await run(keys, args, member)` answers with that caller's script result."""

    def __init__(self, redis: Redis, script: str, registry_key: str) -> None:
        self._redis = redis
        self._script = redis.register_script(script)
        self._registry_key = registry_key
        self._waiting: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def run(self, keys: list[str], args: list[Any], member: str) -> Any:
        call = _Call(keys, args, member)
        self._waiting.append(call)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all(), name="submit pipeline")
        return await call.done

    async def _send_all(self) -> None:
        # One turn of the event loop first: the requests read in the same turn join this pipeline.
        await asyncio.sleep(0)
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            batch = [c for c in batch if not c.done.done()]  # a caller that gave up (cancelled)
            if not batch:
                continue
            try:
                await self._send(batch)
            except Exception as exc:  # every caller of the batch gets the error
                for call in batch:
                    if not call.done.done():
                        call.done.set_exception(exc)

    async def _send(self, batch: list[_Call]) -> None:
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.evalsha(self._script.sha, len(call.keys), *call.keys, *call.args)
                # After the scripts, so a worker that sees the member also finds what they wrote.
                for member in dict.fromkeys(c.member for c in batch):
                    pipe.sadd(self._registry_key, member)
                results = await pipe.execute(raise_on_error=False)
            unknown = []
            for call, result in zip(batch, results, strict=False):
                if isinstance(result, NoScriptError) and attempt == 0:
                    unknown.append(call)
                elif isinstance(result, Exception):
                    _settle(call, exception=result)
                else:
                    _settle(call, result=result)
            if not unknown:
                return
            # Redis restarted, or SCRIPT FLUSH: load it once and send those again.
            await self._redis.script_load(self._script.script)
            batch = unknown


def _settle(call: _Call, *, result: Any = None, exception: BaseException | None = None) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):  # the caller was cancelled meanwhile
        if exception is not None:
            call.done.set_exception(exception)
        else:
            call.done.set_result(result)
