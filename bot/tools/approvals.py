"""Approvals in Slack (issue 16): a tool call that needs a person's yes waits for the one who asked.

The turn posts an Approve / Deny message in its Slack thread and waits; the state is a hash in Redis
(`Keys.approval`, by turn and call: a call id alone may repeat), so a turn retried on another worker finds
the request (no second message) and its answer; a request stored for another asker or place is never taken
as this one's answer. Only the asker's click decides (anyone else is told, ephemerally, that it is not
theirs); the first decision wins, and no answer within MCP_APPROVAL_SECONDS is a Deny: a click after the
deadline ends the request as timed out (one script checks both). The turn reads the decision by polling its
hash: a click may land on any replica, and a poll survives a worker restart with nothing to re-arm. An
approved bot-side call runs once: the hash records that it started and keeps its output, so a retried turn
reuses the output instead of running (say) a deploy twice.

Nothing secret is kept: the hash holds who asked, where, the server and tool names, the deadline and an
approved call's output; the arguments are shown in the message only (made inert), never stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant.backend import ApprovalAsk
from bot.keys import APPROVAL_KEPT, Keys
from bot.models import Workspace
from bot.ops.metrics import Metrics
from bot.slack.client import SLACK_CALL_ERRORS, slack_error
from bot.slack.ephemeral import Ephemeral
from bot.slack.events import workspace_of
from bot.slack.inert import escape_mrkdwn

log = logging.getLogger(__name__)

APPROVE_ACTION = "mcp_approve"
DENY_ACTION = "mcp_deny"
APPROVAL_BLOCK = "mcp_approval"
# Slack's limit on a button's value (docs.slack.dev/reference/block-kit/block-elements/button-element).
VALUE_MAX_CHARS = 2000
# What the message shows of the call's arguments (the model's text), at most.
SHOWN_ARGUMENTS = 300  # escaped, even all `&`, the section stays within 3000 characters
POLL_SECONDS = 0.25
VALUE_SEP = "|"  # between the turn id (channel:ts, never a `|`) and the call id in a button's value

NOT_YOURS = "Only <@{user}> can answer this request: they asked the question."
ALREADY = "This request was already answered."
GONE = "This request is no longer waiting for an answer."
NOT_RECORDED = "Sorry, I couldn't record your answer just now. Please try again."

Decision = Literal["approved", "denied", "timed_out"]
DECISIONS: tuple[Decision, ...] = ("approved", "denied", "timed_out")


def _tool(ask: ApprovalAsk) -> str:
    return f"`{escape_mrkdwn(ask.tool)[:64]}` on `{escape_mrkdwn(ask.server)[:64]}`"


def _arguments(arguments: str) -> str:
    shown = arguments if len(arguments) <= SHOWN_ARGUMENTS else arguments[: SHOWN_ARGUMENTS - 1] + "…"
    # Inert inside a code block: no mention, link or early end of the block.
    return escape_mrkdwn(shown).replace("```", "'''")


def fallback_text(ask: ApprovalAsk) -> str:
    """The message's `text` (notifications, clients without blocks): the names inert, like the blocks'."""
    return f"May I run {_tool(ask)}? Approve or deny."


def button_value(turn_id: str, ask_id: str) -> str:
    """What a button carries: the turn and the call (a call id alone may repeat across turns)."""
    return f"{turn_id}{VALUE_SEP}{ask_id}"


def request_blocks(ask: ApprovalAsk, user: str, turn_id: str) -> list[dict[str, Any]]:
    """The question with its Approve / Deny buttons (each carries the turn's and the request's ids)."""
    value = button_value(turn_id, ask.id)
    text = f"<@{user}>, may I run {_tool(ask)}?\n```{_arguments(ask.arguments or '{}')}```"
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "block_id": APPROVAL_BLOCK,
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION,
                    "text": {"type": "plain_text", "text": "Deny"},
                    "style": "danger",
                    "value": value,
                },
            ],
        },
    ]


def outcome_text(decision: Decision, tool: str, by: str | None) -> str:
    if decision == "approved":
        return f":white_check_mark: <@{by}> approved {tool}."
    if decision == "denied":
        return f":no_entry_sign: <@{by}> denied {tool}: it was not run."
    return f":hourglass: No answer in time for {tool}: it was not run."


@dataclass(frozen=True)
class ApprovalClick:
    """An Approve / Deny click, read from its `block_actions` payload."""

    workspace: Workspace
    user: str
    channel: str
    message_ts: str
    thread_ts: str | None
    turn_id: str
    ask_id: str
    approve: bool


def parse_approval_click(body: Mapping[str, Any], context: Mapping[str, Any]) -> ApprovalClick | None:
    """The click, or None when the payload can't be read as one."""
    actions = body.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], Mapping) else {}
    kind = action.get("action_id")
    value = action.get("value")
    workspace = workspace_of(body, context)
    user = _field(body.get("user"), "id")
    container = body.get("container")
    channel = _field(body.get("channel"), "id") or _field(container, "channel_id")
    message_ts = _field(body.get("message"), "ts") or _field(container, "message_ts")
    turn_id, sep, ask_id = value.partition(VALUE_SEP) if isinstance(value, str) else ("", "", "")
    if (
        kind not in (APPROVE_ACTION, DENY_ACTION)
        or not isinstance(value, str)
        or not 0 < len(value) <= VALUE_MAX_CHARS
        or not (sep and turn_id)
        or workspace is None
        or not (user and channel and message_ts)
    ):
        log.info("ignored an approval click that can't be read")
        return None
    thread_ts = _field(body.get("message"), "thread_ts") or _field(container, "thread_ts")
    return ApprovalClick(
        workspace, user, channel, message_ts, thread_ts, turn_id, ask_id, kind == APPROVE_ACTION
    )


