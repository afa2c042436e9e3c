"""Amazon MQ for RabbitMQ: the engine of :mod:`service.sources.mq` for RabbitMQ brokers.

AMQP 0-9-1 through aiormq (the maintained asyncio client under aio-pika; its lower layer is
enough here and costs less per message): one connection and one channel per consumer,
``basic.qos`` prefetch, ``basic.consume`` with manual acknowledgement, ``basic.ack`` and
``basic.nack(requeue=True)``. PLAIN authentication, as Lambda (the only mechanism it uses).

The event is Lambda's (``eventSource: "aws:rmq"``): ``rmqMessagesByQueue`` keyed
``"<queue>::<virtual host>"``; each message is ``basicProperties``, ``redelivered`` and the
body as base64 ``data``. Lambda renders ``basicProperties`` with the RabbitMQ Java client's
``AMQP.BasicProperties`` serialized by Gson, and so does :func:`basic_properties`: every
property present, absent ones ``null``; header strings (AMQP long strings) as ``{"bytes":
[...]}`` with Java's signed bytes; ``timestamp`` as Gson formats a ``java.util.Date``
("Jan 1, 1970, 12:33:41 AM", UTC); ``bodySize`` the body's length in bytes.

Poison messages: Lambda requeues a failed batch, and RabbitMQ redelivers it as long as the
queue lets it. A quorum queue with ``x-delivery-limit`` (and ``x-dead-letter-exchange``)
dead-letters a message after that many redeliveries; a classic queue redelivers forever.
Amazon MQ's docs advise the same; see docs/mq.md.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import urllib.parse
from collections.abc import Sequence
from typing import Any, cast

import aiormq
import structlog
from aiormq.abc import DeliveredMessage
from pamqp import commands

from service.errors import SourceAuthError, SourceError
from service.sources.mq import Broker, Deliver

SCHEMES = ("amqp://", "amqps://")
CONNECT_TIMEOUT_SECONDS = 10.0
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _deliver(message: DeliveredMessage) -> commands.Basic.Deliver:
    """The Basic.Deliver frame of a consumed message (what a consumer receives)."""
    return cast(commands.Basic.Deliver, message.delivery)


def java_date(moment: datetime.datetime) -> str:
    """A date as Gson writes a ``java.util.Date`` (US locale, UTC): "Jan 1, 1970, 12:33:41 AM"."""
    at = moment.astimezone(datetime.UTC) if moment.tzinfo else moment
    hour = at.hour % 12 or 12
    half = "AM" if at.hour < 12 else "PM"
    month = _MONTHS[at.month - 1]
    return f"{month} {at.day}, {at.year}, {hour}:{at.minute:02d}:{at.second:02d} {half}"


def _java_bytes(raw: bytes) -> dict[str, list[int]]:
    """A LongString as Gson writes it: its bytes, signed as Java's are."""
    return {"bytes": [b - 256 if b > 127 else b for b in raw]}


