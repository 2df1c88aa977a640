"""Assistant threads held in Redis (issue 17), for servers with no Conversations API: a thread's items
(user and assistant messages, function calls and their outputs) are a Redis list under the workspace's
keys, and each turn sends them, trimmed to HISTORY_TOKEN_BUDGET, with the turn's input. The request itself
goes out through a dialect: `held_responses` (/v1/responses, store=false) or `chat` (/v1/chat/completions).

Exactly once, crash or not: a response is first written down as *pending* (its request and input) and its
id handed to the turn (`on_created`), then run; its input and output join the thread in one Lua script
that only a pending response passes. A turn retried after its worker died resumes the recorded response:
a done one is shown from Redis, a pending one is run again from the same history, so nothing is added
twice and nothing is lost.

Ids carry their workspace, so every call finds its keys: `hconv.<enterprise>.<team>.<hex>` for a thread,
`<thread id>.<hex>` for a response.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import openai
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.assistant import tokens
from bot.assistant.backend import (
    Annotator,
    ConversationInfo,
    FunctionCall,
    ItemLine,
    OnCreated,
    Piece,
    RoundResult,
    TurnItems,
    TurnRequest,
)
from bot.assistant.conversations import COUNT_CAP, RECENT_ITEMS, TURN_ITEMS_LIMIT, _cut
from bot.errors import (
    BotError,
    ContextTooLong,
    MetadataError,
    NoAssistantThread,
    NotOnThisServer,
    ResponseVanished,
    StoreUnavailable,
)
from bot.keys import HELD_RESPONSE_TTL, HELD_THREAD_TTL, Keys, ms
from bot.settings import Settings

log = logging.getLogger(__name__)

# A server's stream that breaks mid-answer (a dropped connection, a malformed event): nothing was kept on the
# server, so the answer is asked again.
STREAM_BREAKS = (openai.APIConnectionError, httpx2.HTTPError, OSError, ValueError)

THREAD_PREFIX = "hconv"
# OpenAI's metadata limits, kept for held threads too (spec: `Metadata`): 16 pairs, keys <= 64
# characters, values <= 512.
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512

# A pending response's input and output join the thread once: KEYS response, items, thread; ARGV state,
# text, calls, thread TTL ms, response TTL ms, entries… -> 1 committed, 0 not pending, -1 thread gone.
_COMMIT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'orphaned')
  return -1
end
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'text', ARGV[2], 'calls', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
"""

# Items a turn adds itself (a refusal's or a stopped loop's outputs), at most once and only to a thread
# that is still there: a retried turn adds them again, and a reset thread must stay gone. A batch whose
# outputs the thread holds already adds nothing (its other items went with them); otherwise every item
# but an output already there goes. KEYS items, thread; ARGV thread TTL ms, entries… -> items added, -1
# thread gone.
_ADD = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local answered = {}
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  -- Only entries that may be outputs are decoded (not every message, images inline and all).
  if string.find(raw, 'function_call_output', 1, true) then
    local item = cjson.decode(raw)['item']
    if item['type'] == 'function_call_output' then answered[tostring(item['call_id'])] = true end
  end
end
local outputs, repeated = 0, 0
for i = 2, #ARGV do
  local item = cjson.decode(ARGV[i])['item']
  if item['type'] == 'function_call_output' then
    outputs = outputs + 1
    if answered[tostring(item['call_id'])] then repeated = repeated + 1 end
  end
end
if outputs > 0 and repeated == outputs then return 0 end
local added = 0
for i = 2, #ARGV do
  local item = cjson.decode(ARGV[i])['item']
  local output = item['type'] == 'function_call_output'
  if not (output and answered[tostring(item['call_id'])]) then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    added = added + 1
    if output then answered[tostring(item['call_id'])] = true end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return added
