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

from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store import Bot
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError
from bot.keys import Keys
from bot.slack.client import SLACK_TRANSPORT_ERRORS, bind, unbind
from bot.slack.installations import RedisInstallationStore

log = logging.getLogger(__name__)

# Rotate a rotating token this long before it expires (Bolt's own default for requests).
ROTATE_MINUTES_BEFORE_EXPIRY = 120
# A worker keeps a workspace's token this long before reading it from Redis again: revocations and
# rotations by another replica reach it within this time (Slack refuses a revoked token anyway).
TOKEN_CACHE_SECONDS = 60.0


class NotInstalled(BotError):
    """A turn of a workspace the app has no installation for (uninstalled since it was queued)."""


class SharedTokenRotator(AsyncTokenRotator):
    """slack-sdk's token rotator, made safe for many replicas: Slack revokes a refresh token once it is
    exchanged, so one replica at a time refreshes an installation (a lock in Redis), after reading the
    latest saved bot again: a token another replica just refreshed is used as it is. The refreshed bot is
    saved before the lock goes. Bolt's authorization (fronts) and `Workspaces` (workers) both use it."""

    def __init__(
        self, *, client_id: str, client_secret: str, client: AsyncWebClient, store: RedisInstallationStore
    ) -> None:
        super().__init__(client_id=client_id, client_secret=client_secret, client=client)
        self._store = store

    async def perform_bot_token_rotation(
        self, *, bot: Bot, minutes_before_expiration: int = ROTATE_MINUTES_BEFORE_EXPIRY
    ) -> Bot | None:
        if not _expiring(bot, minutes_before_expiration):
            return None
        team = None if bot.is_enterprise_install else bot.team_id
        async with self._store.rotation_lock(bot.enterprise_id, team):
            latest = await self._store.async_find_bot(
                enterprise_id=bot.enterprise_id, team_id=team, is_enterprise_install=bot.is_enterprise_install
            )
            if latest is not None and latest.bot_token != bot.bot_token:
                return latest if not _expiring(latest, minutes_before_expiration) else None
            fresh = await super().perform_bot_token_rotation(
                bot=latest or bot, minutes_before_expiration=minutes_before_expiration
            )
            if fresh is not None:
                await self._store.async_save_bot(fresh)
                log.info("rotated the bot token of %s", fresh.team_id or fresh.enterprise_id)
            return fresh


class Workspaces:
    """The tokens of the workspaces the app is installed to (OAuth mode), for work that does not come
    with one: queued turns run by a worker. Rotating tokens are refreshed here as Bolt refreshes them for
    requests (the same `SharedTokenRotator`)."""

    def __init__(
        self,
        store: RedisInstallationStore | None,
        rotator: SharedTokenRotator | None = None,
    ) -> None:
        self.store = store
        self.rotator = rotator
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

    def forget_org(self, enterprise_id: str) -> None:
        for keys in [k for k in self._cache if k.enterprise_id == enterprise_id]:
            del self._cache[keys]

    async def _token(self, keys: Keys) -> str:
        cached = self._cache.get(keys)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        bot = await self._find(keys)
        if bot is None:
            raise NotInstalled(f"no installation for {keys.registry_member}")
        bot = await self._rotated(bot)
        # A rotating token is kept no longer than it stays outside the refresh window.
        until = time.monotonic() + TOKEN_CACHE_SECONDS
        self._cache[keys] = (until, bot.bot_token)
        return bot.bot_token

    async def _find(self, keys: Keys) -> Bot | None:
        assert self.store is not None
        bot = await self.store.async_find_bot(enterprise_id=keys.enterprise_id, team_id=keys.team_id)
        if bot is None and keys.enterprise_id is not None:
            # An Enterprise Grid org-wide install serves every workspace of the org. `keys` names the org
            # of the installation the event was delivered to (Slack's `authorizations`), never a guest's.
            bot = await self.store.async_find_bot(
                enterprise_id=keys.enterprise_id, team_id=None, is_enterprise_install=True
            )
        return bot

    async def _rotated(self, bot: Bot) -> Bot:
        """The bot with a token good for a while: a rotating token close to expiry is refreshed (and
        saved); a failed refresh keeps the old one, which Slack accepts until it expires."""
        if self.rotator is None or bot.bot_refresh_token is None:
            return bot
        try:
            fresh = await self.rotator.perform_bot_token_rotation(
                bot=bot, minutes_before_expiration=ROTATE_MINUTES_BEFORE_EXPIRY
            )
        except SlackTokenRotationError as exc:
            log.error("could not rotate the bot token of %s: %s", bot.team_id or bot.enterprise_id, _why(exc))
            return bot
        except SLACK_TRANSPORT_ERRORS as exc:
            log.warning("could not reach Slack to rotate a bot token: %s", type(exc).__name__)
            return bot
        return fresh or bot


def _expiring(bot: Bot, minutes: int) -> bool:
    return bot.bot_token_expires_at is not None and bot.bot_token_expires_at <= time.time() + minutes * 60


def _why(exc: SlackTokenRotationError) -> str:
    """Slack's error code for a failed rotation, never the request (it holds the refresh token)."""
    api_error = getattr(exc, "api_error", None)
    response = getattr(api_error, "response", None)
    return str(response.get("error", "unknown")) if response is not None else type(exc).__name__