def _field(container: object, key: str) -> str | None:
    value = container.get(key) if isinstance(container, Mapping) else None
    return value if isinstance(value, str) and value else None


# KEYS: the approval. ARGV: decision, who ('' for none), now (epoch ms), kept (ms after `expires`).
# The first decision wins, recorded with who made it at once; a click at or after the deadline records
# `timed_out` instead (returns 2). The key keeps a TTL even when it had vanished and is written anew.
_DECIDE = """
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0') or 0
local decision, result = ARGV[1], 1
if decision ~= 'timed_out' and tonumber(ARGV[3]) >= expires then
  decision, result = 'timed_out', 2
end
if redis.call('HSETNX', KEYS[1], 'decision', decision) == 0 then
  return 0
end
if result == 1 and ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'by', ARGV[2])
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIREAT', KEYS[1], math.max(expires, tonumber(ARGV[3])) + tonumber(ARGV[4]))
end
return result
"""

# KEYS: the approval. ARGV: TTL (ms) for a key that has none. The approved call runs once: returns its
# kept output (1: a retry reuses it), or 2 when `ran` was set already (an attempt started it and died), or
# 0 when this attempt set `ran` and runs it.
_RUN_ONCE = """
local output = redis.call('HGET', KEYS[1], 'output')
if output then
  return {1, output}
end
if redis.call('HSETNX', KEYS[1], 'ran', '1') == 0 then
  return {2, ''}
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {0, ''}
"""

# What of an approved call's output is kept for a retry (it reaches the model whole the first time).
KEPT_OUTPUT_CHARS = 64_000
LOST_OUTPUT = '{"error": "this call was started by an earlier attempt that ended before it finished: its '
LOST_OUTPUT += 'result is unknown and it was not run again"}'