"""


def thread_keys(conversation_id: str) -> Keys:
    """The workspace a held thread (or one of its responses) belongs to, read from its id."""
    parts = conversation_id.split(".")
    if len(parts) < 4 or parts[0] != THREAD_PREFIX:
        raise NoAssistantThread(f"not a held thread: {conversation_id[:40]}")
    enterprise, team = parts[1], parts[2]
    return Keys(team, None if enterprise == "-" else enterprise)


def _thread_of(response_id: str) -> str:
    return response_id.rsplit(".", 1)[0]


def _entry(item: dict[str, Any]) -> str:
    kind = str(item.get("type", "item"))
    return json.dumps({"id": f"{kind[:4]}_{secrets.token_hex(12)}", "item": item}, separators=(",", ":"))


@dataclass
class Pending:
    """A response written down before it runs: what it sends, besides the thread's history."""

    conversation_id: str
    model: str
    instructions: str
    user_key: str
    tools: list[dict[str, Any]]
    input: list[dict[str, Any]]
    state: str = "pending"
    text: str = ""
    calls: list[FunctionCall] = field(default_factory=list)


class HeldBackend(abc.ABC):
    """`AssistantBackend` with the threads in Redis; a subclass speaks one server API (`_generate`)."""

    # What the README and the logs call it.
    api = ""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._commit = redis.register_script(_COMMIT)
        self._add = redis.register_script(_ADD)

    # ---- threads -------------------------------------------------------------------------------------

    async def create_conversation(self, metadata: dict[str, str], *, keys: Keys | None = None) -> str:
        keys = keys or Keys(metadata.get("slack_team") or "-")
        workspace = f"{keys.enterprise_id or '-'}.{keys.team_id}"
        conversation_id = f"{THREAD_PREFIX}.{workspace}.{secrets.token_hex(12)}"
        _check_metadata(metadata)
        key = keys.held_thread(conversation_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                created = str(int(time.time()))
                pipe.hset(key, mapping={"created_at": created, "metadata": json.dumps(metadata)})
                pipe.pexpire(key, ms(HELD_THREAD_TTL))
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"held thread: {type(exc).__name__}") from exc
        return conversation_id

    async def delete_conversation(self, conversation_id: str) -> None:
        keys = thread_keys(conversation_id)
        held = (keys.held_thread(conversation_id), keys.held_items(conversation_id))
        await self._call(self._redis.delete(*held))

    async def info(self, conversation_id: str) -> ConversationInfo:
        raw = await self._call(self._redis.hgetall(thread_keys(conversation_id).held_thread(conversation_id)))
        if not raw:
            raise NoAssistantThread(f"held thread {conversation_id} not found")
        metadata = json.loads(raw.get("metadata") or "{}")
        return ConversationInfo(conversation_id, int(raw.get("created_at") or 0), metadata)

    async def set_metadata(self, conversation_id: str, metadata: dict[str, str]) -> None:
        _check_metadata(metadata)
        key = thread_keys(conversation_id).held_thread(conversation_id)
        # Only an existing thread: HSET would bring a deleted one back with metadata and nothing else.
        if not await self._call(self._redis.exists(key)):
            raise NoAssistantThread(f"held thread {conversation_id} not found")
        await self._call(self._redis.hset(key, "metadata", json.dumps(metadata)))

    async def newest_items(self, conversation_id: str, limit: int) -> list[ItemLine]:
        entries = await self._entries(conversation_id, limit)
        return [_line(e["item"]) for e in reversed(entries)]

    async def count_items(self, conversation_id: str) -> int:
        key = thread_keys(conversation_id).held_items(conversation_id)
        return min(COUNT_CAP, int(await self._call(self._redis.llen(key))))

    async def holds_message(self, conversation_id: str, text: str) -> bool:
        for entry in reversed(await self._entries(conversation_id, RECENT_ITEMS)):
            item = entry["item"]
            if item.get("type") != "message":
                continue
            if item.get("role") == "assistant":
                return False
            return any(str(p.get("text") or "").startswith(text) for p in item.get("content") or [])
        return False

    async def add_items(self, conversation_id: str, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        keys = thread_keys(conversation_id)
        added = await self._call(
            self._add(
                keys=[keys.held_items(conversation_id), keys.held_thread(conversation_id)],
                args=[ms(HELD_THREAD_TTL), *(_entry(i) for i in items)],
            )
        )
        if added == -1:
            log.warning("held thread %s is gone (reset meanwhile): %d items not added", conversation_id,
                        len(items))  # fmt: skip
        elif added < len(items):
            log.info("held thread %s: %d of %d items were there already", conversation_id,
                     len(items) - added, len(items))  # fmt: skip

    # The thread is in Redis: the turn that just ended is read at once, cheaply.
    defers_turn_items = False

    async def turn_items(self, conversation_id: str, response_ids: Sequence[str] = ()) -> TurnItems | None:
        if response_ids:
            return None  # never recorded that way here: a held turn's items are read when it ends
        answer: list[str] = []
        for entry in reversed(await self._entries(conversation_id, TURN_ITEMS_LIMIT)):
            item = entry["item"]
            if item.get("type") == "message" and item.get("role") == "user":
                return TurnItems(user=[entry["id"]], answer=list(reversed(answer)))
            answer.append(entry["id"])
        return None

    async def delete_items(self, conversation_id: str, item_ids: list[str]) -> int:
        key = thread_keys(conversation_id).held_items(conversation_id)
        wanted = set(item_ids)
        deleted = 0
        for raw in await self._call(self._redis.lrange(key, 0, -1)):
            if json.loads(raw)["id"] in wanted:
                deleted += int(await self._call(self._redis.lrem(key, 1, raw)))
        return deleted

    async def _entries(self, conversation_id: str, newest: int | None = None) -> list[dict[str, Any]]:
        """The thread's entries, oldest first (only the newest `newest` of them when given)."""
        key = thread_keys(conversation_id).held_items(conversation_id)
        start = -newest if newest else 0
        return [json.loads(raw) for raw in await self._call(self._redis.lrange(key, start, -1))]

    @staticmethod
    async def _call(pending: Any) -> Any:
        try:
            return await pending
        except RedisError as exc:
            raise StoreUnavailable(f"held thread: {type(exc).__name__}") from exc

    # ---- responses -----------------------------------------------------------------------------------

    async def answer(
        self,
        turn: TurnRequest,
        items: list[dict[str, Any]],
        *,
        on_created: OnCreated,
        result: RoundResult,
        citations: Annotator | None = None,
    ) -> AsyncGenerator[Piece, None]:
        hosted = sorted({str(t.get("type")) for t in turn.tools if t.get("type") != "function"})
        if hosted or turn.knowledge_ids:
            raise NotOnThisServer(f"{self.api}: asked for {', '.join(hosted) or 'knowledge stores'}")
        pending = Pending(
            conversation_id=turn.conversation_id,
            model=turn.model or self._settings.assistant_model,
            instructions=turn.instructions,
            user_key=turn.user_key,
            tools=list(turn.tools),
            input=list(items),
        )
        response_id = f"{turn.conversation_id}.{secrets.token_hex(12)}"
        await self._write_pending(response_id, pending)
        await on_created(response_id)
        async with contextlib.aclosing(self._run(response_id, pending, result, citations)) as pieces:
            async for piece in pieces:
                yield piece

    async def resume(self, response_id: str, *, result: RoundResult) -> AsyncGenerator[Piece, None]:
        """A recorded response: shown from Redis when it is done, run again when it never finished."""
        pending = await self._read(response_id)
        if pending.state == "pending":
            log.info("held response %s never finished; running it again", response_id)
            async with contextlib.aclosing(self._run(response_id, pending, result, None)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        if pending.state != "done":  # failed or stopped: nothing of it to show; the turn asks again
            raise ResponseVanished(f"held response {response_id} ended {pending.state}")
        result.response_id = response_id
        result.calls.extend(pending.calls)
        if pending.text:
            yield pending.text

    async def replay(self, response_id: str) -> str:
        return (await self._read(response_id)).text

    async def cancel(self, response_id: str) -> None:
        """A stopped response adds nothing to the thread, as a cancelled response adds nothing to an
        OpenAI conversation (the turn closes the calls it left open itself)."""
        try:
            pending = await self._read(response_id)
            await self._finish(response_id, pending, "cancelled", "", [], add_input=False)
        except (ResponseVanished, StoreUnavailable, NoAssistantThread) as exc:
            log.warning("held response %s not cancelled: %s", response_id, type(exc).__name__)

    async def _run(
        self, response_id: str, pending: Pending, result: RoundResult, citations: Annotator | None
    ) -> AsyncGenerator[Piece, None]:
        output: list[dict[str, Any]] = []
        text: list[str] = []
        result.response_id = response_id
        try:
            # Inside the `try`: a turn's input too long to send (a large tool output, say) must still
            # close the calls it answers, or the thread is stuck with an unanswered call.
            request = await self._request(pending)
            async with contextlib.aclosing(self._generate(request, result, output, citations)) as pieces:
                async for piece in pieces:
                    if isinstance(piece, str):
                        text.append(piece)
                    yield piece
        except BotError:
            # A failed response adds nothing, but the outputs it was given: the calls they answer are in
            # the thread already, and a call left unanswered would make every later request fail.
            outputs = [i for i in pending.input if i.get("type") == "function_call_output"]
            await self._finish(response_id, pending, "failed", "", outputs, add_input=False)
            raise
        result.response_id = response_id  # ours, not the server's (which kept nothing)
        if not await self._finish(response_id, pending, "done", "".join(text), output, result.calls):
            # Another run of this response (a retried turn) ended it first, or the turn was stopped: the
            # calls this run got are not in the thread, so the tool loop goes on with the ones that are (the
            # committed run's; none when it was stopped or failed).
            result.calls[:] = (await self._read(response_id)).calls

    async def _request(self, pending: Pending) -> _Request:
        """The thread's history, trimmed to the budget, and the turn's input; ContextTooLong when even
        the input (with the turn's own question and calls, which its outputs can't go without) is over."""
        history = [e["item"] for e in await self._entries(pending.conversation_id)]
        budget = self._settings.history_token_budget
        # Loading an encoding and counting a long history take a while: off the event loop, which meanwhile
        # acks Slack and streams other turns.
        count = await asyncio.to_thread(tokens.counter, pending.model)
        context, used = await asyncio.to_thread(
            tokens.trim, history, pending.input, pending.instructions, budget, count
        )
        if used > budget:
            raise ContextTooLong(f"{self.api}: the turn's own input is {used} tokens, over {budget}")
        if len(context) < len(history):
            log.info("held thread %s: sent %d of %d items (%d tokens)", pending.conversation_id,
                     len(context), len(history), used)  # fmt: skip
        taken = {str(i["call_id"]) for i in [*history, *pending.input] if i.get("type") == "function_call"}
        return _Request(pending, [*context, *pending.input], frozenset(taken))

    async def _finish(
        self,
        response_id: str,
        pending: Pending,
        state: str,
        text: str,
        output: list[dict[str, Any]],
        calls: list[FunctionCall] | None = None,
        *,
        add_input: bool = True,
    ) -> bool:
        """End a pending response once: `state`, and (done) its input and `output` join the thread.
        False when another run ended it first."""
        keys = thread_keys(pending.conversation_id)
        entries = [_entry(i) for i in [*(pending.input if add_input else []), *output]]
        encoded_calls = json.dumps([[c.call_id, c.name, c.arguments] for c in calls or []])
        committed = await self._call(
            self._commit(
                keys=[
                    keys.held_response(response_id),
                    keys.held_items(pending.conversation_id),
                    keys.held_thread(pending.conversation_id),
                ],
                args=[state, text, encoded_calls, ms(HELD_THREAD_TTL), ms(HELD_RESPONSE_TTL), *entries],
            )
        )
        if committed == 0:
            log.warning("held response %s was already %s elsewhere", response_id, state)
        elif committed == -1:
            log.warning("held response %s: its thread is gone (reset meanwhile)", response_id)
        return bool(committed != 0)

    async def _write_pending(self, response_id: str, pending: Pending) -> None:
        key = thread_keys(pending.conversation_id).held_response(response_id)
        fields: dict[str | bytes, str] = {
            "state": "pending",
            "conversation_id": pending.conversation_id,
            "model": pending.model,
            "instructions": pending.instructions,
            "user_key": pending.user_key,
            "tools": json.dumps(pending.tools),
            "input": json.dumps(pending.input),
        }
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=cast(Any, fields))
                pipe.pexpire(key, ms(HELD_RESPONSE_TTL))
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"held response: {type(exc).__name__}") from exc

    async def _read(self, response_id: str) -> Pending:
        key = thread_keys(_thread_of(response_id)).held_response(response_id)
        raw = await self._call(self._redis.hgetall(key))
        if not raw:
            raise ResponseVanished(f"held response {response_id} is gone")
        return Pending(
            conversation_id=raw["conversation_id"],
            model=raw["model"],
            instructions=raw["instructions"],
            user_key=raw["user_key"],
            tools=json.loads(raw["tools"]),
            input=json.loads(raw["input"]),
            state=raw["state"],
            text=raw.get("text", ""),
            calls=[FunctionCall(*c) for c in json.loads(raw.get("calls") or "[]")],
        )

    @abc.abstractmethod
    def _generate(
        self,
        request: _Request,
        result: RoundResult,
        output: list[dict[str, Any]],
        citations: Annotator | None,
    ) -> AsyncGenerator[Piece, None]:
        """Run one response on the server: yield its text and steps; fill `result` (calls, usage) and
        `output` (the items to keep, in the Responses input shape) once it completed. Raises the
        `AssistantUnavailable` family; a stream that broke raises ResponseVanished (there is nothing on
        the server to resume: the turn asks again)."""


