"""Composition root: settings -> Bot (bot.root) -> Bolt AsyncApp with its listeners."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.root import Bot
from bot.settings import Mode, Settings
from handlers import listeners


def build_app(settings: Settings, bot: Bot, mode: Mode) -> AsyncApp:
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    app = AsyncApp(
        client=bot.web_client,
        signing_secret=secret,
        # Bolt verifies X-Slack-Signature on every HTTP request; Socket Mode has no signature.
        request_verification_enabled=mode is Mode.HTTP,
        # Record first, then ack: listeners only queue work (one Redis round trip), so the ack stays far
        # inside Slack's 3 s, and a process that dies after acking has already saved the message.
        process_before_response=True,
    )
    listeners.register(app, bot)
    return app
