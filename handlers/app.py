"""Composition root: settings -> Bot (bot.root) -> Bolt AsyncApp with its listeners."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.signature import SignatureVerifier

from bot.keys import OAUTH_STATE_TTL
from bot.ops.logs import bind_log_ids, log_context
from bot.ops.metrics import Metrics
from bot.root import Bot
from bot.settings import Mode, Settings
from bot.slack.client import workspace_token
from bot.slack.events import envelope_problem
from bot.slack.workspaces import ROTATE_MINUTES_BEFORE_EXPIRY
from handlers import listeners

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(settings: Settings, bot: Bot, mode: Mode) -> AsyncApp:
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    app = AsyncApp(
        client=bot.web_client,
        signing_secret=secret,
        # Installed with OAuth: Bolt serves the install page and redirect, and finds each request's token.
        oauth_settings=_oauth_settings(settings, bot) if mode is Mode.HTTP else None,
        # Bolt verifies X-Slack-Signature on every HTTP request; Socket Mode has no signature.
        request_verification_enabled=mode is Mode.HTTP,
        # Record first, then ack: listeners only queue work (one Redis round trip), so the ack stays far
        # inside Slack's 3 s, and a process that dies after acking has already saved the message.
        process_before_response=True,
    )

    @app.middleware
    async def log_ids(context: AsyncBoltContext, next: Callable[[], Awaitable[None]]) -> None:
        # The request's log lines (and the work it starts) name its workspace and channel.
        bind_log_ids(team=context.team_id, channel=context.channel_id)
        if bot.workspaces.oauth:
            # The bot's Slack calls for this request (and the work it starts) carry its workspace's token.
            # Bolt runs the listeners after the middleware chain has returned, in this same task: the
            # binding must outlive this function. It ends with the request (`build_web_app`'s gate).
            bot.acting_for_token(context.bot_token)
        await next()

    listeners.register(app, bot)
    return app


def _oauth_settings(settings: Settings, bot: Bot) -> AsyncOAuthSettings | None:
    if not settings.oauth or bot.workspaces.store is None:
        return None
    assert settings.slack_client_secret is not None
    secret = settings.slack_client_secret.get_secret_value()
    oauth = AsyncOAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=secret,
        scopes=settings.slack_scopes,
        redirect_uri=settings.slack_redirect_uri,
        install_path=settings.slack_install_path,
        redirect_uri_path=settings.slack_redirect_uri_path,
        authorization_url=settings.slack_authorize_url,
        installation_store=bot.workspaces.store,
        state_store=bot.oauth_states,
        state_expiration_seconds=int(OAUTH_STATE_TTL.total_seconds()),
        token_rotation_expiration_minutes=ROTATE_MINUTES_BEFORE_EXPIRY,
    )
    # The same authorization Bolt builds, but refreshing tokens through the bot's client (SLACK_API_URL,
    # its retry handlers and metrics): Bolt's own would build a client for slack.com.
    authorize = AsyncInstallationStoreAuthorize(
        logger=log,
        client_id=settings.slack_client_id,
        client_secret=secret,
        token_rotation_expiration_minutes=ROTATE_MINUTES_BEFORE_EXPIRY,
        installation_store=bot.workspaces.store,
        client=bot.web_client,
    )
    # One replica at a time refreshes an installation's token (Slack revokes a used refresh token).
    authorize.token_rotator = bot.workspaces.rotator
    oauth.authorize = authorize
    return oauth


def build_web_app(app: AsyncApp, signing_secret: str, metrics: Metrics | None = None) -> web.Application:
    """Bolt's aiohttp app, behind a gate that answers every request Bolt itself would answer with a 500.

    Bolt parses the body and reads ids from it before it checks the signature, and its listener matching
    indexes the payload without checking types: a body that is not JSON, a `"event": "x"` or an odd
    X-Slack-Request-Timestamp raise inside Bolt. The gate checks the signature first (401 as Bolt answers
    it), then that Bolt can read the request; a signed request it can't is acked with an empty 200 (Slack
    would only retry it) and logged in a line that names the problem, never the payload.
    """
    web_app = app.web_app(path=EVENTS_PATH)
    verifier = SignatureVerifier(signing_secret)

    @web.middleware
    async def readable_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path != EVENTS_PATH:
            return await handler(request)
        started = time.perf_counter()
        # Ids and the workspace's token the request binds end with it.
        with log_context(), workspace_token(None):
            response = await _gate(request, handler)
        if metrics is not None:
            metrics.ack(time.perf_counter() - started)
        return response

    async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _signed(verifier, await request.read(), request.headers):
            return web.json_response({"error": "invalid request"}, status=401)
        body, problem = await _read(request)
        if problem is not None:
            log.warning("ignored a signed Slack request Bolt can't read: %s", problem)
            return web.Response(status=200)
        response = await handler(request)
        if response.status != 404:
            return response
        log.warning("no listener for %s; acked", _kind(body))
        return web.Response(status=200)

    web_app.middlewares.append(readable_requests)
    return web_app


def _signed(verifier: SignatureVerifier, body: bytes, headers: Mapping[str, str]) -> bool:
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    # slack_sdk's verifier reads the body as UTF-8 text (as Slack sends it), takes int(timestamp) and
    # compares with hmac.compare_digest: it raises on other bytes, a non-number and non-ASCII text.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12 and signature.isascii()):
        return False
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return False
    return verifier.is_valid(text, timestamp, signature)


async def _read(request: web.Request) -> tuple[Mapping[str, Any], str | None]:
    """The payload as Bolt reads it, and why Bolt can't (None: it can). The body is decoded and parsed
    exactly as Bolt's aiohttp adapter does, then its envelope is checked (`envelope_problem`)."""
    try:
        bolt_request = await to_bolt_request(request)
    # What Bolt's parsing raises on a body it can't read: a bad charset or encoding, JSON that doesn't
    # parse or nests too deep, ids in containers of the wrong type.
    except (ValueError, TypeError, AttributeError, LookupError, RecursionError) as exc:
        return {}, f"{type(exc).__name__} while parsing"
    return bolt_request.body, envelope_problem(bolt_request.body)


def _kind(body: Mapping[str, Any]) -> str:
    """What a request is, for the log: its event type, command or callback id (names, never content)."""
    event = body.get("event")
    if isinstance(event, Mapping):
        return f"event {str(event.get('type'))[:64]}"
    for key in ("command", "callback_id", "type"):
        if body.get(key):
            return f"{key} {str(body[key])[:64]}"
    return "a request without a type"
