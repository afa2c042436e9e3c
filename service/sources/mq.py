"""Amazon MQ source: one poller for both of Amazon MQ's engines, RabbitMQ and ActiveMQ.

Lambda consumes one queue of a broker (``Queues: [name]``) with the broker's own consumer
protocol, batches what it receives, and acknowledges only once a batch succeeded or was
filtered out; on a function error the whole batch goes back to the broker, which redelivers
it (``redelivered: true``) and, past its redelivery limit, moves it to its dead-letter queue
("Using Lambda with Amazon MQ", "Troubleshoot Amazon MQ event source mapping errors"). So
does this poller:

- a pool of consumers (``mq.brokers.<broker>.consumers``, default 1: one consumer keeps the
  queue's order), each its own connection, each reconnecting with backoff when the broker
  goes away; what a lost connection had not acknowledged the broker gives out again, so a
  broker restart loses nothing (at least once, as Lambda);
- prefetch sized to the batch: ``BatchSize * (MaximumConcurrency + 1)`` unacknowledged
  deliveries per consumer (one batch filling while the others are invoked), at most 65,535;
- one unordered :class:`~service.lane.Lane` with ``MaximumConcurrency`` batches in flight:
  AWS's are 1 for RabbitMQ and 5 for ActiveMQ (raised by AWS Support); esmd takes
  ``ScalingConfig.MaximumConcurrency`` (2..1000) as that figure, its own extension;
- this poller is the lane's Acker: success and filtered out -> ack; a failed batch -> nack
  (requeue), every message of it; a batch never invoked (a stop) -> nack.

Where the broker is: ``mq.brokers[<EventSourceArn or broker name>]`` (engine, endpoints),
esmd's own setting, else the MQ API's DescribeBroker (EngineType, each instance's
Endpoints). Credentials: the BASIC_AUTH secret; a refused password is the state reason
EVENT_SOURCE_AUTHN_ERROR, a refused virtual host or queue EVENT_SOURCE_AUTHZ_ERROR.

Engines (``ENGINES``, imported lazily) speak the broker's protocol and know Lambda's record
shape; everything else is here. An engine module has a class ``factory(broker: Broker)``
satisfying :class:`MqEngine`, whose consumers satisfy :class:`MqConsumer`. A *delivery* is
the engine's own object for one message handed to a consumer: it carries the tag (AMQP
delivery tag, STOMP ack id) its consumer acknowledges it by; this module never looks inside
it, it only hands it back to the consumer that delivered it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog

from service.context import MappingContext
from service.errors import SourceError
from service.filters import mq_filter_view
from service.invoke import Backoff
from service.lane import Kept, Lane
from service.scaling import PollerPool, PoolBounds
from service.secrets import read_credentials, string_fields
from service.sources.mq_access import VIRTUAL_HOST, basic_auth_uri, virtual_host

if TYPE_CHECKING:
    from service.filters import FilterCriteria

#: engine name -> "module:factory"
ENGINES = {
    "rabbitmq": "service.sources.mq_rabbit:RabbitEngine",
    "activemq": "service.sources.mq_activemq:ActiveMqEngine",
}
#: AWS's concurrent invocations per MQ mapping ("Using Lambda with Amazon MQ")
DEFAULT_CONCURRENCY = {"rabbitmq": 1, "activemq": 5}
MAX_PREFETCH = 65_535  # AMQP's prefetch-count is a short
CONFIG_NOT_VALID = "ESM_CONFIG_NOT_VALID"
ACK_GRACE_SECONDS = 5.0  # a stop waits this long for the last acks to go out

#: takes one delivery, on the event loop; must not block
Deliver = Callable[[Any], None]


@dataclass(frozen=True)
class Broker:
    """What an engine needs to reach and read the mapping's queue."""

    arn: str
    engine: str  # "rabbitmq" | "activemq"
    endpoints: tuple[str, ...]  # every endpoint known; the engine keeps those it speaks
    queue: str
    virtual_host: str  # RabbitMQ's; "/" by default
    username: str
    password: str = field(repr=False)


