"""Session fixtures: the real servers the integration tests talk to, started when absent."""

from __future__ import annotations

import uuid

import pytest

from tests import servers


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return servers.kafka_bootstrap()


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    return servers.moto_endpoint()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, groups and mapping names."""
    return uuid.uuid4().hex[:8]