RunOnce = Literal["run", "ran", "lost"]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Approvals:
    def __init__(
        self,
        redis: Redis,
        client: AsyncWebClient,
        *,
        seconds: float,
        metrics: Metrics | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._redis = redis
        self._client = client
        self._ephemeral = Ephemeral(client)
        self._seconds = seconds
        self._poll = poll_seconds
        self._decide = redis.register_script(_DECIDE)
        self._run_once = redis.register_script(_RUN_ONCE)

    async def decide(
        self, keys: Keys, turn_id: str, ask: ApprovalAsk, *, user: str, channel: str, thread_ts: str | None
    ) -> Decision:
        """Ask `user` in the thread (once, whichever attempt of the turn asks) and wait for the answer."""
        key = keys.approval(turn_id, ask.id)
        expires = _ms(time.time() + self._seconds)
        fields = {"user": user, "channel": channel, "thread_ts": thread_ts or "", "server": ask.server}
        # Each field set once, together: a retried turn keeps the first attempt's asker and deadline.
        async with self._redis.pipeline(transaction=True) as pipe:
            for name, value in {**fields, "tool": ask.tool, "expires": str(expires)}.items():
                pipe.hsetnx(key, name, value)
            await pipe.execute()
        state = await self._state(key)
        kept = int(state.get("expires") or expires) + _ms(APPROVAL_KEPT.total_seconds())
        await self._redis.pexpireat(key, kept)
        if any(state.get(name) != value for name, value in fields.items()) or state.get("tool") != ask.tool:
            # Another asker's or place's request under this key: never its answer (nor a second question).
            log.warning("approval %s: the stored request is another one's: refused", ask.id)
            return "denied"
        if not state.get("message_ts"):
            # First ask, or the attempt that asked died before it posted: post the question now.
            posted = await self._post(ask, turn_id, user, channel, thread_ts)
            if posted:
                await self._redis.hset(key, "message_ts", posted)
        return await self._wait(key, ask, channel)

    async def _wait(self, key: str, ask: ApprovalAsk, channel: str) -> Decision:
        while True:
            state = await self._state(key)
            decision = state.get("decision")
            for known in DECISIONS:
                if decision == known:
                    log.info("approval %s: %s", ask.id, known)
                    return known
            expires = int(state.get("expires") or 0)
            now = _ms(time.time())
            if now >= expires:
                if await self._decide(keys=[key], args=["timed_out", "", now, self._kept_ms]):
                    self._metrics.approval("timed_out")  # counted once: by the attempt that ended it
                    await self._show(
                        channel, state.get("message_ts"), outcome_text("timed_out", _tool(ask), None)
                    )
                continue  # a click may have won the race: read what was decided
            await asyncio.sleep(self._poll)

    @property
    def _kept_ms(self) -> int:
        return _ms(APPROVAL_KEPT.total_seconds())

    async def run_once(self, keys: Keys, turn_id: str, call_id: str) -> tuple[RunOnce, str]:
        """Whether this approved call may run now ("run"), already ran (its kept output), or was started by
        an attempt that died ("lost": it is not run twice, a deploy could be)."""
        found, output = await self._run_once(keys=[keys.approval(turn_id, call_id)], args=[self._kept_ms])
        kind: RunOnce = ("run", "ran", "lost")[int(found)]
        return kind, str(output)

    async def ran(self, keys: Keys, turn_id: str, call_id: str, output: str) -> None:
        """Keep the call's output for a retry of the turn (capped: the model had it whole)."""
        kept = output if len(output) <= KEPT_OUTPUT_CHARS else output[:KEPT_OUTPUT_CHARS]
        await self._redis.hset(keys.approval(turn_id, call_id), "output", kept)

    async def _state(self, key: str) -> dict[str, str]:
        raw = await self._redis.hgetall(key)
        return {str(k): str(v) for k, v in raw.items()}

    async def _post(
        self, ask: ApprovalAsk, turn_id: str, user: str, channel: str, thread_ts: str | None
    ) -> str | None:
        try:
            response = await self._client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=fallback_text(ask),
                blocks=request_blocks(ask, user, turn_id),
            )
        except SLACK_CALL_ERRORS as exc:
            # Nobody can answer: the request runs out and counts as a Deny.
            log.warning("approval request %s not posted: %s", ask.id, slack_error(exc))
            return None
        return str(response["ts"])

    async def _show(self, channel: str, message_ts: str | None, text: str) -> None:
        """The request's message now says how it ended (its buttons gone)."""
        if not message_ts:
            return
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        try:
            await self._client.chat_update(channel=channel, ts=message_ts, text=text, blocks=blocks)
        except SLACK_CALL_ERRORS as exc:
            log.warning("approval message not updated: %s", slack_error(exc))

    async def clicked(self, click: ApprovalClick) -> None:
        """Record the asker's answer (the first wins, before the deadline); anyone else is told it is not
        theirs."""
        key = click.workspace.keys.approval(click.turn_id, click.ask_id)
        decided = 0
        state: dict[str, str] = {}
        try:
            state = await self._state(key)
            if not state or not self._same_place(state, click):
                told: str | None = GONE
            elif state.get("user") != click.user:
                log.info(
                    "approval %s: a click by %s, who did not ask, changed nothing", click.ask_id, click.user
                )
                told = NOT_YOURS.format(user=state.get("user"))
            elif state.get("decision"):
                told = ALREADY if state["decision"] != "timed_out" else GONE
            else:
                decision = "approved" if click.approve else "denied"
                now = _ms(time.time())
                decided = int(await self._decide(keys=[key], args=[decision, click.user, now, self._kept_ms]))
                told = {1: None, 2: GONE}.get(decided, ALREADY)
        except RedisError as exc:
            log.warning("approval answer not recorded: Redis %s", type(exc).__name__)
            told = NOT_RECORDED
        if decided == 2:  # the click came after the deadline: it ended the request, as a timeout
            self._metrics.approval("timed_out")
            ask = ApprovalAsk(click.ask_id, state.get("server", ""), state.get("tool", ""), "")
            await self._show(click.channel, click.message_ts, outcome_text("timed_out", _tool(ask), None))
        if told is not None:
            refused = {NOT_RECORDED: "error", GONE: "gone", ALREADY: "already"}.get(told, "not_yours")
            self._metrics.approval(refused)
            await self._ephemeral.whisper(click.channel, click.user, told, click.thread_ts)
            return
        decision_made: Decision = "approved" if click.approve else "denied"
        self._metrics.approval(decision_made)
        ask = ApprovalAsk(click.ask_id, state.get("server", ""), state.get("tool", ""), "")
        log.info("approval %s: %s by %s", click.ask_id, decision_made, click.user)
        await self._show(click.channel, click.message_ts, outcome_text(decision_made, _tool(ask), click.user))

    @staticmethod
    def _same_place(state: Mapping[str, str], click: ApprovalClick) -> bool:
        """The click is on the request's own message: its channel, and its thread when it has one."""
        thread = state.get("thread_ts") or None
        return state.get("channel") == click.channel and (thread is None or click.thread_ts in (None, thread))