class MqConsumer(Protocol):
    """One connection consuming the queue, made by :meth:`MqEngine.consumer`. The poller calls
    ``connect()``, then ``consume()``, acks and nacks what this consumer delivered, and
    ``close()`` once whatever happened."""

    async def connect(self) -> None:
        """Open the connection. Raise :class:`~service.errors.SourceAuthError` when the
        broker refuses the credentials, a SourceError for other refusals it will repeat
        (EVENT_SOURCE_AUTHZ_ERROR: no access to the vhost or queue); anything else (OSError,
        ConnectionError, a timeout) means "not reachable now": the poller retries."""
        ...

    async def consume(self, prefetch: int, deliver: Deliver) -> None:
        """Consume the queue with at most ``prefetch`` unacknowledged deliveries, handing
        each to ``deliver`` in the order the broker sends them; return (or raise) only when
        the connection is lost."""
        ...

    async def ack(self, deliveries: Sequence[Any]) -> None:
        """Acknowledge: the broker forgets them. Deliveries of a connection lost meanwhile
        are skipped (the broker gives them out again); never raises for that."""
        ...

    async def nack(self, deliveries: Sequence[Any]) -> None:
        """Give back for redelivery, marked redelivered (RabbitMQ: basic.nack requeue;
        ActiveMQ: its redelivery policy, then its DLQ). Same rule for lost connections."""
        ...

    async def close(self) -> None:
        """Close; what is unacknowledged returns to the broker. Idempotent."""
        ...


class MqEngine(Protocol):
    """One engine for one mapping's broker: ``factory(broker)`` of :data:`ENGINES`."""

    #: the endpoints of ``broker.endpoints`` this engine speaks, tried in turn
    endpoints: tuple[str, ...]

    def consumer(self, endpoint: str) -> MqConsumer: ...

    def record(self, delivery: Any) -> dict[str, Any]:
        """The delivery as Lambda's record for the engine; its payload is base64 ``data``."""
        ...

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Lambda's event around a batch of records (``make_event([])``: the envelope)."""
        ...


def load_engine(broker: Broker) -> MqEngine:
    path = ENGINES.get(broker.engine)
    if path is None:
        raise SourceError(CONFIG_NOT_VALID, f"{broker.arn}: unknown engine {broker.engine!r}")
    module, _, attr = path.partition(":")
    engine: MqEngine = getattr(importlib.import_module(module), attr)(broker)
    return engine


@dataclass(frozen=True, slots=True, eq=False)
class Received:
    """A delivery and the consumer that delivered it (and alone may answer it)."""

    delivery: Any
    consumer: MqConsumer


class MqCodec:
    """Deliveries -> Lambda records (the engine's), filtered on ``data``; remembers each
    kept record's delivery in ``held`` until it is acknowledged."""

    def __init__(self, engine: MqEngine, held: dict[int, Received]) -> None:
        self._engine = engine
        self._held = held
        self.envelope_bytes = len(orjson.dumps(engine.make_event([])))

    def position(self, raw: Received) -> int:
        return 0

    def decode(
        self, raws: Sequence[Received], filters: FilterCriteria | None
    ) -> tuple[list[Kept], list[Any], int]:
        kept: list[Kept] = []
        filtered: list[Any] = []
        match = filters.matcher if filters is not None else None
        record_of = self._engine.record
        for raw in raws:
            record = record_of(raw.delivery)
            if match is None or match(mq_filter_view(record)):
                self._held[id(record)] = raw
                kept.append((record, len(orjson.dumps(record)) + 1, 0))
            else:
                filtered.append(raw)
        return kept, filtered, 0

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return self._engine.make_event(records)


