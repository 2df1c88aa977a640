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
    ApprovalAsk,
    AssistantBackend,
    FunctionCall,
    OnCreated,
    OnUsage,
    Piece,
    RoundResult,
    Status,
    Step,
    TurnRequest,
    approval_response,
    tool_output,
)
from bot.errors import ApprovalDenied, BotError, ToolLoopStopped
from bot.files.generated import AnswerFiles, GeneratedFiles, SandboxLinks
from bot.settings import Settings
from bot.slack.citations import CitationRenderer
from bot.tools import ToolContext, ToolRegistry
from bot.tools.approvals import LOST_OUTPUT, Approvals, Decision

log = logging.getLogger(__name__)

THINKING_STATUS = "is thinking…"
APPROVAL_STATUS = "is waiting for your approval…"
ROUND_BREAK = "\n\n"  # between the text of one response and the next


# The model names the function it calls: only a function name's own characters reach the status.
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def calling_status(calls: Sequence[FunctionCall]) -> str:
    names = list(dict.fromkeys(_NOT_IN_NAME.sub("", c.name)[:64] for c in calls))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"is calling {shown}…"


def _named(name: str) -> str:
    """A tool or server name as shown: only a name's own characters."""
    return _NOT_IN_NAME.sub("", name)[:64] or "?"


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
        approvals: Approvals | None = None,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._settings = settings
        self._generated = generated
        self._approvals = approvals

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
            if not result.calls and not result.approvals:
                return
            rounds += 1
            out_of_time = loop.time() > deadline
            if rounds > self._settings.tool_max_rounds or out_of_time:
                opened.clear()  # closed by _give_up
                await self._give_up(request, result.calls, rounds - 1, out_of_time)
            asks = self._asks(result, ctx)
            decisions: dict[str, Decision] = {}
            if asks:
                waited = loop.time()
                async with contextlib.aclosing(self._ask(asks, ctx, decisions)) as asking:
                    async for piece in asking:
                        yield piece
                deadline += loop.time() - waited  # waiting for a person is not the tools' time
            items = [approval_response(a.id, decisions[a.id] == "approved") for a in result.approvals]
            if any(d != "approved" for d in decisions.values()):
                opened.clear()  # closed by _refuse
                await self._refuse(request, result.calls, items, asks, decisions)
            if result.calls:
                yield Status(calling_status(result.calls))
                for call in result.calls:
                    yield Step(call.call_id, call_title(call), "in_progress")
                approved = {a.id for a in asks} - {a.id for a in result.approvals}
                outputs = await self._run_calls(result.calls, ctx, approved)
                for call, item in zip(result.calls, outputs, strict=True):
                    yield Step(call.call_id, call_title(call), "error" if _failed(item) else "complete")
                items += outputs
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

    def _asks(self, result: RoundResult, ctx: ToolContext) -> list[ApprovalAsk]:
        """What of this round waits for the asker's yes: the hosted servers' approval requests, and the
        calls of bot-side MCP tools that need one (keyed by call id, stable across retries). A call of a
        tool the turn did not offer is not asked about: the registry refuses it."""
        asks = list(result.approvals)
        for call in result.calls:
            offered = ctx.offered is None or call.name in ctx.offered
            if offered and not ctx.external and self._registry.needs_approval(call.name):
                server, _, tool = call.name.partition("__")
                asks.append(ApprovalAsk(call.call_id, server, tool, call.arguments))
        return asks

    async def _ask(
        self, asks: list[ApprovalAsk], ctx: ToolContext, decisions: dict[str, Decision]
    ) -> AsyncGenerator[Piece, None]:
        """Ask for each call in turn (a denial ends the round: the rest are not asked)."""
        yield Status(APPROVAL_STATUS)
        for ask in asks:
            title = f"Waiting for approval: {_named(ask.server)}.{_named(ask.tool)}"
            yield Step(ask.id, title, "pending")
            if self._approvals is None or ctx.keys is None or ctx.turn_id is None:
                decision: Decision = "timed_out"
            else:
                decision = await self._approvals.decide(
                    ctx.keys, ctx.turn_id, ask, user=ctx.user_id, channel=ctx.channel, thread_ts=ctx.thread_ts
                )
            decisions[ask.id] = decision
            yield Step(ask.id, title, "complete" if decision == "approved" else "error")
            if decision != "approved":
                break
        for ask in asks:
            decisions.setdefault(ask.id, "denied")  # not asked: a call before it was refused

    async def _refuse(
        self,
        request: TurnRequest,
        calls: Sequence[FunctionCall],
        answers: list[dict[str, Any]],
        asks: list[ApprovalAsk],
        decisions: dict[str, Decision],
    ) -> None:
        """A call was denied (or not answered in time): every call of the round is closed unrun, the
        approval requests answered no, and the answer ends with a note saying why."""
        refused = next(a for a in asks if decisions[a.id] != "approved")
        why = "the user did not approve it" if decisions[refused.id] == "timed_out" else "the user denied it"
        outputs = [tool_output(c.call_id, json.dumps({"error": f"not run: {why}"})) for c in calls]
        try:
            await self._backend.add_items(request.conversation_id, answers + outputs)
        except BotError as exc:
            log.warning("could not close %d refused call(s): %s", len(answers + outputs), exc)
        tool = f"`{_NOT_IN_NAME.sub('', refused.tool)[:64]}` on `{_NOT_IN_NAME.sub('', refused.server)[:64]}`"
        if decisions[refused.id] == "timed_out":
            seconds = self._settings.mcp_approval_seconds
            within = f"{seconds:g} second(s)" if seconds < 120 else f"{round(seconds / 60)} minutes"
            message = f"No one approved {tool} within {within}: it was not run and I stopped here."
        else:
            message = f"You denied {tool}: it was not run and I stopped here."
        raise ApprovalDenied(f"approval {refused.id}: {decisions[refused.id]}", user_message=message)

    async def _run_calls(
        self, calls: Sequence[FunctionCall], ctx: ToolContext, approved: set[str]
    ) -> list[dict[str, Any]]:
        log.info("running %d tool call(s): %s", len(calls), ", ".join(c.name for c in calls))
        outputs = await asyncio.gather(*(self._run_call(c, ctx, once=c.call_id in approved) for c in calls))
        return [tool_output(c.call_id, out) for c, out in zip(calls, outputs, strict=True)]

    async def _run_call(self, call: FunctionCall, ctx: ToolContext, *, once: bool) -> str:
        """One call's output. An approved call runs once across the turn's attempts: a retry after a crash
        gets the kept output (or an error, when the attempt that ran it died before it ended)."""
        if not once or self._approvals is None or ctx.keys is None or ctx.turn_id is None:
            return await self._registry.run(call.name, call.arguments, ctx)
        kind, kept = await self._approvals.run_once(ctx.keys, ctx.turn_id, call.call_id)
        if kind != "run":
            log.info("approved call %s: %s by an earlier attempt, not run again", call.call_id, kind)
            return kept if kind == "ran" else LOST_OUTPUT
        output = await self._registry.run(call.name, call.arguments, ctx)
        await self._approvals.ran(ctx.keys, ctx.turn_id, call.call_id, output)
        return output

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