@dataclass(frozen=True)
class _Request:
    pending: Pending
    items: list[dict[str, Any]]  # the trimmed history and the turn's input
    call_ids: frozenset[str] = frozenset()  # the thread's calls so far (all of them, trimmed or not)

    @property
    def function_tools(self) -> list[dict[str, Any]]:
        return [t for t in self.pending.tools if t.get("type") == "function"]


def own_call_id(call_id: str, taken: set[str]) -> str:
    """The server's id for a call, or one of ours when it gave none or one the thread or this response
    has already (servers may send none, or number them "0", "1"… every time): the thread's outputs and the
    turn's approvals (keyed by call id) must find exactly one call. Adds it to `taken`."""
    if not call_id or call_id in taken:
        call_id = f"call_{secrets.token_hex(12)}"
    taken.add(call_id)
    return call_id


def _check_metadata(metadata: dict[str, str]) -> None:
    """OpenAI's limits, told to the user as the checks before a write tell them (no key or value quoted:
    this layer has no Slack escaping, and the rule is what they need)."""
    problems: list[str] = []
    if len(metadata) > METADATA_PAIRS:
        problems.append(f"That makes {len(metadata)} metadata pairs; the limit is {METADATA_PAIRS}.")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            problems.append(f"A key is {len(key)} characters; the limit is {METADATA_KEY_CHARS}.")
        if len(str(value)) > METADATA_VALUE_CHARS:
            problems.append(f"A value is {len(str(value))} characters; the limit is {METADATA_VALUE_CHARS}.")
    if problems:
        raise MetadataError(problems)


def _line(item: dict[str, Any]) -> ItemLine:
    kind = str(item.get("type", "item"))
    if kind != "message":
        return ItemLine(role=kind.replace("_", " "), text="")
    content = item.get("content")
    parts = content if isinstance(content, list) else [{"type": "input_text", "text": str(content or "")}]
    texts = [str(p["text"]) for p in parts if p.get("text")]
    others = [str(p.get("type", "")) for p in parts if not p.get("text")]
    text = " ".join(texts) + "".join(f" [{o.replace('_', ' ')}]" for o in others)
    return ItemLine(role=str(item.get("role", "message")), text=_cut(text.strip()))


def assistant_message(text: str) -> dict[str, Any]:
    """An answer as the thread keeps it (the Responses input shape of an assistant message)."""
    # The spec's OutputTextContent requires `annotations` and `logprobs` when the item goes back as input.
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "role": "assistant", "content": [part]}


def function_call(call: FunctionCall) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}