def header_value(value: Any) -> Any:
    """One header value as Lambda renders it (the Java client's type, through Gson)."""
    if isinstance(value, str):  # a long string ('S'), as pamqp decodes it
        return _java_bytes(value.encode())
    if isinstance(value, bytearray):  # a byte array ('x'): Java's byte[], a plain list
        return _java_bytes(bytes(value))["bytes"]
    if isinstance(value, bytes):  # a long string that is not UTF-8
        return _java_bytes(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return java_date(value)
    if isinstance(value, dict):
        return {str(k): header_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [header_value(v) for v in value]
    return str(value)


def basic_properties(message: DeliveredMessage) -> dict[str, Any]:
    """A message's properties as Lambda's ``basicProperties``, field for field, in order."""
    p = message.header.properties
    return {
        "contentType": p.content_type,
        "contentEncoding": p.content_encoding,
        "headers": header_value(p.headers) if p.headers is not None else None,
        "deliveryMode": p.delivery_mode,
        "priority": p.priority,
        "correlationId": p.correlation_id,
        "replyTo": p.reply_to,
        "expiration": p.expiration,
        "messageId": p.message_id,
        "timestamp": java_date(p.timestamp) if p.timestamp is not None else None,
        "type": p.message_type,
        "userId": p.user_id,
        "appId": p.app_id,
        "clusterId": p.cluster_id,
        "bodySize": len(message.body),
    }


def connection_url(endpoint: str, broker: Broker) -> str:
    """The endpoint with the credentials and the virtual host (every part quoted)."""
    scheme, _, rest = endpoint.partition("://")
    host = rest.split("/", 1)[0]
    user = urllib.parse.quote(broker.username, safe="")
    password = urllib.parse.quote(broker.password, safe="")
    vhost = urllib.parse.quote(broker.virtual_host, safe="")
    return f"{scheme}://{user}:{password}@{host}/{vhost}"


class RabbitEngine:
    """The RabbitMQ engine (``factory(broker)`` of service.sources.mq.ENGINES)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.endpoints = tuple(e for e in broker.endpoints if e.startswith(SCHEMES))
        self._key = f"{broker.queue}::{broker.virtual_host}"

    def consumer(self, endpoint: str) -> RabbitConsumer:
        return RabbitConsumer(self._broker, endpoint)

    def record(self, delivery: DeliveredMessage) -> dict[str, Any]:
        return {
            "basicProperties": basic_properties(delivery),
            "redelivered": bool(_deliver(delivery).redelivered),
            "data": base64.b64encode(delivery.body).decode(),
        }

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "eventSource": "aws:rmq",
            "eventSourceArn": self._broker.arn,
            "rmqMessagesByQueue": {self._key: records},
        }


class RabbitConsumer:
    """One connection and channel consuming the queue (service.sources.mq.MqConsumer)."""

    def __init__(self, broker: Broker, endpoint: str) -> None:
        self._broker = broker
        self._endpoint = endpoint
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._log = structlog.get_logger("esmd.mq.rabbitmq")

    async def connect(self) -> None:
        url = connection_url(self._endpoint, self._broker)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                self._connection = await aiormq.connect(url)
                self._channel = await self._connection.channel()
        except aiormq.exceptions.AuthenticationError:
            raise SourceAuthError(f"RabbitMQ at {self._endpoint} refused BASIC_AUTH") from None
        except aiormq.exceptions.ProbableAuthenticationError:  # ACCESS_REFUSED at login
            raise SourceAuthError(f"RabbitMQ at {self._endpoint} refused BASIC_AUTH") from None
        except aiormq.exceptions.InvalidFrameError:
            # logged in, then Connection.Close instead of OpenOk: the vhost was refused
            vhost = self._broker.virtual_host
            raise SourceError(
                "EVENT_SOURCE_AUTHZ_ERROR",
                f"RabbitMQ did not open virtual host {vhost!r} (none, or no permission)",
            ) from None

    async def consume(self, prefetch: int, deliver: Deliver) -> None:
        connection, channel = self._connection, self._channel
        assert connection is not None and channel is not None, "connect() first"

        async def on_message(message: DeliveredMessage) -> None:
            deliver(message)

        await channel.basic_qos(prefetch_count=prefetch)
        try:
            await channel.basic_consume(self._broker.queue, on_message, no_ack=False)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise SourceError(
                "EVENT_SOURCE_AUTHZ_ERROR", f"RabbitMQ: no access to the queue: {exc}"
            ) from None
        await self._until_lost(channel, connection)

    @staticmethod
    async def _until_lost(
        channel: aiormq.abc.AbstractChannel, connection: aiormq.abc.AbstractConnection
    ) -> None:
        """Wait until the channel or connection closes, or the broker cancels the consumer
        (the queue was deleted): each is a lost connection to the poller, which reconnects."""
        cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_cancel(frame: Any) -> None:
            if not cancelled.done():
                cancelled.set_result(None)

        channel.on_consumer_cancel_callbacks.add(on_cancel)
        watched = [channel.closing, connection.closing, cancelled]
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            channel.on_consumer_cancel_callbacks.discard(on_cancel)
            for future in watched:
                future.cancel()  # observers: cancelling one stops only the watching
        if cancelled in done:
            raise ConnectionError("RabbitMQ cancelled the consumer (the queue was deleted?)")
        causes = [f.exception() for f in done if not f.cancelled() and f.exception()]
        raise ConnectionError(f"RabbitMQ connection lost: {causes[0] if causes else 'closed'!r}")

    async def ack(self, deliveries: Sequence[DeliveredMessage]) -> None:
        await self._answer(deliveries, ack=True)

    async def nack(self, deliveries: Sequence[DeliveredMessage]) -> None:
        await self._answer(deliveries, ack=False)

    async def _answer(self, deliveries: Sequence[DeliveredMessage], *, ack: bool) -> None:
        channel = self._channel
        if channel is None or channel.is_closed or not deliveries:
            return  # the broker gave them back when the channel closed
        last = len(deliveries) - 1
        try:
            for i, message in enumerate(deliveries):
                tag = int(_deliver(message).delivery_tag or 0)
                if ack:
                    await channel.basic_ack(tag, wait=i == last)
                else:
                    await channel.basic_nack(tag, requeue=True, wait=i == last)
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            self._log.info("answer not sent: the broker redelivers", error=repr(exc))

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception as exc:  # closing a broken connection: nothing left to do
                self._log.debug("close failed", error=repr(exc))
