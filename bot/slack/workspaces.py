"""Which bot token a Slack call carries: the one token of a single-workspace app, or, for an app installed
to many workspaces with OAuth, the token of the workspace the current work is for.

One `WorkspaceWebClient` is shared by every part of the bot (one connection pool, one set of retry
handlers). Its `token` is whatever the running task was bound to: a Slack request is bound to the token
Bolt's authorization found for it (`bind`), a queued turn to its workspace's installation
(`Workspaces.acting_for`). asyncio copies the binding into the tasks a bound task starts and no further, so
work for one workspace can never carry another's token; unbound work in OAuth mode carries none and Slack
refuses it (`not_authed`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar, Token

from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store import Bot
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError
from bot.keys import Keys
from bot.slack.installations import RedisInstallationStore

log = logging.getLogger(__name__)

_bound: ContextVar[str | None] = ContextVar("slack_workspace_token", default=None)

# Rotate a rotating token this long before it expires (Bolt's own default for requests).
ROTATE_MINUTES_BEFORE_EXPIRY = 120
# A worker keeps a workspace's token this long before reading it from Redis again: revocations and
# rotations by another replica reach it within this time (Slack refuses a revoked token anyway).
TOKEN_CACHE_SECONDS = 60.0


class NotInstalled(BotError):
    """A turn of a workspace the app has no installation for (uninstalled since it was queued)."""


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


class Workspaces:
    """The tokens of the workspaces the app is installed to (OAuth mode), for work that does not come
    with one: queued turns run by a worker. Rotating tokens are refreshed here as Bolt refreshes them for
    requests, and saved back for every replica."""

    def __init__(
        self,
        store: RedisInstallationStore | None,
        rotator: AsyncTokenRotator | None = None,
    ) -> None:
        self.store = store
        self._rotator = rotator
        self._cache: dict[Keys, tuple[float, str]] = {}

    @property
    def oauth(self) -> bool:
        return self.store is not None

    @contextlib.asynccontextmanager
    async def acting_for(self, keys: Keys) -> AsyncIterator[None]:
        """Run the body with `keys`' workspace's token bound; NotInstalled when there is none. A
        single-workspace app has its one token already: nothing to bind."""
        if self.store is None:
            yield
            return
        binding = bind(await self._token(keys))
        try:
            yield
        finally:
            unbind(binding)

    def forget(self, keys: Keys) -> None:
        self._cache.pop(keys, None)

    async def _token(self, keys: Keys) -> str:
        cached = self._cache.get(keys)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        bot = await self._find(keys)
        if bot is None:
            raise NotInstalled(f"no installation for {keys.registry_member}")
        bot = await self._rotated(bot)
        self._cache[keys] = (time.monotonic() + TOKEN_CACHE_SECONDS, bot.bot_token)
        return bot.bot_token

    async def _find(self, keys: Keys) -> Bot | None:
        assert self.store is not None
        bot = await self.store.async_find_bot(enterprise_id=keys.enterprise_id, team_id=keys.team_id)
        if bot is None and keys.enterprise_id is not None:
            # An Enterprise Grid org-wide install serves every workspace of the org.
            bot = await self.store.async_find_bot(
                enterprise_id=keys.enterprise_id, team_id=None, is_enterprise_install=True
            )
        return bot

    async def _rotated(self, bot: Bot) -> Bot:
        """The bot with a token good for a while: a rotating token close to expiry is refreshed (and
        saved); a failed refresh keeps the old one, which Slack accepts until it expires."""
        if self._rotator is None or bot.bot_refresh_token is None:
            return bot
        try:
            fresh = await self._rotator.perform_bot_token_rotation(
                bot=bot, minutes_before_expiration=ROTATE_MINUTES_BEFORE_EXPIRY
            )
        except SlackTokenRotationError as exc:
            log.error("could not rotate the bot token of %s: %s", bot.team_id or bot.enterprise_id, _why(exc))
            return bot
        if fresh is None:
            return bot
        assert self.store is not None
        await self.store.async_save_bot(fresh)
        log.info("rotated the bot token of %s", fresh.team_id or fresh.enterprise_id)
        return fresh


def _why(exc: SlackTokenRotationError) -> str:
    """Slack's error code for a failed rotation, never the request (it holds the refresh token)."""
    api_error = getattr(exc, "api_error", None)
    response = getattr(api_error, "response", None)
    return str(response.get("error", "unknown")) if response is not None else type(exc).__name__
