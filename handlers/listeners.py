"""Thin Bolt listeners: read the payload into a `bot.models` shape, make one call into the bot, answer."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.say.async_say import AsyncSay
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.commands import COMMAND
from bot.errors import BotError
from bot.models import IncomingMessage
from bot.service import BotService
from bot.slack_events import (
    parse_command_request,
    parse_context,
    parse_message_action,
    parse_user_message,
    workspace_of,
)

log = logging.getLogger(__name__)

# What the code listens to; the manifest test checks these against manifest.yml both ways.
EVENTS = ("app_mention", "message", "app_home_opened", "app_context_changed")
COMMANDS = (COMMAND,)
MESSAGE_SHORTCUTS = ("reset_thread",)


async def _receive(
    service: BotService, msg: IncomingMessage, say: AsyncSay, *, known_only: bool = False
) -> None:
    try:
        await service.receive_message(msg, require_known_thread=known_only)
    except BotError as exc:
        log.warning("could not queue %s:%s: %s", msg.channel, msg.ts, exc)
        await say(text=exc.user_message, thread_ts=msg.reply_thread_ts)


def register(app: AsyncApp, service: BotService) -> None:
    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], context: dict[str, Any], say: AsyncSay) -> None:
        msg = parse_user_message(body, context, source="mention")
        if msg is not None:
            await _receive(service, msg, say)

    @app.event("message")
    async def on_message(body: dict[str, Any], context: dict[str, Any], say: AsyncSay) -> None:
        msg = parse_user_message(body, context, source="message")
        if msg is None:
            return
        if msg.is_dm:
            await _receive(service, msg, say)
        elif msg.thread_ts is not None:
            # In channels, only replies in a thread the bot already answers; top-level needs a mention.
            await _receive(service, msg, say, known_only=True)

    @app.command(COMMANDS[0])
    async def on_command(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        req = parse_command_request(body, context)
        if req is None:
            await ack()
            return
        # The text goes back in the ack: an ephemeral answer only the user sees.
        await ack(text=await service.run_command(req, request_id=str(body.get("trigger_id") or req.user)))

    @app.shortcut(MESSAGE_SHORTCUTS[0])
    async def on_reset_shortcut(
        ack: AsyncAck, body: dict[str, Any], context: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        action = parse_message_action(body, context)
        if action is None:
            return
        text = await service.reset_from_action(
            action, request_id=str(body.get("trigger_id") or action.message_ts)
        )
        try:
            await client.chat_postEphemeral(
                channel=action.channel, user=action.user, text=text, thread_ts=action.thread_ts
            )
        except SlackApiError as exc:
            log.warning("reset shortcut: could not answer the user: %s", exc.response.get("error"))

    @app.event("app_home_opened")
    async def on_home_opened(event: dict[str, Any]) -> None:
        if event.get("tab") == "messages" and event.get("channel"):
            await service.show_suggested_prompts(str(event["channel"]))

    @app.event("app_context_changed")
    async def on_context_changed(
        body: dict[str, Any], context: dict[str, Any], event: dict[str, Any]
    ) -> None:
        workspace = workspace_of(body, context)
        user = event.get("user") or context.get("user_id")
        if workspace is not None and user:
            await service.remember_context(workspace, str(user), parse_context(event))