class MqPoller:
    """Consumes one queue into one unordered lane; see the module docstring."""

    def __init__(self, context: MappingContext) -> None:
        cfg = context.config
        self._context = context
        self._arn = cfg.EventSourceArn or ""
        self._queue = (cfg.Queues or [""])[0]
        self._stopping = asyncio.Event()
        self._held: dict[int, Received] = {}  # id(kept record) -> its delivery
        self._pending: list[Received] = []  # received this loop iteration, not yet in the lane
        self._lane: Lane | None = None
        self._pool: PollerPool | None = None
        self._engine: MqEngine | None = None
        self._prefetch = 1
        self._fatal: BaseException | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self._acked = 0
        self._log = structlog.get_logger("esmd.mq").bind(mapping=cfg.Name)

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        broker, consumers = await self._broker()
        engine = self._engine = load_engine(broker)
        if not engine.endpoints:
            raise SourceError(
                CONFIG_NOT_VALID, f"{self._arn}: no endpoint the {broker.engine} engine speaks"
            )
        cfg = self._context.config
        scaling = cfg.ScalingConfig.MaximumConcurrency if cfg.ScalingConfig else None
        wanted = scaling or DEFAULT_CONCURRENCY[broker.engine]
        concurrency = max(1, self._context.worker.part(wanted))
        self._prefetch = min(MAX_PREFETCH, cfg.batch_size * (concurrency + 1))
        lane = self._lane = self._context.new_lane(
            "queue",
            MqCodec(engine, self._held),
            acker=self,
            ordered=False,
            slots=asyncio.Semaphore(concurrency),
        )
        lane.start().add_done_callback(self._lane_ended)
        pool = self._pool = PollerPool(
            self._consume_loop,
            PoolBounds(consumers, consumers),
            self._context.metrics,
            "mq consumer",
        )
        pool.start()
        self._log.info(
            "consuming",
            queue=self._queue,
            engine=broker.engine,
            endpoints=list(engine.endpoints),
            consumers=consumers,
            concurrency=concurrency,
            prefetch=self._prefetch,
        )
        try:
            await self._stopping.wait()
        finally:
            await self._drain(lane, pool)
        if self._fatal is not None:
            raise self._fatal

    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> dict[str, Any]:
        lane, engine = self._lane, self._engine
        return {
            "queue": self._queue,
            "endpoints": list(engine.endpoints) if engine else [],
            "consumers": self._pool.size if self._pool else 0,
            "prefetch": self._prefetch,
            "queued": lane.queued if lane else 0,
            "unacknowledged": len(self._held),
            "acknowledged": self._acked,
        }

    async def _drain(self, lane: Lane, pool: PollerPool) -> None:
        """Let in-flight batches settle and their acks go out while the connections are
        still open; give back the rest; then close the consumers."""
        self._flush()
        await lane.stop(self._context.shutdown_grace)
        if self._acks:
            _, pending = await asyncio.wait(self._acks, timeout=ACK_GRACE_SECONDS)
            for task in pending:
                task.cancel()
        await pool.close()

    def _lane_ended(self, task: asyncio.Task[None]) -> None:
        """A lane that died of a bug stops the poller, which the mapping restarts."""
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())

    def _fail(self, exc: BaseException | None) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopping.set()

    async def _broker(self) -> tuple[Broker, int]:
        """The broker (engine, endpoints, credentials) and how many consumers to run."""
        context, cfg = self._context, self._context.config
        configured = context.esmd.mq.broker_for(self._arn)
        engine: str
        if configured is not None:
            engine, endpoints = configured.engine, tuple(configured.endpoints)
            consumers = configured.consumers
        else:
            engine, endpoints = await self._describe_broker()
            consumers = 1
        if engine != "rabbitmq" and any(
            a.Type == VIRTUAL_HOST for a in cfg.SourceAccessConfigurations
        ):
            raise SourceError(CONFIG_NOT_VALID, f"VIRTUAL_HOST is for RabbitMQ; {engine} has none")
        secret = await read_credentials("BASIC_AUTH", basic_auth_uri(cfg), context.esmd.aws)
        username, password = string_fields("BASIC_AUTH", secret, "username", "password")
        broker = Broker(
            self._arn, engine, endpoints, self._queue, virtual_host(cfg), username, password
        )
        return broker, max(1, context.worker.part(consumers))

    async def _describe_broker(self) -> tuple[str, tuple[str, ...]]:
        """DescribeBroker: (engine, every instance's endpoints)."""
        broker_id = self._arn.split(":")[-1]
        async with self._context.aws_client("mq") as mq:
            resp = await mq.describe_broker(BrokerId=broker_id)
        engine = str(resp.get("EngineType", "")).lower()
        endpoints = tuple(
            e for instance in resp.get("BrokerInstances", []) for e in instance.get("Endpoints", [])
        )
        return engine, endpoints

    # --- consuming ------------------------------------------------------------------------

    async def _consume_loop(self, retire: asyncio.Event) -> None:
        """One consumer: connect (the endpoints in turn), consume until the connection is
        lost, back off, again; until retired or cancelled by the pool's close."""
        engine = self._engine
        assert engine is not None
        backoff, failures = Backoff(0.5, 30.0), 0
        while not retire.is_set():
            endpoint = engine.endpoints[failures % len(engine.endpoints)]
            consumer = engine.consumer(endpoint)
            try:
                await consumer.connect()
                self._context.connected()
                failures = 0
                self._log.info("connected", endpoint=endpoint)
                await self._consume(consumer, retire)
                lost = "connection closed"
            except SourceError as exc:
                self._fail(exc)  # the mapping shows the reason and restarts with backoff
                return
            except Exception as exc:  # not reachable, or lost: the broker requeues the unacked
                lost = repr(exc)
            finally:
                await consumer.close()
            if retire.is_set():
                return
            self._context.metrics.error("polling")
            wait = backoff.delay(failures)
            failures += 1
            self._log.warning("broker connection lost", error=lost, retry_in=round(wait, 2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await retire.wait()

    async def _consume(self, consumer: MqConsumer, retire: asyncio.Event) -> None:
        """Consume until the connection is lost (returns or raises) or the consumer retires."""
        loop = asyncio.get_running_loop()

        def deliver(delivery: Any) -> None:
            if not self._pending:
                loop.call_soon(self._flush)
            self._pending.append(Received(delivery, consumer))

        consuming = asyncio.create_task(consumer.consume(self._prefetch, deliver))
        retiring = asyncio.create_task(retire.wait())
        try:
            await asyncio.wait({consuming, retiring}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            retiring.cancel()
            if not consuming.done():
                consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming  # raises what lost the connection

    def _flush(self) -> None:
        """What arrived during one loop iteration goes to the lane as one chunk. Once
        stopping, deliveries are left unanswered: closing the connection returns them (a
        nack now would have the broker hand them straight back, again and again)."""
        chunk, self._pending = self._pending, []
        if chunk and self._lane is not None and not self._stopping.is_set():
            self._context.metrics.polled.inc(len(chunk))
            self._lane.put(chunk)

    # --- acknowledging (the lane's Acker) ---------------------------------------------------

    def filtered(self, raws: list[Any]) -> None:
        """Filtered out: acknowledged, as Lambda does."""
        self._answer(raws, ack=True)

    def settled(self, records: list[dict[str, Any]], released: list[dict[str, Any]]) -> None:
        """Ack what succeeded; nack (requeue) what was released: a failed batch, whole."""
        held = self._held
        if released:
            self._answer([held.pop(id(r)) for r in released if id(r) in held], ack=False)
            gone = {id(r) for r in released}
            records = [r for r in records if id(r) not in gone]
        self._answer([held.pop(id(r)) for r in records if id(r) in held], ack=True)

    def abandoned(self, items: list[Any]) -> None:
        """Never invoked, or not settled before a stop: back to the broker."""
        held = self._held
        raws = [i if isinstance(i, Received) else held.pop(id(i), None) for i in items]
        self._answer([r for r in raws if r is not None], ack=False)

    def _answer(self, raws: Iterable[Received], *, ack: bool) -> None:
        by_consumer: dict[int, tuple[MqConsumer, list[Any]]] = {}
        for raw in raws:
            by_consumer.setdefault(id(raw.consumer), (raw.consumer, []))[1].append(raw.delivery)
        for consumer, deliveries in by_consumer.values():
            if ack:
                self._acked += len(deliveries)
                self._context.metrics.deleted.inc(len(deliveries))
                self._spawn(consumer.ack(deliveries))
            else:
                self._spawn(consumer.nack(deliveries))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run an ack or nack as a task that shutdown waits for."""
        task = asyncio.create_task(self._guarded(work))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """An engine's ack or nack that failed all the same: logged; the broker redelivers
        whatever it did not hear about."""
        try:
            await work
        except Exception as exc:
            self._context.metrics.error("commit")
            self._log.warning("acknowledgement failed", error=repr(exc))
