"""The one Slack Web API client, built once from settings and shared by Bolt and the bot."""

from __future__ import annotations

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings

SLACK_TIMEOUT_SECONDS = 30


def build_web_client(settings: Settings) -> AsyncWebClient:
    """Call from inside the running event loop (the client keeps one aiohttp session for its lifetime).

    Without a session slack-sdk opens a new one, and a new TCP/TLS connection, for every API call.
    """
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_SECONDS),
    )
    # 429s and dropped connections are safe to retry (Slack did nothing); slack-sdk honours Retry-After.
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=SLACK_TIMEOUT_SECONDS,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )
