"""A turn's tool loop: response → the function calls it asks for → their outputs → the next response, until
the model answers without calling anything.

Calls of one response run in parallel (the model asks for independent calls together). Each round's
response is recorded as it is created (`on_created`), so a retried turn shows the earlier rounds' text again
and resumes the last one. The loop stops after `TOOL_MAX_ROUNDS` rounds of calls or `TOOL_LOOP_SECONDS`:
the calls left are closed with an error output (an unanswered call would make every later response in the
conversation fail) and the user is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from bot.assistant.backend import (
    AssistantBackend,
    FunctionCall,
    OnCreated,
    OnUsage,
    Piece,
    RoundResult,
    Status,
    Step,
    TurnRequest,
    tool_output,
)
from bot.errors import BotError, ToolLoopStopped
from bot.files.generated import AnswerFiles, GeneratedFiles, SandboxLinks
from bot.settings import Settings
from bot.slack.citations import CitationRenderer
from bot.tools import ToolContext, ToolRegistry

log = logging.getLogger(__name__)

THINKING_STATUS = "is thinking…"
ROUND_BREAK = "\n\n"  # between the text of one response and the next


# The model names the function it calls: only a function name's own characters reach the status.
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def calling_status(calls: Sequence[FunctionCall]) -> str:
    names = list(dict.fromkeys(_NOT_IN_NAME.sub("", c.name)[:64] for c in calls))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"is calling {shown}…"


def call_title(call: FunctionCall) -> str:
    return f"Calling {_NOT_IN_NAME.sub('', call.name)[:64] or 'a tool'}"


def _failed(output_item: dict[str, Any]) -> bool:
    """Whether a call's output is the error the registry answers (`{"error": ...}`)."""
    try:
        output = json.loads(str(output_item.get("output", "")))
    except ValueError:
        return False
    return isinstance(output, dict) and set(output) == {"error"}


class ToolLoop:
    def __init__(
        self,
        backend: AssistantBackend,
        registry: ToolRegistry,
        settings: Settings,
        generated: GeneratedFiles | None = None,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._settings = settings
        self._generated = generated

    async def run(
        self,
        request: TurnRequest,
        *,
        items: list[dict[str, Any]] | None = None,
        recorded: Sequence[str] = (),
        ctx: ToolContext,
        on_created: OnCreated,
        citations: CitationRenderer | None = None,
        on_usage: OnUsage | None = None,
        open_calls: list[FunctionCall] | None = None,
    ) -> AsyncGenerator[Piece, None]:
        """Start the turn with `items` (the user's message), or carry on a retried turn whose responses
        `recorded` were already created; yield the text, progress and steps of every round. `on_usage` gets
        the tokens of every response that ends (a replayed earlier round was counted when it ended).
        `open_calls` is kept up to date with the function calls whose outputs no ended response took in
        yet (what a turn stopped midway must close)."""
        opened: list[FunctionCall] = open_calls if open_calls is not None else []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.tool_loop_seconds
        links = SandboxLinks() if self._settings.code_interpreter else None
        wrote = False
        rounds = max(0, len(recorded) - 1)  # a retried turn's earlier rounds count towards the limit
        answer_files = AnswerFiles()  # what this answer did with the files its code wrote
        for earlier in recorded[:-1]:
            text = await self._backend.replay(earlier)
            if text:
                yield (ROUND_BREAK if wrote else "") + text
                wrote = True
        while True:
            result = RoundResult()
            if recorded:
                pieces = self._backend.resume(recorded[-1], result=result)
                recorded = ()
            else:
                assert items is not None
                pieces = self._answer(request, items, on_created, result, citations, continuing=rounds > 0)
            started = False  # this round has shown text
            try:
                async with contextlib.aclosing(pieces):
                    async for piece in pieces:
                        if isinstance(piece, Status | Step):
                            yield piece
                        elif text := links.feed(piece) if links is not None else piece:
                            yield (ROUND_BREAK if wrote and not started else "") + text
                            started = True
                    if links is not None and (text := links.flush()):
                        yield (ROUND_BREAK if wrote and not started else "") + text
                        started = True
            finally:
                # Every response that ended counts, an incomplete one too (`on_usage` counts each once).
                if on_usage is not None and result.response_id and result.usage is not None:
                    await on_usage(result.response_id, result.usage)
            wrote = wrote or started
            # The round ended: the outputs it was given are in the conversation; its own calls are open.
            opened[:] = result.calls
            await self._share_files(result, ctx, citations, answer_files)
            if not result.calls:
                return
            rounds += 1
            out_of_time = loop.time() > deadline
            if rounds > self._settings.tool_max_rounds or out_of_time:
                opened.clear()  # closed by _give_up
                await self._give_up(request, result.calls, rounds - 1, out_of_time)
            yield Status(calling_status(result.calls))
            for call in result.calls:
                yield Step(call.call_id, call_title(call), "in_progress")
            items = await self._run_calls(result.calls, ctx)
            for call, item in zip(result.calls, items, strict=True):
                yield Step(call.call_id, call_title(call), "error" if _failed(item) else "complete")
            yield Status(THINKING_STATUS)

    async def _answer(
        self,
        request: TurnRequest,
        items: list[dict[str, Any]],
        on_created: OnCreated,
        result: RoundResult,
        citations: CitationRenderer | None,
        *,
        continuing: bool,
    ) -> AsyncGenerator[Piece, None]:
        created = False

        async def record(response_id: str) -> None:
            nonlocal created
            created = True
            await on_created(response_id)

        pieces = self._backend.answer(request, items, on_created=record, result=result, citations=citations)
        try:
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    yield piece
        except BotError:
            if continuing and not created:
                # The outputs never reached the conversation: add them, or its calls stay unanswered and
                # every later message in the thread would be refused.
                with contextlib.suppress(BotError):
                    await self._backend.add_items(request.conversation_id, items)
            raise

    async def _run_calls(self, calls: Sequence[FunctionCall], ctx: ToolContext) -> list[dict[str, Any]]:
        log.info("running %d tool call(s): %s", len(calls), ", ".join(c.name for c in calls))
        outputs = await asyncio.gather(*(self._registry.run(c.name, c.arguments, ctx) for c in calls))
        return [tool_output(c.call_id, out) for c, out in zip(calls, outputs, strict=True)]

    async def _give_up(
        self, request: TurnRequest, calls: Sequence[FunctionCall], rounds: int, out_of_time: bool
    ) -> None:
        """Close the calls left with an error output, then stop the turn with a clear message."""
        why = "the time limit for tools" if out_of_time else "the limit on tool calls per message"
        why = f"not run: {why} was reached"
        outputs = [tool_output(c.call_id, json.dumps({"error": why})) for c in calls]
        try:
            await self._backend.add_items(request.conversation_id, outputs)
        except BotError as exc:
            log.warning("could not close %d tool call(s): %s", len(calls), exc)
        raise ToolLoopStopped(f"stopped after {rounds} tool round(s)", rounds=rounds, out_of_time=out_of_time)

    async def _share_files(
        self, result: RoundResult, ctx: ToolContext, citations: CitationRenderer | None, answer: AnswerFiles
    ) -> None:
        if self._generated is None or ctx.thread_ts is None or not (result.files or result.containers):
            return
        await self._generated.share(
            result, channel=ctx.channel, thread_ts=ctx.thread_ts, citations=citations, answer=answer
        )
