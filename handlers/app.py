"""Composition root: settings -> BotService -> Bolt AsyncApp with its listeners."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.service import BotService
from bot.settings import Mode, Settings
from handlers import listeners


def build_app(settings: Settings, service: BotService, mode: Mode) -> AsyncApp:
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    app = AsyncApp(
        client=service.web_client,
        signing_secret=secret,
        # Bolt verifies X-Slack-Signature on every HTTP request; Socket Mode has no signature.
        request_verification_enabled=mode is Mode.HTTP,
        # Ack first (Slack wants it within 3 s), then run the listener.
        process_before_response=False,
    )
    listeners.register(app, service)
    return app
