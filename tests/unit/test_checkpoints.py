"""Shard checkpoint and lease logic: starting positions, readiness, expiry, balancing, sqlite."""

from __future__ import annotations

from pathlib import Path

from service.checkpoints import (
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    ShardInfo,
    initial_position,
    ready_shards,
)
from service.checkpoints.balance import ExpiryTracker, Plan, plan
from service.checkpoints.sqlite import SqliteStore


def test_initial_positions() -> None:
    root, closed = ShardInfo("s0"), ShardInfo("s1", closed=True)
    assert initial_position(root, True, "LATEST") == "LATEST"
    assert initial_position(closed, True, "LATEST") == SHARD_END  # nothing new will come
    assert initial_position(closed, True, "TRIM_HORIZON") == TRIM_HORIZON
    assert initial_position(root, True, "AT_TIMESTAMP") == "AT_TIMESTAMP"
    # a shard seen later is a child: from its beginning, whatever the mapping's start
    assert initial_position(ShardInfo("s2", ("s0",)), False, "LATEST") == TRIM_HORIZON


def test_children_wait_for_every_parent() -> None:
    leases = {
        "p1": Lease("p1", "42"),
        "p2": Lease("p2", SHARD_END),
        "merged": Lease("merged", TRIM_HORIZON, ("p1", "p2")),
        "orphan": Lease("orphan", TRIM_HORIZON, ("trimmed-away",)),
    }
    held = set(leases)
    assert ready_shards(leases, held) == ["orphan", "p1"]
    leases["p1"].checkpoint = SHARD_END
    assert ready_shards(leases, held) == ["merged", "orphan"]
    assert ready_shards(leases, {"merged"}) == ["merged"]


def test_expiry_by_the_local_clock() -> None:
    now = [0.0]
    tracker = ExpiryTracker(10, clock=lambda: now[0])
    leases = {"a": Lease("a", "1", owner="w1", counter=5), "free": Lease("free", "1")}
    assert tracker.observe(leases) == {"free"}  # free at once, a not yet
    now[0] = 9
    assert tracker.observe(leases) == {"free"}
    now[0] = 10.5
    assert tracker.observe(leases) == {"a", "free"}  # not renewed for a lease duration
    leases["a"].counter = 6  # renewed: alive again, the wait starts over
    assert tracker.observe(leases) == {"free"}
    now[0] = 20
    assert tracker.observe(leases) == {"free"}


def _leases(owners: dict[str, str | None]) -> dict[str, Lease]:
    return {k: Lease(k, "1", owner=o, counter=1) for k, o in owners.items()}


def test_plan_takes_free_then_steals_one_at_a_time() -> None:
    free = _leases({"s0": None, "s1": None, "s2": None})
    assert plan(free, "me", {"s0", "s1", "s2"}) == Plan(["s0", "s1", "s2"], [])
    theirs = _leases({"s0": "w1", "s1": "w1", "s2": "w1", "s3": "w1"})
    assert plan(theirs, "me", set()) == Plan([], ["s0"])  # target 2, w1 holds 4
    balanced = _leases({"s0": "w1", "s1": "w1", "s2": "me"})
    assert plan(balanced, "me", set()) == Plan([], [])  # 2/1 is as even as 3 gets
    assert plan(balanced, "w1", set()) == Plan([], [])


def test_plan_takes_expired_leases_and_ignores_finished() -> None:
    leases = _leases({"s0": "dead", "s1": "dead", "s2": "me"})
    assert plan(leases, "me", {"s0", "s1"}) == Plan(["s0", "s1"], [])  # dead owner not counted
    leases["s0"].checkpoint = leases["s1"].checkpoint = SHARD_END
    assert plan(leases, "me", {"s0", "s1"}) == Plan([], [])


async def test_sqlite_store_survives_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SqliteStore(path, "m")
    await store.open()
    await store.sync([ShardInfo("s0"), ShardInfo("s1", closed=True)], "LATEST")
    held, leases = await store.acquire()
    assert held == {"s0", "s1"} and leases["s1"].checkpoint == SHARD_END
    assert await store.checkpoint("s0", "123")
    await store.sync([ShardInfo("s0"), ShardInfo("s2", ("s0",))], "LATEST")
    await store.close()
    again = SqliteStore(path, "m")
    await again.open()
    _, leases = await again.acquire()
    assert {k: v.checkpoint for k, v in leases.items()} == {
        "s0": "123",
        "s1": SHARD_END,
        "s2": TRIM_HORIZON,
    }
    assert leases["s2"].parents == ("s0",)
    other = SqliteStore(path, "other-mapping")
    await other.open()
    assert (await other.acquire())[0] == set()
    await other.close()
    await again.close()
