"""Poller groups (ProvisionedPollerConfig.PollerGroupName): Kafka mappings sharing pollers.

AWS lets up to 100 provisioned Kafka mappings share their event pollers to cut the cost of
many quiet topics. In esmd the mappings of a group (in one process) share one PollerGroup:
one pool of GroupPollers (service/sources/kafka_group_poller.py), each fetching every
member's topic, sized by one LagScaler between the group's bounds. Each mapping keeps its
own consumer group and offsets, filters, target and OnFailure destination, metrics and
state; only fetching is shared. So 100 idle mappings cost one consumer's heartbeats and
fetches rather than 100.

The group's bounds: the largest MinimumPollers and the largest MaximumPollers of its
mappings (a shared pool needs no more than its busiest member may use), for the whole
daemon, split over worker processes like a single mapping's. The first mapping to join
starts the group; the last to leave stops it. A mapping joining or leaving re-subscribes the
pollers, so Kafka rebalances the group's partitions (lanes finish and commit first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from service.config import poller_group_problems
from service.context import MappingContext
from service.errors import SourceError
from service.invoke import Backoff
from service.metrics import GroupMetrics
from service.scaling import LagScaler, Load, PollerPool, PoolBounds
from service.sources.kafka import KafkaSource
from service.sources.kafka_auth import KafkaAuth, kafka_connection, probe
from service.sources.kafka_group_poller import GroupPoller
from service.sources.kafka_lag import GroupLag
from service.sources.kafka_offsets import GroupOffsets

CONFIG_NOT_VALID = "ESM_CONFIG_NOT_VALID"


def kafka_source(context: MappingContext) -> KafkaSource | GroupMember:
    """The registry's Kafka poller: the mapping's own pool, or its share of a group's."""
    if context.config.poller_group is not None:
        return GroupMember(context)
    return KafkaSource(context)


class GroupMember:
    """A grouped mapping's poller: it joins its group, and leaves it when stopped."""

    def __init__(self, mapping: MappingContext) -> None:
        self._mapping = mapping
        self._stopping = asyncio.Event()
        self._group: PollerGroup | None = None

    async def run(self) -> None:
        cfg = self._mapping.config
        name = cfg.poller_group
        assert name is not None
        bootstrap, auth = await kafka_connection(cfg, self._mapping.esmd.aws)
        await probe(bootstrap, auth)  # SourceAuthError: the mapping's reason
        groups = self._mapping.poller_groups
        group = groups.get(
            name, lambda: PollerGroup(name, self._mapping, bootstrap, auth), PollerGroup
        )
        try:
            await group.join(self._mapping)
        except BaseException:
            if group.empty:  # made for this mapping: the next one may bring other brokers
                groups.drop(name, group)
            raise
        self._group = group
        self._mapping.connected()
        try:
            await self._stopping.wait()
        finally:
            self._group = None
            if await group.leave(self._mapping):
                groups.drop(name, group)

    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> dict[str, Any]:
        group = self._group
        if group is None:
            return {"pollers": 0, "partitions": {}}
        return {
            "poller_group": group.name,
            "group_pollers": group.size,
            "pollers": 0,  # the group's pollers are the group's, not the mapping's
            "partitions": group.partitions_of((self._mapping.config.Topics or [""])[0]),
        }


class PollerGroup:
    def __init__(
        self, name: str, first: MappingContext, bootstrap: list[str], auth: KafkaAuth
    ) -> None:
        self.name = name
        self.coordination_group = f"esmd-pollers-{name}"
        self.bootstrap = bootstrap
        self.auth = auth
        self.shutdown_grace = first.shutdown_grace
        self._esmd = first.esmd
        self._worker = first.worker
        self._members: dict[str, MappingContext] = {}  # by topic
        self._pollers: set[GroupPoller] = set()
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._metrics = GroupMetrics(name, first.metrics.metrics)
        settings = self._esmd.scaling
        self.scaler = LagScaler(
            PoolBounds(0, 1),  # set from the members as they join
            capacity_bytes=settings.poller_capacity_mb_per_second * 1e6,
            up_after=settings.scale_up_after_seconds,
            cooldown=settings.scale_down_cooldown_seconds,
            batch_size=first.config.batch_size,
        )
        self._pool = PollerPool(self._poller, self.scaler.bounds, self._metrics, "group poller")
        self._client: AIOKafkaClient | None = None
        self._offsets: GroupOffsets | None = None
        self._lag = GroupLag(bootstrap, auth)
        self._task: asyncio.Task[None] | None = None
        self._partitions = 0
        self._log = structlog.get_logger("esmd.kafka").bind(poller_group=name)

    # --- members --------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        return sorted(self._members)

    @property
    def size(self) -> int:
        return self._pool.size

    @property
    def offsets(self) -> GroupOffsets:
        assert self._offsets is not None, "the group is started by its first member"
        return self._offsets

    @property
    def empty(self) -> bool:
        return not self._members

    def member_for(self, topic: str) -> MappingContext | None:
        return self._members.get(topic)

    async def join(self, member: MappingContext) -> None:
        """Add a mapping; SourceError (ESM_CONFIG_NOT_VALID) if the group cannot take it."""
        async with self._lock:
            configs = [m.config for m in self._members.values()] + [member.config]
            for name, message in poller_group_problems(self.name, configs):
                if name == member.name:
                    raise SourceError(CONFIG_NOT_VALID, message)
            topic = (member.config.Topics or [""])[0]
            self._members[topic] = member
            self._set_bounds()
            if self._task is None:
                try:
                    await self._start()
                except BaseException:
                    del self._members[topic]  # the mapping retries its join from scratch
                    raise
            else:
                for poller in self._pollers:
                    poller.subscribe()
            member.metrics.poller_group(self.name).set(1)
            self._log.info("mapping joined", mapping=member.name, mappings=len(self._members))

    async def leave(self, member: MappingContext) -> bool:
        """Remove a mapping once its partitions are finished and committed; True when it
        was the last (the group has stopped)."""
        async with self._lock:
            topic = (member.config.Topics or [""])[0]
            if self._members.get(topic) is not member:
                return not self._members
            del self._members[topic]
            member.metrics.poller_group(self.name).set(0)
            self._log.info("mapping left", mapping=member.name, mappings=len(self._members))
            if not self._members:
                await self._stop()
                return True
            self._set_bounds()
            await asyncio.gather(*(poller.drop_topic(topic) for poller in self._pollers))
            return False

    def _set_bounds(self) -> None:
        """The group's bounds from its members, this worker's share of them."""
        configs = [m.config for m in self._members.values()]
        provisioned = [c.ProvisionedPollerConfig for c in configs if c.ProvisionedPollerConfig]
        whole = PoolBounds(
            max((p.MinimumPollers for p in provisioned), default=1),
            max((p.MaximumPollers for p in provisioned), default=1),
        )
        self.scaler.bounds = self._pool.bounds = self._worker.share(whole, keep_one=False)
        self.scaler.batch_size = max(c.batch_size for c in configs)

    # --- lifecycle ------------------------------------------------------------------------

    async def _start(self) -> None:
        client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"esmd-group-{self.name}",
            **self.auth.client_kwargs(),
        )
        try:
            await client.bootstrap()
        except BaseException:
            await client.close()
            raise
        self._client, self._offsets = client, GroupOffsets(client)
        self._pool.start()
        self._task = asyncio.create_task(self._scale_loop(), name=f"poller group {self.name}")

    async def _stop(self) -> None:
        self._stopping.set()
        for poller in self._pollers:
            poller.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._pool.retire_all()
        await self._lag.close()
        if self._client is not None:
            await self._client.close()

    async def _poller(self, retire: asyncio.Event) -> None:
        """One group poller, restarted with backoff when its consumer fails, until retired."""
        backoff = Backoff(1.0, 30.0)
        failures = 0
        while not (retire.is_set() or self._stopping.is_set()):
            poller = GroupPoller(self, retire)
            self._pollers.add(poller)
            try:
                await poller.run()
                return
            except Exception as exc:
                for member in self._members.values():
                    member.metrics.error("polling")
                wait = backoff.delay(failures)
                failures += 1
                self._log.error("group poller failed", error=repr(exc), retry_in=round(wait, 2))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stopping.wait()
            finally:
                self._pollers.discard(poller)

    # --- scaling --------------------------------------------------------------------------

    async def _scale_loop(self) -> None:
        period = self._esmd.scaling.period_seconds
        last = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._stopping.wait()
            now = time.monotonic()
            load = await self._load(now - last)
            last = now
            decision = self.scaler.decide(now, self._pool.size, load, self._partition_count())
            if decision is not None:
                self._pool.resize(*decision)

    async def _load(self, seconds: float) -> Load:
        """What the pollers measured; with none here (this worker's share of the minimum is
        zero), the members' lag as their consumer groups committed it."""
        if self._pool.size == 0:
            pairs = [(m.config.consumer_group_id, t) for t, m in self._members.items()]
            try:
                lag = await self._lag.read(pairs)
            except KafkaError as exc:
                self._log.warning("lag unreadable", error=repr(exc))
                lag = 0
            self._partitions = self._lag.partitions or self._partitions
            return Load(lag, 0.0, 0.0)
        await self._lag.close()
        lag = records = size = 0
        for poller in self._pollers:
            lag += poller.lag()
            r, b = poller.take_counts()
            records += r
            size += b
        seconds = max(seconds, 1e-3)
        return Load(lag, records / seconds, size / seconds)

    def _partition_count(self) -> int:
        for poller in self._pollers:
            found = poller.partition_count()
            if found:
                self._partitions = found
                break
        return self._partitions or self.scaler.bounds.maximum

    def partitions_of(self, topic: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for poller in self._pollers:
            found.update(poller.partitions_of(topic))
        return found
