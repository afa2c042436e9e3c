"""Session fixtures: the real servers the integration tests talk to, started when absent."""

from __future__ import annotations

import uuid

import pytest

from tests import servers


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return servers.kafka_bootstrap()


@pytest.fixture(scope="session")
def kafka_auth_internal() -> str:
    """The kafka-auth broker (SASL, SSL with client certificates): its plaintext INTERNAL
    listener, for topics and producing; service.devtools.servers.auth_address(listener)
    gives the others."""
    return servers.kafka_auth_internal()


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    return servers.moto_endpoint()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, groups and mapping names."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True, scope="session")
def _aws_test_credentials() -> None:
    """moto_server and the stand-in AWS endpoints accept any credentials; botocore needs some."""
    import os

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def elasticmq_endpoint() -> str:
    return servers.elasticmq_endpoint()


@pytest.fixture(scope="session")
def prometheus_endpoint() -> str:
    """Prometheus (Debian's package, unpacked into .cache/), scraping the file_sd targets in
    its state folder every second."""
    return servers.prometheus_endpoint()


@pytest.fixture(scope="session")
def mongo_endpoint() -> str:
    """mongo-java-server (the DocumentDB stand-in, service/devtools/EsmdMongoServer.java)."""
    return servers.mongo_endpoint()


@pytest.fixture(scope="session")
def rabbitmq_endpoint() -> str:
    """The shared RabbitMQ node (Debian's package, unpacked into .cache/): amqp://host:port;
    user service.devtools.rabbitmq.USER on the vhosts / and esmd."""
    return servers.rabbitmq_endpoint()


@pytest.fixture(scope="session")
def apicurio_registry() -> str:
    """Apicurio Registry (built from Maven Central by service/devtools/apicurio-pom.xml, schemas
    in memory): the base URL of its Confluent-compatible API, .../apis/ccompat/v7."""
    return servers.apicurio_registry()


@pytest.fixture(scope="session")
def activemq_endpoint() -> str:
    """ActiveMQ Classic (service/devtools/EsmdActiveMQBroker.java): ``stomp://host:port``."""
    return servers.activemq_endpoint()
