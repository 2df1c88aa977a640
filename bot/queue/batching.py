"""Submits that arrive together go to Redis together: one pipeline, one connection, one write and one read
for a whole burst of Slack requests, instead of a connection (and a round trip) per request.

Each submit is still its own atomic script (dedupe, spend limits, XADD, index): a pipeline only saves the
round trips, it makes nothing atomic across submits and changes nothing a submit guarantees. A request
waits at most for the pipeline in flight (one round trip) before its own goes out.
"""

from __future__ import annotations

import asyncio
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
                    _settle(call.done, exception=exc)

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
                    _settle(call.done, exception=result)
                else:
                    _settle(call.done, result=result)
            if not unknown:
                return
            # Redis restarted, or SCRIPT FLUSH: load it once and send those again.
            await self._redis.script_load(self._script.script)
            batch = unknown


# Commands never sent in a shared pipeline: those that block (a pipeline would wait for them), that change
# the connection's state, or that belong to a transaction (redis-py runs those on a pipeline of their own).
_UNBATCHED = frozenset(
    {
        "XREAD", "XREADGROUP", "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX",
        "BZMPOP", "WAIT", "WAITAOF", "WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "MONITOR", "SUBSCRIBE",
        "PSUBSCRIBE", "SSUBSCRIBE", "SHUTDOWN", "CLIENT", "SELECT", "AUTH", "HELLO", "QUIT", "RESET",
    }
)  # fmt: skip


class _Command:
    __slots__ = ("args", "done", "options")

    def __init__(self, args: tuple[Any, ...], options: dict[str, Any]) -> None:
        self.args = args
        self.options = options
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class _CommandPipe:
    """The commands callers send in one turn of the event loop, sent in one pipeline. Under a burst a
    worker's hundreds of turns each send a command at about the same moments (take the thread, record the
    response, count the usage, finish): one write and one read for all of them, instead of a round trip
    (two system calls, a pooled connection, a future) each. Nothing becomes atomic across them (each
    script is as atomic as alone), and a caller's own commands keep their order (it awaits each)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiting: list[_Command] = []
        self._sending: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    def send(self, command: _Command) -> None:
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        self._waiting.append(command)

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        for start in range(0, len(batch), MAX_BATCH):
            # A task of its own per pipeline: the next turn of the loop's commands need not wait for it.
            task = asyncio.create_task(self._send(batch[start : start + MAX_BATCH]), name="command pipeline")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Command]) -> None:
        batch = [c for c in batch if not c.done.done()]  # a caller cancelled before it went out
        if not batch:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for command in batch:
                    pipe.execute_command(*command.args, **command.options)
                results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # shutting down: so are the callers still waiting
            for command in batch:
                command.done.cancel()
            raise
        except Exception as exc:  # the connection failed: every caller gets the error
            for command in batch:
                _settle(command.done, exception=exc)
            return
        for command, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):  # that command's own error (a script's, NOSCRIPT, ...)
                _settle(command.done, exception=result)
            else:
                _settle(command.done, result=result)


class BatchingRedis(Redis):
    """redis-py's client, except that the commands sent in one turn of the event loop share a pipeline
    (`_CommandPipe`; scripts too: redis-py sends them as EVALSHA, and loads one Redis forgot on NOSCRIPT as
    before). One server or a Sentinel service's primary; a cluster's client is redis-py's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commands = _CommandPipe(self)
        self._encoder = self.get_encoder()  # type: ignore[no-untyped-call]  # (a new one per call otherwise)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.single_connection_client or str(args[0]).split(" ", 1)[0].upper() in _UNBATCHED:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        # Encoded now: an argument Redis can't take fails its own caller, not the whole pipeline.
        command = _Command((args[0], *(self._encoder.encode(a) for a in args[1:])), options)
        self._commands.send(command)
        return await command.done


def _settle(done: asyncio.Future[Any], *, result: Any = None, exception: BaseException | None = None) -> None:
    """A caller's answer, unless it gave up (was cancelled) meanwhile."""
    if done.done():
        return
    if exception is not None:
        done.set_exception(exception)
    else:
        done.set_result(result)
