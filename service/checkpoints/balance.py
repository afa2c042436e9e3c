"""Lease expiry and balancing, as the Kinesis Client Library decides them; pure logic.

A worker cannot trust other machines' clocks, so a lease is judged by what this worker saw:
a lease whose counter has not changed for a whole lease duration (by the local clock) is
expired, its owner presumed dead. A free lease (no owner) can be taken at once.

Balancing: every live worker should hold ceil(active leases / live workers). A worker below
that takes free or expired leases first; when there are none, it steals one lease at a time
from the worker holding the most, if that one holds more than the target. Finished leases
(SHARD_END) need no work and are not counted.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from service.checkpoints import Lease


@dataclass
class ExpiryTracker:
    """Remembers, per lease, the counter last seen and when (local clock) it last changed."""

    duration: float
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[int, str | None, float]] = field(default_factory=dict)

    def observe(self, leases: dict[str, Lease]) -> set[str]:
        """Record a fresh listing; return the shard ids whose lease is expired or free."""
        now = self.clock()
        expired = set()
        for shard_id, lease in leases.items():
            before = self._seen.get(shard_id)
            if before is None or before[0] != lease.counter or before[1] != lease.owner:
                self._seen[shard_id] = (lease.counter, lease.owner, now)
                since = now
            else:
                since = before[2]
            if lease.owner is None or now - since > self.duration:
                expired.add(shard_id)
        for gone in set(self._seen) - set(leases):
            del self._seen[gone]
        return expired


@dataclass(frozen=True)
class Plan:
    take: list[str]  # free or expired leases to take
    steal: list[str]  # leases to take from a live but overloaded worker


def plan(leases: dict[str, Lease], me: str, expired: set[str]) -> Plan:
    """What ``me`` should take now; see the module docstring for the rule."""
    active = {k: v for k, v in leases.items() if not v.finished}
    if not active:
        return Plan([], [])
    live = Counter(lease.owner for k, lease in active.items() if lease.owner and k not in expired)
    workers = len(set(live) | {me})
    target = math.ceil(len(active) / workers)
    mine = live.get(me, 0)
    if mine >= target:
        return Plan([], [])
    available = sorted(k for k in active if k in expired and active[k].owner != me)
    take = available[: target - mine]
    if take:
        return Plan(take, [])
    busiest, most = max(
        ((o, n) for o, n in live.items() if o != me), key=lambda x: x[1], default=(None, 0)
    )
    if busiest is None or most <= target:
        return Plan([], [])
    theirs = sorted(k for k, lease in active.items() if lease.owner == busiest)
    return Plan([], theirs[:1])
