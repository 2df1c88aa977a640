"""What an uninstall (`app_uninstalled`) or a revoked bot token (`tokens_revoked`) removes: the workspace's
installation, and everything the bot knows about its threads and people (thread maps, files lists, usage,
notices, dedupe records). The OpenAI files and vector stores its threads used stay listed in their upload
ledgers, so the orphan sweep, finding no thread that maps them any more, deletes them on its next run.
Turns still queued find no installation and are dropped (bot.turns.runner)."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from bot.keys import Keys
from bot.slack.events import Revoked
from bot.slack.workspaces import Workspaces

log = logging.getLogger(__name__)

SCAN_BATCH = 500


class Uninstall:
    def __init__(self, redis: Redis, workspaces: Workspaces) -> None:
        self._redis = redis
        self._workspaces = workspaces

    async def forget(self, keys: Keys, *, org_wide: bool = False) -> int:
        """Remove the workspace's installation (and its org's, for an org-wide install) and its data;
        the number of keys deleted."""
        store = self._workspaces.store
        if store is not None:
            await store.async_delete_all(enterprise_id=keys.enterprise_id, team_id=keys.team_id)
            if org_wide and keys.enterprise_id is not None:
                await store.async_delete_all(enterprise_id=keys.enterprise_id, team_id=None)
        self._workspaces.forget(keys)
        deleted = await self._forget_data(keys)
        log.info("forgot workspace %s: %d keys deleted", keys.registry_member, deleted)
        return deleted

    async def revoked(self, revoked: Revoked) -> None:
        """`app_uninstalled`, or `tokens_revoked` naming the bot's token: the workspace is forgotten; user
        tokens alone only lose their installers' records (the bot asks for none, but an app may add some)."""
        keys = revoked.workspace.keys
        if revoked.bot:
            await self.forget(keys, org_wide=revoked.org_wide)
            return
        store = self._workspaces.store
        if store is not None:
            for user in revoked.users:
                await store.async_delete_installation(
                    enterprise_id=keys.enterprise_id, team_id=keys.team_id, user_id=user
                )

    async def _forget_data(self, keys: Keys) -> int:
        # Every key of a workspace shares its hash tag, so in a cluster they all live on one node.
        deleted = 0
        batch: list[str] = []
        async for raw in self._redis.scan_iter(match=keys.pattern, count=SCAN_BATCH):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            if keys.forgotten_on_uninstall(key):
                batch.append(key)
            if len(batch) >= SCAN_BATCH:
                deleted += int(await self._redis.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await self._redis.unlink(*batch))
        return deleted
