"""Reading new entries of the workspaces' turn streams (XREADGROUP `>`) for one worker.

On one Redis (or through Sentinel) it is one XREADGROUP over every stream, as it always was. On a Redis
Cluster a command's keys must share one hash slot (else CROSSSLOT), and each workspace's stream sits in its
workspace's slot (`bot.keys`): the streams are grouped by slot and each group is read by its own blocking
XREADGROUP, all in flight at once. A read returns as soon as any group has entries (or after the block
time, so the caller looks at the workspaces and its free capacity again); the other groups' reads stay in
flight for the next call, so a quiet workspace never delays a busy one, and no read is cancelled while
Redis may be delivering entries to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import SlotNotCoveredError

# (stream, [(entry id, fields), ...]) as XREADGROUP returns them.
Batch = tuple[str, list[tuple[Any, Any]]]


class TurnStreams:
    def __init__(self, redis: Redis | RedisCluster, group: str, consumer: str, *, block_ms: int) -> None:
        self._redis = redis
        self._group = group
        self._consumer = consumer
        self._block_ms = block_ms
        self._cluster = redis if isinstance(redis, RedisCluster) else None  # see RedisHandle
        # Cluster only: the read in flight for each slot.
        self._reads: dict[int, asyncio.Task[list[Batch]]] = {}
        # Cluster only: an error from one slot's read that came back with other slots' entries; raised by
        # the next call, so entries already delivered are never dropped for it.
        self._error: BaseException | None = None

    async def read(self, streams: list[str], count: int) -> list[Batch]:
        """New entries of `streams` for this consumer, waiting up to the block time for some. At most
        `count`; on a cluster each slot's read asks for an equal share (at least 1) of the `count` of the
        call that sent it, so while capacity shrinks the reads in flight may bring a little more. Raises
        RedisError (e.g. NOGROUP)."""
        if self._cluster is None:
            return await self._xreadgroup(streams, count)
        return await self._read_per_slot(self._cluster, streams, count)

    def close(self) -> None:
        """Cancel the reads in flight (the entries a cancelled read was given stay pending: the recovery
        sweep offers them again)."""
        for task in self._reads.values():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it at exit
            task.cancel()
        self._reads.clear()

    async def _xreadgroup(self, streams: list[str], count: int) -> list[Batch]:
        batches: Any = await self._redis.xreadgroup(
            self._group, self._consumer, dict.fromkeys(streams, ">"), count=count, block=self._block_ms
        )
        return [(str(stream), entries) for stream, entries in batches or []]

    async def _read_per_slot(self, cluster: RedisCluster, streams: list[str], count: int) -> list[Batch]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        by_slot: dict[int, list[str]] = {}
        for stream in streams:
            by_slot.setdefault(cluster.keyslot(stream), []).append(stream)
        share = max(1, count // max(1, len(by_slot)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._block_ms / 1000
        batches: list[Batch] = []
        # Reads that time out empty are sent again at once; the caller hears back when entries came, a read
        # failed, or the block time is over (one round of the caller's loop per block time when idle).
        while not batches and self._error is None:
            for slot, group in by_slot.items():
                if slot not in self._reads:
                    self._reads[slot] = asyncio.create_task(
                        self._read_slot(cluster, group, share), name=f"read slot {slot}"
                    )
            left = deadline - loop.time()
            if not self._reads or left <= 0:
                break
            try:
                done, _ = await asyncio.wait(
                    self._reads.values(), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:
                self.close()
                raise
            for slot, task in list(self._reads.items()):
                if task not in done:
                    continue
                del self._reads[slot]
                failed = task.exception()
                if failed is None:
                    batches += task.result()
                elif self._error is None:
                    self._error = failed
        if not batches and self._error is not None:
            error, self._error = self._error, None
            raise error
        return batches

    async def _read_slot(self, cluster: RedisCluster, streams: list[str], count: int) -> list[Batch]:
        """One XREADGROUP sent straight to the slot's primary: the client would otherwise ask a node which
        arguments are keys (COMMAND GETKEYS: XREADGROUP's keys are "movable") before every read. A MOVED
        reply is still followed."""
        try:
            node = cluster.get_node_from_key(streams[0])
        except SlotNotCoveredError:
            return await self._xreadgroup(streams, count)  # the client finds (or fails to find) the node
        batches: Any = await cluster.execute_command(
            "XREADGROUP",
            "GROUP",
            self._group,
            self._consumer,
            "COUNT",
            count,
            "BLOCK",
            self._block_ms,
            "STREAMS",
            *streams,
            *[">"] * len(streams),
            target_nodes=node,
        )
        return [(str(stream), entries) for stream, entries in batches or []]
