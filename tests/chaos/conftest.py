"""Chaos fixtures: the recording sink, and private brokers a test may stop and restart."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from service.devtools import servers
from service.devtools.esmd_process import free_port
from service.devtools.sink import Sink

#: ESMD_CHAOS_SEED repeats a run; otherwise each test draws its seed and prints it
SEED = int(os.environ.get("ESMD_CHAOS_SEED", "0")) or None


@pytest.fixture
def seed() -> int:
    import random

    value = SEED or random.SystemRandom().randrange(1, 2**31)
    print(f"\nESMD_CHAOS_SEED={value}")
    return value


@pytest.fixture
async def sink(seed: int) -> AsyncIterator[Sink]:
    # each invocation takes 0.5 s and the sources' rates pass what the lanes carry: lanes stay
    # busy, so a kill or a commit lands while a batch is in flight, where a wrong position hurts
    s = Sink(seed=seed, delay=0.5)
    await s.start()
    yield s
    await s.close()


def _private(server: servers.Server) -> Iterator[servers.Server]:
    """Start a private instance from an empty state folder; stop it and drop its state."""
    import shutil

    shutil.rmtree(servers.STATE / server.name, ignore_errors=True)
    servers.ensure(server)
    try:
        yield server
    finally:
        servers.stop(server)
        shutil.rmtree(servers.STATE / server.name, ignore_errors=True)


def _two_free_ports() -> int:
    """A port whose next one is free too (a Kafka broker and its controller)."""
    while True:
        port = free_port()
        try:
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


@pytest.fixture
def private_kafka() -> Iterator[servers.Server]:
    """A broker of this test's own: the shared one (9092) must never be stopped."""
    yield from _private(servers.private_kafka(f"kafka-chaos-{os.getpid()}", _two_free_ports()))


@pytest.fixture
def private_elasticmq() -> Iterator[servers.Server]:
    """An ElasticMQ of this test's own, persisting to disk, so a restart keeps its messages."""
    yield from _private(servers.private_elasticmq(f"elasticmq-chaos-{os.getpid()}", free_port()))
