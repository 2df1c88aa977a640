"""The one Slack Web API client, built once from settings and shared by Bolt and the bot."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar, Token

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.ops.metrics import Metrics
from bot.settings import Settings

SLACK_TIMEOUT_SECONDS = 30
# What a Slack call raises when the request got no answer (after slack-sdk's own retries): whether Slack
# acted on it is unknown.
SLACK_TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError)
# Everything a best-effort Slack call may raise: Slack's refusal, or no answer.
SLACK_CALL_ERRORS = (SlackApiError, *SLACK_TRANSPORT_ERRORS)


def slack_error(exc: BaseException) -> str:
    """Slack's error code, or the kind of transport failure: enough for the log, never a token."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown")) if exc.response is not None else "unknown"
    return type(exc).__name__


class SlackCallCounter(AsyncRetryHandler):
    """Counts what Slack answers (429s, `ok: false`, HTTP errors, no answer) for the metrics; retries
    nothing. slack-sdk shows every answer and failure to its retry handlers in order, so this one goes
    first. Bolt copies the client's retry handlers into its per-request clients: those calls count too."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(max_retry_count=0)
        self._metrics = metrics

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        method = request.url.rstrip("/").rsplit("/", 1)[-1][:64]
        if error is not None:
            self._metrics.slack_error(method, type(error).__name__)
        elif response is not None:
            if response.status_code == 429:
                self._metrics.slack_rate_limited(method)
            body = response.body if isinstance(response.body, dict) else {}
            if response.status_code >= 400 or body.get("ok") is False:
                self._metrics.slack_error(
                    method, str(body.get("error") or f"http_{response.status_code}")[:64]
                )
        return False


# Which workspace's bot token a call carries (see bot.slack.workspaces): bound per Slack request and per
# queued turn; asyncio copies it into the tasks a bound task starts.
_bound: ContextVar[str | None] = ContextVar("slack_workspace_token", default=None)


class WorkspaceWebClient(AsyncWebClient):
    """An AsyncWebClient whose token is the current task's workspace's (see the module docstring); with
    nothing bound, the fixed token it was built with (None in OAuth mode)."""

    @property
    def token(self) -> str | None:
        return _bound.get() or self._fixed_token

    @token.setter
    def token(self, value: str | None) -> None:
        self._fixed_token = value


def bind(token: str | None) -> Token[str | None]:
    """Bind the current task (and what it starts) to a workspace's bot token; `unbind` ends it."""
    return _bound.set(token)


def unbind(binding: Token[str | None]) -> None:
    _bound.reset(binding)


@contextlib.contextmanager
def workspace_token(token: str | None) -> Iterator[None]:
    """`bind` for the body only."""
    binding = bind(token)
    try:
        yield
    finally:
        unbind(binding)


def build_web_client(settings: Settings, metrics: Metrics | None = None) -> AsyncWebClient:
    """Call from inside the running event loop (the client keeps one aiohttp session for its lifetime).

    Without a session slack-sdk opens a new one, and a new TCP/TLS connection, for every API call.
    """
    session = aiohttp.ClientSession(
        # A connection per running turn at most (each sends one Slack call at a time), 100 at least.
        connector=aiohttp.TCPConnector(limit=max(100, settings.worker_concurrency), ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_SECONDS),
    )
    # 429s and dropped connections are safe to retry (Slack did nothing); slack-sdk honours Retry-After.
    # Installed with OAuth there is no one token: each call carries its workspace's (bot.slack.workspaces).
    token = (
        settings.slack_bot_token.get_secret_value()
        if settings.slack_bot_token and not settings.oauth
        else None
    )
    return WorkspaceWebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=SLACK_TIMEOUT_SECONDS,
        session=session,
        retry_handlers=[
            SlackCallCounter(metrics or Metrics()),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )
