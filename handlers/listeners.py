"""Thin Bolt listeners: read the payload into a `bot.models` shape, make one call into the bot, answer."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.context.say.async_say import AsyncSay

from bot.errors import BotError
from bot.models import IncomingMessage
from bot.root import Bot
from bot.slack.client import SLACK_CALL_ERRORS, slack_error
from bot.slack.events import (
    parse_actor,
    parse_command_request,
    parse_context_changed,
    parse_home_opened,
    parse_message_action,
    parse_message_change,
    parse_revoked,
    parse_session_stopped,
    parse_user_message,
    parse_view_inputs,
    parse_view_submission,
    sender_is_external,
    trigger_id_of,
)
from bot.slack.feedback import (
    COMMENT_BLOCK,
    COMMENT_CALLBACK,
    COMMENT_INPUT,
    FEEDBACK_ACTION,
    parse_feedback_click,
)
from bot.threads.commands import COMMAND
from bot.threads.home import HOME_RESET_ACTION, HOME_SETTINGS_ACTION
from bot.threads.policy_modal import INPUT_ACTION, POLICY_CALLBACK
from bot.threads.settings_modal import META_BLOCK, META_INPUT, SETTINGS_CALLBACK
from bot.tools.approvals import APPROVE_ACTION, DENY_ACTION, parse_approval_click

log = logging.getLogger(__name__)

# What the code listens to; the manifest test checks these against manifest.yml both ways.
EVENTS = (
    "app_mention",
    "message",
    "app_home_opened",
    "app_context_changed",
    "app_uninstalled",
    "tokens_revoked",
    "agent_session_stopped",
)
COMMANDS = (COMMAND,)
RESET_SHORTCUT = "reset_thread"
SETTINGS_SHORTCUT = "thread_settings"
FORGET_SHORTCUT = "forget_message"
MESSAGE_SHORTCUTS = (RESET_SHORTCUT, SETTINGS_SHORTCUT, FORGET_SHORTCUT)


async def _receive(bot: Bot, msg: IncomingMessage, say: AsyncSay, *, known_only: bool = False) -> None:
    # Spend limits are told by the bot itself (ephemeral, at most once a minute); what is left to say here
    # is that storage is down.
    try:
        await bot.intake.receive(msg, require_known_thread=known_only)
    except BotError as exc:
        log.warning("could not queue %s:%s: %s", msg.channel, msg.ts, exc)
        try:
            await say(text=exc.user_message, thread_ts=msg.reply_thread_ts)
        except SLACK_CALL_ERRORS as say_exc:  # the ack must not fail with it: Slack would send it again
            log.warning("notice not posted: %s", slack_error(say_exc))


async def _respond(respond: AsyncRespond, text: str) -> None:
    """The answer to a slash command, through its response_url (best effort: a failure is logged)."""
    if not text:  # answered otherwise (a modal opened)
        return
    try:
        response = await respond(text=text, response_type="ephemeral")
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("command answer not delivered: %s", type(exc).__name__)
        return
    if response.status_code != 200:
        log.warning("command answer not delivered: HTTP %s", response.status_code)


def register(app: AsyncApp, bot: Bot) -> None:
    _register_follow(app, bot)

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], context: dict[str, Any], say: AsyncSay) -> None:
        msg = parse_user_message(body, context, source="mention")
        if msg is not None:
            await _receive(bot, msg, say)

    @app.event("message")
    async def on_message(body: dict[str, Any], context: dict[str, Any], say: AsyncSay) -> None:
        msg = parse_user_message(body, context, source="message")
        if msg is None:
            return
        if msg.is_dm:
            await _receive(bot, msg, say)
        elif msg.files and msg.mentions_bot:
            # Slack may send a file share that mentions the bot only as a message (no app_mention).
            await _receive(bot, msg, say)
        elif msg.thread_ts is not None:
            # In channels, only replies in a thread the bot already answers; top-level needs a mention.
            await _receive(bot, msg, say, known_only=True)

    # Slack waits 3 s for an ack, and these may wait on OpenAI: each acks at once, then does its work
    # (`bot.later`) and answers through the response_url, an ephemeral or views.update.
    @app.command(COMMANDS[0])
    async def on_command(
        ack: AsyncAck, body: dict[str, Any], context: dict[str, Any], respond: AsyncRespond
    ) -> None:
        req = parse_command_request(body, context)
        now = bot.intake.answer_now(req) if req is not None else ""
        # Help and mistakes go back in the ack itself: an ephemeral answer only the user sees.
        await ack(text=now or "")
        if req is not None and now is None:
            request_id = trigger_id_of(body) or req.user

            async def answer() -> None:
                await _respond(respond, await bot.intake.command(req, request_id=request_id))

            bot.later(answer(), name="/assistant")

    @app.shortcut(RESET_SHORTCUT)
    async def on_reset_shortcut(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        action = parse_message_action(body, context)
        if action is not None:
            request_id = trigger_id_of(body) or action.message_ts
            bot.later(bot.intake.reset_shortcut(action, request_id=request_id), name="reset shortcut")

    @app.shortcut(SETTINGS_SHORTCUT)
    async def on_settings_shortcut(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        action = parse_message_action(body, context)
        if action is not None:
            trigger_id = trigger_id_of(body)
            bot.later(bot.thread_settings.open_from_shortcut(action, trigger_id=trigger_id), name="settings")

    @app.view(SETTINGS_CALLBACK)
    async def on_settings_submitted(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        submitted = parse_view_submission(body, context, block_id=META_BLOCK, action_id=META_INPUT)
        if submitted is None:
            await ack()
            return
        problem = await bot.thread_settings.accept(*submitted, external=sender_is_external(body, context))
        if problem:
            await ack(response_action="errors", errors={META_BLOCK: problem})
            return
        await ack()
        bot.later(bot.thread_settings.save(*submitted), name="settings save")

    # The channel policy form (issue 15): checked and saved before the ack, so problems show in the form.
    @app.view(POLICY_CALLBACK)
    async def on_policy_submitted(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        submitted = parse_view_inputs(body, context, action_id=INPUT_ACTION)
        if submitted is None:
            await ack()
            return
        external = sender_is_external(body, context)
        problems = await bot.policy_form.submit(*submitted, external=external)
        if problems:
            await ack(response_action="errors", errors=problems)
            return
        await ack()

    @app.action(HOME_RESET_ACTION)
    async def on_home_reset(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        actor = parse_actor(body, context)
        if actor is not None:
            workspace, user = actor
            request_id = trigger_id_of(body) or user
            external = sender_is_external(body, context)
            reset = bot.home.reset_dm_thread(workspace, user, request_id=request_id, external=external)
            bot.later(reset, name="home reset")

    @app.action(HOME_SETTINGS_ACTION)
    async def on_home_settings(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        actor = parse_actor(body, context)
        if actor is not None:
            workspace, user = actor
            trigger_id = trigger_id_of(body)
            external = sender_is_external(body, context)
            opening = bot.thread_settings.open_for_dm(
                workspace, user, trigger_id=trigger_id, external=external
            )
            bot.later(opening, name="settings")

    # Feedback buttons on answers (issue 15): recorded after the ack; a 👎 opens the comment modal.
    @app.action(FEEDBACK_ACTION)
    async def on_feedback(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        click = parse_feedback_click(body, context)
        if click is not None:
            bot.later(bot.feedback.clicked(click, trigger_id=trigger_id_of(body)), name="feedback")

    # Approve / Deny of an MCP tool call (issue 16): recorded after the ack; the waiting turn reads it.
    @app.action(APPROVE_ACTION)
    @app.action(DENY_ACTION)
    async def on_approval(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        click = parse_approval_click(body, context)
        if click is not None:
            bot.later(bot.approvals.clicked(click), name="approval")

    @app.view(COMMENT_CALLBACK)
    async def on_feedback_comment(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        submitted = parse_view_submission(body, context, block_id=COMMENT_BLOCK, action_id=COMMENT_INPUT)
        if submitted is not None:
            bot.later(bot.feedback.commented(*submitted), name="feedback comment")

    @app.event("app_home_opened")
    async def on_home_opened(body: dict[str, Any], context: dict[str, Any]) -> None:
        opened = parse_home_opened(body, context)
        if opened.tab == "messages" and opened.channel:
            await bot.messages_tab.opened(opened.channel)
        if opened.tab == "home" and opened.user and opened.workspace is not None:
            await bot.home.publish(opened.workspace, opened.user)

    # Uninstalled, or the bot's token revoked: the installation and the workspace's data go (Bolt runs no
    # auth.test for these two events; there is no token left to run it with).
    async def on_revoked(body: dict[str, Any], context: dict[str, Any]) -> None:
        revoked = parse_revoked(body, context)
        if revoked is not None:  # scanning a workspace's keys may take longer than Slack's 3 s
            bot.later(bot.uninstall.revoked(revoked), name="uninstall")

    app.event("app_uninstalled")(on_revoked)
    app.event("tokens_revoked")(on_revoked)

    @app.event("app_context_changed")
    async def on_context_changed(body: dict[str, Any], context: dict[str, Any]) -> None:
        changed = parse_context_changed(body, context)
        if changed is not None:
            await bot.messages_tab.context_changed(*changed)

    # The stop button of a thread's agent session (issue 15): the turn running there stops, on whichever
    # worker runs it.
    @app.event("agent_session_stopped")
    async def on_session_stopped(body: dict[str, Any], context: dict[str, Any]) -> None:
        stopped = parse_session_stopped(body, context)
        if stopped is None:
            return
        try:
            await bot.stops.request(*stopped)
        except BotError as exc:  # the ack must not fail with it: Slack would send it again
            log.warning("stop not recorded: %s", exc)


def _register_follow(app: AsyncApp, bot: Bot) -> None:
    """Issue 15: the assistant thread follows Slack. Registered before the plain `message` listener: Bolt
    runs the first listener that matches, and these subtypes arrive as `message` events too."""

    async def on_message_change(body: dict[str, Any], context: dict[str, Any]) -> None:
        change = parse_message_change(body, context)
        if change is not None:
            await bot.follow.changed(change)

    app.event({"type": "message", "subtype": "message_deleted"})(on_message_change)
    app.event({"type": "message", "subtype": "message_changed"})(on_message_change)

    @app.shortcut(FORGET_SHORTCUT)
    async def on_forget_shortcut(ack: AsyncAck, body: dict[str, Any], context: dict[str, Any]) -> None:
        await ack()
        action = parse_message_action(body, context)
        if action is not None:
            request_id = trigger_id_of(body) or action.message_ts
            bot.later(bot.follow.forget_shortcut(action, request_id=request_id), name="forget shortcut")
