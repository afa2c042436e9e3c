"""Amazon MQ for ActiveMQ: the engine of :mod:`service.sources.mq` for ActiveMQ brokers.

Not built yet (its own branch builds it): a mapping on an ActiveMQ broker fails to start
with a clear message, and the mapping shows it as its last error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.sources.mq import Broker


class ActiveMqEngine:
    """Placeholder with the factory's signature (``ActiveMqEngine(broker)``)."""

    def __init__(self, broker: Broker) -> None:
        raise NotImplementedError(
            f"{broker.arn}: ActiveMQ engine not built yet; esmd consumes RabbitMQ brokers only"
        )
