"""Where an app installed to many workspaces keeps its installations and install links' states: Redis.

slack-sdk ships its OAuth stores for files, SQL, S3 and others, but none for Redis; these implement its
async interfaces (`AsyncInstallationStore`, `AsyncOAuthStateStore`), so Bolt's OAuth flow, its
authorization of each request, its token rotation and its revocation listeners use them as they are. The
semantics follow slack-sdk's own `FileInstallationStore` without history: the latest bot, the latest
install, each installer's latest install. Every installation is one hash in its workspace's key slot.

Tokens are stored as slack-sdk hands them over (as its file and SQL stores do): protect the Redis that
holds them as you would the tokens themselves (ACLs, TLS, no public port).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from bot.keys import (
    INSTALLS_KEY,
    OAUTH_STATE_TTL,
    ROTATION_LOCK_TTL,
    installation,
    installation_member,
    oauth_state,
    rotation_lock,
)

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 0.05
# KEYS: the lock. ARGV: its holder's token. Deletes it only for its holder.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
BOT_FIELD = "bot"
INSTALLER_FIELD = "installer"
# A state this store issued: 43 URL-safe characters. Anything else in a redirect's query is not looked up.
_STATE = re.compile(r"[A-Za-z0-9_-]{16,128}")


class RedisInstallationStore(AsyncInstallationStore):
    """slack-sdk's installation store interface over Redis (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._release = redis.register_script(RELEASE_LUA)

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        key = _key(installation.enterprise_id, installation.team_id, installation.is_enterprise_install)
        entity = _dump(installation)
        fields: dict[FieldT, EncodableT] = {
            INSTALLER_FIELD: entity,
            f"{INSTALLER_FIELD}:{installation.user_id or '-'}": entity,
        }
        if installation.bot_token is not None:
            fields[BOT_FIELD] = _dump(installation.to_bot())
        await self._redis.hset(key, mapping=fields)
        await self._redis.sadd(INSTALLS_KEY, _member(installation))
        log.info(
            "installed to %s (org-wide: %s)",
            installation.team_id or installation.enterprise_id,
            bool(installation.is_enterprise_install),
        )

    async def async_save_bot(self, bot: Bot) -> None:
        if bot.bot_token is None:
            return
        await self._redis.hset(
            _key(bot.enterprise_id, bot.team_id, bot.is_enterprise_install), BOT_FIELD, _dump(bot)
        )

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        raw = await self._redis.hget(_key(enterprise_id, team_id, is_enterprise_install), BOT_FIELD)
        return None if raw is None else Bot(**_load(raw))

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        key = _key(enterprise_id, team_id, is_enterprise_install)
        field = INSTALLER_FIELD if user_id is None else f"{INSTALLER_FIELD}:{user_id}"
        raw, raw_bot = await self._redis.hmget(key, [field, BOT_FIELD])
        if raw is None:
            return None
        found = Installation(**_load(raw))
        if raw_bot is not None:
            # The latest bot token (rotated since, or from a later install by someone else) wins, as in
            # slack-sdk's own stores (bolt-python#664).
            bot = Bot(**_load(raw_bot))
            found.bot_id, found.bot_user_id = bot.bot_id, bot.bot_user_id
            found.bot_token, found.bot_scopes = bot.bot_token, bot.bot_scopes
            found.bot_refresh_token = bot.bot_refresh_token
            found.bot_token_expires_at = bot.bot_token_expires_at
        return found

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._redis.hdel(installation(enterprise_id, team_id), BOT_FIELD)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        key = installation(enterprise_id, team_id)
        if user_id is not None:
            await self._redis.hdel(key, f"{INSTALLER_FIELD}:{user_id}")
            return
        fields = [f for f in await self._redis.hkeys(key) if _text(f).startswith(INSTALLER_FIELD)]
        if fields:
            await self._redis.hdel(key, *fields)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._redis.delete(installation(enterprise_id, team_id))
        await self._redis.srem(INSTALLS_KEY, installation_member(enterprise_id, team_id))
        log.info("uninstalled from %s", team_id or enterprise_id)

    @contextlib.asynccontextmanager
    async def rotation_lock(self, enterprise_id: str | None, team_id: str | None) -> AsyncIterator[None]:
        """Held while one replica refreshes this installation's token; others wait for it (at most the
        lock's TTL: a replica that died holding it stops counting then)."""
        key, token = rotation_lock(enterprise_id, team_id), secrets.token_hex(8)
        deadline = time.monotonic() + ROTATION_LOCK_TTL.total_seconds()
        while not await self._redis.set(key, token, nx=True, px=ROTATION_LOCK_TTL):
            if time.monotonic() > deadline:
                break  # its holder is gone; refresh anyway rather than stall every turn
            await asyncio.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            await self._release(keys=[key], args=[token])

    async def count(self) -> int:
        """How many workspaces (and orgs) the app is installed to."""
        return int(await self._redis.scard(INSTALLS_KEY))


class RedisOAuthStateStore(AsyncOAuthStateStore):
    """An install link's `state` (Bolt sends it to Slack and gets it back on the redirect): issued once,
    good for OAUTH_STATE_TTL, accepted once. This is what stops a forged redirect (CSRF) from installing
    someone else's workspace into the app."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(32)
        await self._redis.set(oauth_state(state), "1", ex=OAUTH_STATE_TTL, nx=True)
        return state

    async def async_consume(self, state: str) -> bool:
        if not isinstance(state, str) or not _STATE.fullmatch(state):
            return False
        return await self._redis.getdel(oauth_state(state)) is not None


def _key(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None) -> str:
    # An org-wide install belongs to the org, whatever workspace of it a request comes from.
    return installation(enterprise_id, None if is_enterprise_install else team_id)


def _member(found: Installation) -> str:
    team = None if found.is_enterprise_install else found.team_id
    return installation_member(found.enterprise_id, team)


def _dump(entity: Installation | Bot) -> str:
    return json.dumps(entity.__dict__)


def _load(raw: bytes | str) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("an installation record is not a JSON object")
    return data


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
