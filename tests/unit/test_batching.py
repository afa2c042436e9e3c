from __future__ import annotations

from service.batching import BatchBuilder


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closes_at_batch_size() -> None:
    b = BatchBuilder(max_records=3, window_seconds=10)
    assert not b.add({"n": 1}, 10, 0)
    assert not b.add({"n": 2}, 10, 1)
    assert b.add({"n": 3}, 10, 2)
    batch = b.flush("size")
    assert (len(batch), batch.first_position, batch.last_position) == (3, 0, 2)
    assert len(b) == 0 and b.first_position is None


def test_window_counts_from_first_record() -> None:
    clock = Clock()
    b = BatchBuilder(max_records=100, window_seconds=2, clock=clock)
    assert b.until_next() is None
    b.add({}, 1, 0)
    clock.now += 1.5
    b.add({}, 1, 1)
    assert b.until_next() == 0.5
    clock.now += 1
    assert b.until_next() == 0


def test_byte_cap_refuses_the_record_that_would_pass_it() -> None:
    b = BatchBuilder(max_records=100, window_seconds=0, envelope_bytes=100, max_bytes=1000)
    assert b.fits(5000)  # the first record always fits, however large
    b.add({}, 400, 0)
    assert b.fits(500)
    b.add({}, 500, 1)
    assert not b.fits(1)
    assert b.flush("bytes").payload_bytes == 1000


def test_fill_stops_at_size_and_bytes_like_add() -> None:
    kept = [({"n": i}, 300, 10 + i) for i in range(10)]
    b = BatchBuilder(max_records=4, window_seconds=0, envelope_bytes=100, max_bytes=1000)
    assert b.fill(kept, 0) == 3  # 100 + 3*300 = 1000: a fourth would pass the cap
    assert not b.full and b.first_position == 10
    assert b.flush("bytes").last_position == 12
    b = BatchBuilder(max_records=2, window_seconds=0)
    assert b.fill(kept, 5) == 7 and b.full
    huge = [({}, 10_000, 0), ({}, 1, 1)]
    b = BatchBuilder(max_records=5, window_seconds=0, max_bytes=1000)
    assert b.fill(huge, 0) == 1  # the first record always goes in, alone
