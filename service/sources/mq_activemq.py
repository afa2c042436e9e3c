"""Amazon MQ for ActiveMQ: the ActiveMQ engine of :mod:`service.sources.mq`, over STOMP.

Lambda reads ActiveMQ with OpenWire, ActiveMQ's own protocol, which has no Python client.
Every ActiveMQ broker (Amazon MQ's included: ``stomp+ssl://...:61614``) also serves STOMP
1.2 for the same queues, and stompman is a maintained asyncio STOMP client, so esmd speaks
STOMP: ``SUBSCRIBE`` with ``ack:client-individual`` and ``activemq.prefetchSize`` (the
poller sizes it to the batch), ``ACK`` per message once its batch succeeded or was filtered
out, ``NACK`` per message of a failed batch. ActiveMQ takes a STOMP NACK as a poison ack:
with the broker's redelivery plugin (Amazon MQ's default configuration has one; the local
broker's, service/devtools/EsmdActiveMQBroker.java, redelivers 5 times) the message comes
back ``redelivered: true`` and, past ``maximumRedeliveries``, lands in the broker's
dead-letter queue; without the plugin it goes to the dead-letter queue at once.

A STOMP MESSAGE frame carries what Lambda's ActiveMQ record holds (see :func:`lambda_message`),
but for two broker clocks: ``brokerInTime`` is the message's JMS timestamp and
``brokerOutTime`` the time esmd received it. A text message arrives without a
``content-length`` header, a bytes message with one (ActiveMQ's STOMP mapping; see
:func:`_message_type`).

A refused login (ActiveMQ answers CONNECT with an ERROR frame: "User name [...] or password is
invalid.") is :class:`~service.errors.SourceAuthError`, the mapping's EVENT_SOURCE_AUTHN_ERROR;
a queue the user may not read (SUBSCRIBE refused: "... is not authorized to read from ...")
is EVENT_SOURCE_AUTHZ_ERROR.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import quote, urlsplit

import stompman
from stompman.frames import AnyServerFrame

from service.errors import SourceAuthError, SourceError

if TYPE_CHECKING:
    from service.sources.mq import Broker, Deliver

#: the endpoint schemes this engine speaks (DescribeBroker lists every protocol's) -> TLS
SCHEMES: dict[str, Literal[True] | None] = {
    "stomp": None,
    "stomp+nio": None,
    "stomp+ssl": True,
    "stomp+nio+ssl": True,
}
#: STOMP and JMS headers of a MESSAGE frame, and the redelivery plugin's bookkeeping: the
#: rest are the message's properties
_NOT_PROPERTIES = frozenset(
    {
        "ack",
        "amq-msg-type",  # a STOMP producer's choice of text or bytes, kept by ActiveMQ
        "content-length",
        "content-type",
        "correlation-id",
        "destination",
        "expires",
        "JMSXUserID",
        "message-id",
        "original-destination",
        "persistent",
        "priority",
        "redelivered",
        "redeliveryDelay",
        "reply-to",
        "scheduledJobId",
        "AMQ_SCHEDULED_DELAY",
        "AMQ_SCHEDULED_ID",
        "subscription",
        "timestamp",
        "type",
    }
)
_DESTINATION_PREFIXES = {
    "/queue/": "queue://",
    "/topic/": "topic://",
    "/temp-queue/": "temp-queue://",
    "/temp-topic/": "temp-topic://",
}
#: seconds the broker has to answer CONNECT and SUBSCRIBE
CONNECT_TIMEOUT = 10
AUTHZ_ERROR = "EVENT_SOURCE_AUTHZ_ERROR"
#: STOMP heart-beats both ways, in milliseconds
HEARTBEAT_MS = 5000
#: seconds a closing connection has to say DISCONNECT and close its socket
CLOSE_GRACE = 3


@dataclass(frozen=True, slots=True)
class Delivery:
    """One MESSAGE frame and when it arrived (Lambda's brokerOutTime)."""

    frame: stompman.AckableMessageFrame
    received_ms: int


def lambda_message(headers: Mapping[str, str], body: bytes, received_ms: int) -> dict[str, Any]:
    """A STOMP MESSAGE frame from ActiveMQ as Lambda's ActiveMQ record, field for field and
    in Lambda's order (an event captured from Lambda: an absent correlation id or type is
    ``""``, an absent reply-to the string ``"null"``, no properties ``null``)."""
    properties = {k: v for k, v in headers.items() if k not in _NOT_PROPERTIES}
    timestamp = int(headers.get("timestamp") or 0)
    return {
        "messageID": headers.get("message-id", ""),
        "messageType": _message_type(headers),
        "timestamp": timestamp,
        "deliveryMode": 2 if headers.get("persistent") == "true" else 1,
        "correlationID": headers.get("correlation-id", ""),
        "replyTo": _jms_destination(headers.get("reply-to")),
        "destination": {"physicalName": _physical_name(headers.get("destination", ""))},
        "redelivered": headers.get("redelivered") == "true",
        "type": headers.get("type", ""),
        "expiration": int(headers.get("expires") or 0),
        "priority": int(headers.get("priority") or 4),
        "data": base64.b64encode(body).decode(),
        "brokerInTime": timestamp,
        "brokerOutTime": received_ms,
        "properties": properties or None,
    }


def _message_type(headers: Mapping[str, str]) -> str:
    """ActiveMQ sends a BytesMessage with a ``content-length`` header, a TextMessage
    without; but a STOMP producer's ``amq-msg-type`` (kept as a property) wins, as the
    broker gave it precedence over the ``content-length`` it then kept too."""
    kind = headers.get("amq-msg-type") or ("bytes" if "content-length" in headers else "text")
    return "jms/bytes-message" if kind == "bytes" else "jms/text-message"


def _physical_name(destination: str) -> str:
    for prefix in _DESTINATION_PREFIXES:
        if destination.startswith(prefix):
            return destination[len(prefix) :]
    return destination


def _jms_destination(destination: str | None) -> str:
    """``/queue/replies`` as JMS prints it, ``queue://replies``; none: ``"null"``."""
    if not destination:
        return "null"
    for prefix, scheme in _DESTINATION_PREFIXES.items():
        if destination.startswith(prefix):
            return scheme + destination[len(prefix) :]
    return destination


class ActiveMqEngine:
    """The engine for one mapping's ActiveMQ broker (``ENGINES["activemq"]``)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.endpoints = tuple(e for e in broker.endpoints if _scheme(e) in SCHEMES)
        self._envelope = {"eventSource": "aws:mq", "eventSourceArn": broker.arn}

    def consumer(self, endpoint: str) -> StompConsumer:
        return StompConsumer(self._broker, endpoint)

    def record(self, delivery: Delivery) -> dict[str, Any]:
        frame = delivery.frame
        # a TypedDict of the standard headers to stompman; every header is a string
        headers = cast("dict[str, str]", frame.headers)
        return lambda_message(headers, frame.body, delivery.received_ms)

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._envelope, "messages": records}


def _scheme(endpoint: str) -> str:
    return endpoint.split("://", 1)[0].lower()


class StompConsumer:
    """One STOMP connection consuming the mapping's queue (an MqConsumer).

    stompman runs the connection in a task group; it lives in a session task of its own, so
    a lost connection ends that task (and ``consume``) rather than cancel the caller.
    stompman may reconnect once by itself; the acks of deliveries from before are then
    skipped, and the broker, which requeued them when the connection dropped, delivers
    them again.
    """

    def __init__(self, broker: Broker, endpoint: str) -> None:
        url = urlsplit(endpoint)
        self._broker = broker
        self._endpoint = endpoint
        self._errors: list[str] = []
        self._client = stompman.Client(
            [_parameters(url.hostname or "", url.port or 61613, broker)],
            ssl=SCHEMES[_scheme(endpoint)],
            on_error_frame=None,  # noted by the connection class, and logged by esmd
            # ActiveMQ drops a connection silent for one heart-beat (its default grace): the
            # default 1 s is too short for a loaded event loop (a busy machine lost some)
            heartbeat=stompman.Heartbeat(HEARTBEAT_MS, HEARTBEAT_MS),
            connect_retry_attempts=1,
            connect_timeout=CONNECT_TIMEOUT,
            connection_confirmation_timeout=CONNECT_TIMEOUT,
            no_message_restart_interval=None,  # an idle queue is no reason to reconnect
            max_concurrent_handlers=None,  # the handler only hands the frame over
            connection_class=_watching(self._errors),
        )
        self._session: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closing = asyncio.Event()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._session = asyncio.create_task(self._run(), name=f"stomp {self._endpoint}")
        self._session.add_done_callback(_retrieved)  # consume() or connect() raises it
        await asyncio.wait({self._ready, self._session}, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.done():
            self._session.result()  # raises why it ended
            raise ConnectionError(f"{self._endpoint}: closed while connecting")

    async def _run(self) -> None:
        assert self._ready is not None
        try:
            async with self._client:
                self._ready.set_result(None)
                await self._closing.wait()
                # leave by an exception: on a clean exit stompman would first wait for every
                # subscription to end (a refused one may never be removed)
                raise _Closed
        except _Closed:
            return
        except stompman.FailedAllConnectAttemptsError as exc:
            raise self._refusal(exc) from None
        except BaseExceptionGroup as group:  # the frame reader's failure, from the task group
            lost = group.subgroup(stompman.FailedAllConnectAttemptsError)
            if lost is None:
                raise
            raise ConnectionError(f"{self._endpoint}: connection lost") from None

    def _refusal(self, exc: stompman.FailedAllConnectAttemptsError) -> Exception:
        """Why CONNECT failed: credentials refused (an ERROR frame from ActiveMQ's
        authentication), else "not reachable now"."""
        refused = next((e for e in self._errors if "Security" in e or "password" in e), None)
        if refused is not None:
            return SourceAuthError(f"ActiveMQ {self._endpoint} refused the login: {refused}")
        return ConnectionError(f"{self._endpoint}: {exc!r}")

    async def consume(self, prefetch: int, deliver: Deliver) -> None:
        session = self._session
        if session is None:
            raise ConnectionError("consume() before connect()")

        async def handle(frame: stompman.AckableMessageFrame) -> None:
            deliver(Delivery(frame, int(time.time() * 1000)))

        try:
            await self._client.subscribe_with_manual_ack(
                f"/queue/{self._broker.queue}",
                handle,
                ack="client-individual",
                headers={"activemq.prefetchSize": str(prefetch)},
                receipt_timeout=CONNECT_TIMEOUT,  # a refusal comes back as an ERROR frame
            )
        except stompman.SubscriptionError as exc:
            raise self._subscribe_refusal(exc) from None
        except stompman.Error as exc:
            raise ConnectionError(f"{self._endpoint}: subscribe failed: {exc!r}") from None
        await asyncio.shield(session)  # raises what ended it
        last = f": {self._errors[-1]}" if self._errors else ""
        raise ConnectionError(f"{self._endpoint}: connection closed{last}")

    def _subscribe_refusal(self, exc: stompman.SubscriptionError) -> Exception:
        """ActiveMQ's authorization refusing to let the user read the queue ("User ... is not
        authorized to read from: queue://...") is EVENT_SOURCE_AUTHZ_ERROR; else retried."""
        text = _error_text(exc.frame) if exc.frame is not None else exc.reason
        if "not authorized" in text:
            return SourceError(AUTHZ_ERROR, f"ActiveMQ {self._endpoint}: {text}")
        return ConnectionError(f"{self._endpoint}: subscribe failed: {text}")

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self._live():
            for delivery in deliveries:
                await delivery.frame.ack()

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        if self._live():
            for delivery in deliveries:
                await delivery.frame.nack()

    def _live(self) -> bool:
        """False once the connection is gone: the broker has taken back what it had given
        out (stompman would skip each frame with a warning)."""
        return self._session is not None and not self._session.done()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        self._closing.set()
        try:
            await asyncio.wait({session}, timeout=CONNECT_TIMEOUT)
        finally:
            # even when the caller is cancelled: stompman closes the socket on its way out,
            # and a session cancelled in the middle of that would leave it open
            if not session.done():
                await asyncio.wait({session}, timeout=CLOSE_GRACE)
            if not session.done():
                session.cancel()


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class _Closed(Exception):
    """Ends a session that ``close()`` asked to end."""


def _parameters(host: str, port: int, broker: Broker) -> stompman.ConnectionParameters:
    # stompman unquotes the passcode (it may come from a URL): quote it so "%" survives
    return stompman.ConnectionParameters(host, port, broker.username, quote(broker.password))


def _error_text(frame: stompman.ErrorFrame) -> str:
    """The ERROR frame's message, and the first line of its body (ActiveMQ: the exception)
    when that says more."""
    message = frame.headers.get("message", "")
    body = frame.body.decode(errors="replace").strip().splitlines()
    return f"{message} ({body[0]})" if body and body[0] not in message else message


def _watching(errors: list[str]) -> type[stompman.connection.Connection]:
    """stompman's connection, noting ERROR frames into ``errors``: ActiveMQ answers a refused
    CONNECT with one and closes, before stompman's own ERROR handling is listening."""

    class Watched(stompman.connection.Connection):
        async def read_frames(self) -> AsyncGenerator[AnyServerFrame, None]:
            async for frame in super().read_frames():
                if isinstance(frame, stompman.ErrorFrame):
                    errors.append(_error_text(frame))
                yield frame

    return Watched
