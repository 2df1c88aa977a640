"""Approvals in Slack (issue 16): a tool call that needs a person's yes waits for the one who asked.

The turn posts an Approve / Deny message in its Slack thread and waits; the state is a hash in Redis
(`Keys.approval`), so a turn retried on another worker finds the request (no second message) and its answer.
Only the asker's click decides (anyone else is told, ephemerally, that it is not theirs); the first decision
wins (HSETNX), and no answer within MCP_APPROVAL_SECONDS is a Deny. The turn reads the decision by polling
its hash: a click may land on any replica, and a poll survives a worker restart with nothing to re-arm.

Nothing secret is kept: the hash holds who asked, where, the server and tool names and the deadline; the
arguments are shown in the message only (made inert), never stored.
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


def request_blocks(ask: ApprovalAsk, user: str) -> list[dict[str, Any]]:
    """The question with its Approve / Deny buttons (each carries the request's id)."""
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
                    "value": ask.id,
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION,
                    "text": {"type": "plain_text", "text": "Deny"},
                    "style": "danger",
                    "value": ask.id,
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
    if (
        kind not in (APPROVE_ACTION, DENY_ACTION)
        or not isinstance(value, str)
        or not 0 < len(value) <= VALUE_MAX_CHARS
        or workspace is None
        or not (user and channel and message_ts)
    ):
        log.info("ignored an approval click that can't be read")
        return None
    thread_ts = _field(body.get("message"), "thread_ts") or _field(container, "thread_ts")
    return ApprovalClick(workspace, user, channel, message_ts, thread_ts, value, kind == APPROVE_ACTION)


def _field(container: object, key: str) -> str | None:
    value = container.get(key) if isinstance(container, Mapping) else None
    return value if isinstance(value, str) and value else None


# KEYS: the approval. ARGV: decision, who. The first decision wins, recorded with who made it at once.
_DECIDE = """
if redis.call('HSETNX', KEYS[1], 'decision', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'by', ARGV[2])
  return 1
end
return 0
"""


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

    async def decide(
        self, keys: Keys, ask: ApprovalAsk, *, user: str, channel: str, thread_ts: str | None
    ) -> Decision:
        """Ask `user` in the thread (once, whichever attempt of the turn asks) and wait for the answer."""
        key = keys.approval(ask.id)
        expires = int((time.time() + self._seconds) * 1000)
        fields = {"user": user, "channel": channel, "thread_ts": thread_ts or "", "server": ask.server}
        # Each field set once, together: a retried turn keeps the first attempt's asker and deadline.
        async with self._redis.pipeline(transaction=True) as pipe:
            for name, value in {**fields, "tool": ask.tool, "expires": str(expires)}.items():
                pipe.hsetnx(key, name, value)
            await pipe.execute()
        state = await self._state(key)
        kept = int(state.get("expires") or expires) + int(APPROVAL_KEPT.total_seconds() * 1000)
        await self._redis.pexpireat(key, kept)
        if not state.get("message_ts"):
            # First ask, or the attempt that asked died before it posted: post the question now.
            posted = await self._post(ask, state.get("user") or user, channel, thread_ts)
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
            if time.time() * 1000 >= expires:
                if await self._redis.hsetnx(key, "decision", "timed_out"):
                    self._metrics.approval("timed_out")  # counted once: by the attempt that ended it
                    await self._show(
                        channel, state.get("message_ts"), outcome_text("timed_out", _tool(ask), None)
                    )
                continue  # a click may have won the race: read what was decided
            await asyncio.sleep(self._poll)

    async def _state(self, key: str) -> dict[str, str]:
        raw = await self._redis.hgetall(key)
        return {str(k): str(v) for k, v in raw.items()}

    async def _post(self, ask: ApprovalAsk, user: str, channel: str, thread_ts: str | None) -> str | None:
        try:
            response = await self._client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=f"May I run {ask.tool} on {ask.server}? Approve or deny.",
                blocks=request_blocks(ask, user),
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
        """Record the asker's answer (the first wins); anyone else is told it is not theirs."""
        key = click.workspace.keys.approval(click.ask_id)
        try:
            state = await self._state(key)
            if not state or state.get("channel") != click.channel:
                told: str | None = GONE
            elif state.get("user") != click.user:
                log.info(
                    "approval %s: a click by %s, who did not ask, changed nothing", click.ask_id, click.user
                )
                told = NOT_YOURS.format(user=state.get("user"))
            elif state.get("decision"):
                told = ALREADY if state["decision"] != "timed_out" else GONE
            elif await self._decide(keys=[key], args=["approved" if click.approve else "denied", click.user]):
                told = None
            else:
                told = ALREADY
        except RedisError as exc:
            log.warning("approval answer not recorded: Redis %s", type(exc).__name__)
            told = NOT_RECORDED
        if told is not None:
            refused = {NOT_RECORDED: "error", GONE: "gone", ALREADY: "already"}.get(told, "not_yours")
            self._metrics.approval(refused)
            await self._ephemeral.whisper(click.channel, click.user, told, click.thread_ts)
            return
        decision: Decision = "approved" if click.approve else "denied"
        self._metrics.approval(decision)
        ask = ApprovalAsk(click.ask_id, state.get("server", ""), state.get("tool", ""), "")
        log.info("approval %s: %s by %s", click.ask_id, decision, click.user)
        await self._show(click.channel, click.message_ts, outcome_text(decision, _tool(ask), click.user))
