"""What an uninstall (`app_uninstalled`) or a revoked bot token (`tokens_revoked`) removes: the
installation, and everything the bot knows about the workspace's threads and people (thread maps, files
lists, usage, notices, dedupe records); for an Enterprise Grid org-wide install, that of every workspace of
the org. The OpenAI files and vector stores its threads used stay listed in their upload ledgers, so the
orphan sweep, finding no thread that maps them any more, deletes them on its next run. Turns still queued
find no installation and are dropped (bot.turns.runner)."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from bot.keys import Keys, org_pattern
from bot.slack.events import Revoked
from bot.slack.workspaces import Workspaces

log = logging.getLogger(__name__)

SCAN_BATCH = 500
# How long an uninstall waits for the workspace's running turns to end before its second pass: a turn holds
# its thread's lock (RUNNER_LOCK_TTL, refreshed) until it has written its last record.
SETTLE_SECONDS = 60.0
SETTLE_POLL_SECONDS = 0.5


class Uninstall:
    def __init__(self, redis: Redis, workspaces: Workspaces) -> None:
        self._redis = redis
        self._workspaces = workspaces

    async def revoked(self, revoked: Revoked) -> None:
        """`app_uninstalled`, or `tokens_revoked` naming the bot's token: the installation and its data
        go, unless it was installed again after Slack sent the event (a retry can arrive minutes late).
        User tokens alone only lose their installers' records (the bot asks for none)."""
        if not revoked.bot:
            await self._drop_users(revoked)
            return
        if await self._installed_since(revoked):
            log.info("ignored an uninstall older than the current install")
            return
        store = self._workspaces.store
        if store is not None:
            team = None if revoked.org_wide else revoked.team_id
            await store.async_delete_all(enterprise_id=revoked.enterprise_id, team_id=team)
        if revoked.org_wide and revoked.enterprise_id is not None:
            pattern, keys = org_pattern(revoked.enterprise_id), None
            self._workspaces.forget_org(revoked.enterprise_id)
        elif revoked.team_id is not None:
            keys = Keys(revoked.team_id, revoked.enterprise_id)
            pattern = keys.pattern
            self._workspaces.forget(keys)
        else:
            return
        deleted = await self._forget_keys(pattern, keys)
        # A turn that was running still writes its thread's records as it ends: once the workspace's
        # turns have let go of their threads, what they wrote goes too.
        if await self._settled(pattern):
            deleted += await self._forget_keys(pattern, keys)
        log.info(
            "forgot %s: %d keys deleted", keys.registry_member if keys else revoked.enterprise_id, deleted
        )

    async def _settled(self, pattern: str) -> bool:
        """Wait (at most SETTLE_SECONDS) until no turn of the workspace (or org) holds a thread; whether any
        did."""
        # `sa:{E:T}:*` -> `sa:{E:T}:runner:*`; an org's `sa:{E:*` -> `sa:{E:*:runner:*`.
        runners = pattern.removesuffix("*") + "runner:*" if pattern.endswith("}:*") else f"{pattern}:runner:*"
        waited = False
        deadline = time.monotonic() + SETTLE_SECONDS
        while await self._any(runners) and time.monotonic() < deadline:
            waited = True
            await asyncio.sleep(SETTLE_POLL_SECONDS)
        return waited

    async def _any(self, pattern: str) -> bool:
        async for _ in self._redis.scan_iter(match=pattern, count=SCAN_BATCH):
            return True
        return False

    async def _installed_since(self, revoked: Revoked) -> bool:
        store = self._workspaces.store
        if store is None or revoked.event_time is None:
            return False
        found = await store.async_find_installation(
            enterprise_id=revoked.enterprise_id,
            team_id=revoked.team_id,
            is_enterprise_install=revoked.org_wide,
        )
        # Slack's event_time is whole seconds: only an install of a later second is newer than the event.
        return found is not None and found.installed_at >= revoked.event_time + 1

    async def _drop_users(self, revoked: Revoked) -> None:
        store = self._workspaces.store
        if store is None:
            return
        for user in revoked.users:
            await store.async_delete_installation(
                enterprise_id=revoked.enterprise_id, team_id=revoked.team_id, user_id=user
            )

    async def _forget_keys(self, pattern: str, keys: Keys | None) -> int:
        """Delete what an uninstall forgets among the keys matching `pattern` (one workspace's, or an
        org's); a workspace's keys share its hash tag, so in a cluster they live on one node."""
        deleted = 0
        batch: list[str] = []
        async for raw in self._redis.scan_iter(match=pattern, count=SCAN_BATCH):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            owner = keys or Keys.of_key(key)
            if owner is not None and owner.forgotten_on_uninstall(key):
                batch.append(key)
            if len(batch) >= SCAN_BATCH:
                deleted += await self._unlink(batch)
                batch = []
        if batch:
            deleted += await self._unlink(batch)
        return deleted

    async def _unlink(self, batch: list[str]) -> int:
        # An org's keys span its workspaces' slots: redis-py's cluster client splits a multi-key UNLINK by
        # slot (its pipelines' `unlink` is a coroutine that queues nothing unless awaited).
        return int(await self._redis.unlink(*batch))
