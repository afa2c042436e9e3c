"""One adapter per source on its real server, and the harness a contract row runs in.

An adapter creates its source (a topic, a queue, a stream, a table), produces numbered records
to it (``{"n": i, "status": "new"}``, in order, one partition / shard / message group), gives
the mapping's CloudFormation properties, decodes what the target received into ``Rec`` s, and
tells what was acknowledged:

- Kafka: the group's committed offset against the end offset;
- SQS (ElasticMQ): the messages still in the queue, visible or not (a DLQ through the queue's
  redrive policy where a row needs one);
- Kinesis, DynamoDB Streams (moto): what the next run re-reads. ``Contract.rereads`` starts the
  mapping again on the same checkpoint store with a sentinel record put after everything; the
  records that come before the sentinel were not checkpointed.

Ordered sources get an OnFailure destination, an SQS queue on moto_server, read back as AWS's
invocation records (``GivenUp``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from service.daemon import Daemon
from tests.integration.contract import handlers
from tests.integration.contract.handlers import Behaviour, Rec
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    running_daemon,
    scrape,
    wait_for,
)
from tests.integration.stream_helpers import make_stream, put_json

ACCOUNT = "000000000000"
HANDLER = "tests.integration.contract.handlers:handle"
#: the record put after everything when a stream mapping is started again
SENTINEL = 1_000_000
#: tiny backoffs: a retry, a throttle and a destination retry each wait milliseconds
RETRY = {
    "initial_backoff_seconds": 0.01,
    "max_backoff_seconds": 0.2,
    "throttle_backoff_seconds": 0.05,
}


@dataclass(frozen=True)
class GivenUp:
    """One invocation record found in the OnFailure destination."""

    condition: str
    invoke_count: int
    first: Hashable  # position of its first and last record
    last: Hashable
    size: int


def aws_client(service: str, endpoint: str) -> Any:
    return get_session().create_client(service, region_name="us-east-1", endpoint_url=endpoint)


class Source:
    """What every source adapter provides; see the module docstring."""

    label = ""  # the test id's source part
    kind = ""  # the ``source`` label of esmd's metrics
    ordered = True  # Kafka and streams: retried in place, OnFailure destination
    fifo = False

    def __init__(self, name: str, stack: contextlib.AsyncExitStack) -> None:
        self.name = name
        self._stack = stack

    async def setup(self, *, visibility: int = 30, max_receives: int | None = None) -> None:
        raise NotImplementedError

    async def produce(self, ns: Sequence[int], *, age: float = 0) -> None:
        """Put ``{"n": i, "status": "new"}`` for each i, in order; ``age`` seconds old where
        the source lets the producer choose the record's time (Kafka)."""
        raise NotImplementedError

    def mapping(self, **props: Any) -> dict[str, Any]:
        raise NotImplementedError

    def aws(self) -> dict[str, Any]:
        raise NotImplementedError

    def decode(self, event: dict[str, Any]) -> list[Rec]:
        raise NotImplementedError

    #: a FilterCriteria pattern that no produced record matches
    filter_none = ""

    def unknown_ident(self) -> Any:
        """An itemIdentifier of the right shape that names no record of the batch."""
        return "49999999999999999999999999999999999999999999999999999999"

    async def acknowledged(self) -> bool:
        """Everything produced was acknowledged, as far as the running source shows it."""
        return True

    def given_up(self, body: dict[str, Any]) -> GivenUp:
        raise NotImplementedError


# --- Kafka ----------------------------------------------------------------------------------


class KafkaSource(Source):
    label = kind = "kafka"

    def __init__(self, name: str, stack: contextlib.AsyncExitStack, bootstrap: str) -> None:
        super().__init__(name, stack)
        self.bootstrap = bootstrap
        self.topic = f"contract-{name}"
        self.group = f"g-{name}"
        self.partition = f"{self.topic}-0"
        self.produced = 0

    async def setup(self, *, visibility: int = 30, max_receives: int | None = None) -> None:
        await create_topic(self.bootstrap, self.topic, 1)

    async def produce(self, ns: Sequence[int], *, age: float = 0) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            stamp = int((time.time() - age) * 1000) if age else None
            sent = [
                await producer.send(
                    self.topic,
                    json.dumps({"n": n, "status": "new"}).encode(),
                    partition=0,
                    timestamp_ms=stamp,
                )
                for n in ns
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        self.produced += len(ns)

    def mapping(self, **props: Any) -> dict[str, Any]:
        name = props.pop("Name")
        return kafka_mapping(name, self.bootstrap, self.topic, self.group, **props)

    def aws(self) -> dict[str, Any]:
        return {}

    def decode(self, event: dict[str, Any]) -> list[Rec]:
        return [
            Rec(
                n=json.loads(base64.b64decode(r["value"]))["n"],
                ident={"partition": self.partition, "offset": r["offset"]},
                pos=r["offset"],
            )
            for records in event["records"].values()
            for r in records
        ]

    filter_none = '{"value": {"status": ["never"]}}'

    def unknown_ident(self) -> Any:
        return {"partition": self.partition, "offset": 999_999}

    async def committed(self) -> int:
        done, _ = await offsets(self.bootstrap, self.topic, self.group, 1)
        return done[0]

    async def acknowledged(self) -> bool:
        done, ends = await offsets(self.bootstrap, self.topic, self.group, 1)
        return done[0] == ends[0] == self.produced

    def given_up(self, body: dict[str, Any]) -> GivenUp:
        info = body["KafkaBatchInfo"]
        ranges = info["recordsInfo"][self.partition]
        return GivenUp(
            body["requestContext"]["condition"],
            body["requestContext"]["approximateInvokeCount"],
            int(ranges["firstRecordOffset"]),
            int(ranges["lastRecordOffset"]),
            info["batchSize"],
        )


# --- SQS ------------------------------------------------------------------------------------


class SqsSource(Source):
    label = kind = "sqs"
    ordered = False

    def __init__(self, name: str, stack: contextlib.AsyncExitStack, endpoint: str) -> None:
        super().__init__(name, stack)
        self.endpoint = endpoint
        self.queue = f"contract-{name}" + (".fifo" if self.fifo else "")
        self.arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{self.queue}"
        self.url = ""
        self.dlq_url: str | None = None
        self.sqs: Any = None

    async def setup(self, *, visibility: int = 30, max_receives: int | None = None) -> None:
        self.sqs = await self._stack.enter_async_context(aws_client("sqs", self.endpoint))
        fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if self.fifo else {}
        attributes = {"VisibilityTimeout": str(visibility), **fifo}
        if max_receives is not None:
            dlq = f"contract-{self.name}-dlq" + (".fifo" if self.fifo else "")
            self.dlq_url = (await self.sqs.create_queue(QueueName=dlq, Attributes=fifo))["QueueUrl"]
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{dlq}",
                    "maxReceiveCount": str(max_receives),
                }
            )
        self.url = (await self.sqs.create_queue(QueueName=self.queue, Attributes=attributes))[
            "QueueUrl"
        ]

    async def produce(self, ns: Sequence[int], *, age: float = 0) -> None:
        for i in range(0, len(ns), 10):  # one SendMessageBatch at a time keeps the order
            entries = []
            for j, n in enumerate(ns[i : i + 10]):
                entry = {"Id": str(j), "MessageBody": json.dumps({"n": n, "status": "new"})}
                if self.fifo:
                    entry["MessageGroupId"] = "g"
                entries.append(entry)
            resp = await self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
            assert not resp.get("Failed"), resp

    def mapping(self, **props: Any) -> dict[str, Any]:
        return {"EventSourceArn": self.arn, **props}

    def aws(self) -> dict[str, Any]:
        return {"endpoints": {"sqs": self.endpoint}}

    def decode(self, event: dict[str, Any]) -> list[Rec]:
        return [
            Rec(
                n=json.loads(r["body"])["n"],
                ident=r["messageId"],
                pos=r["messageId"],
                receive_count=int(r["attributes"]["ApproximateReceiveCount"]),
            )
            for r in event["Records"]
        ]

    filter_none = '{"body": {"status": ["never"]}}'

    def unknown_ident(self) -> Any:
        return "00000000-0000-0000-0000-000000000000"

    async def in_queue(self, url: str | None = None) -> int:
        """Messages in the queue (or the DLQ), visible or not."""
        attrs = (
            await self.sqs.get_queue_attributes(QueueUrl=url or self.url, AttributeNames=["All"])
        )["Attributes"]
        return sum(
            int(attrs.get(k, 0))
            for k in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )

    async def acknowledged(self) -> bool:
        return await self.in_queue() == 0

    async def dead_lettered(self) -> list[int]:
        """The ``n`` of every message in the DLQ (received and left there)."""
        assert self.dlq_url is not None
        found: dict[str, int] = {}
        for _ in range(5):
            resp = await self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=30
            )
            for m in resp.get("Messages", []):
                found[m["MessageId"]] = json.loads(m["Body"])["n"]
            if not resp.get("Messages"):
                break
        return sorted(found.values())


class SqsFifoSource(SqsSource):
    label = "sqs-fifo"
    fifo = True


# --- Kinesis and DynamoDB Streams -----------------------------------------------------------


class StreamSource(Source):
    """The part Kinesis and DynamoDB Streams share: moto, the ARN, StartingPosition."""

    info_key = ""

    def __init__(self, name: str, stack: contextlib.AsyncExitStack, moto: str) -> None:
        super().__init__(name, stack)
        self.moto = moto
        self.arn = ""

    def mapping(self, **props: Any) -> dict[str, Any]:
        return {"EventSourceArn": self.arn, "StartingPosition": "TRIM_HORIZON", **props}

    def aws(self) -> dict[str, Any]:
        return {"endpoint_url": self.moto}

    def given_up(self, body: dict[str, Any]) -> GivenUp:
        info = body[self.info_key]
        return GivenUp(
            body["requestContext"]["condition"],
            body["requestContext"]["approximateInvokeCount"],
            info["startSequenceNumber"],
            info["endSequenceNumber"],
            info["batchSize"],
        )


class KinesisSource(StreamSource):
    label = kind = "kinesis"
    info_key = "KinesisBatchInfo"

    async def setup(self, *, visibility: int = 30, max_receives: int | None = None) -> None:
        self.kinesis = await self._stack.enter_async_context(aws_client("kinesis", self.moto))
        self.stream = f"contract-{self.name}"
        self.arn = await make_stream(self.kinesis, self.stream, 1)

    async def produce(self, ns: Sequence[int], *, age: float = 0) -> None:
        await put_json(self.kinesis, self.stream, [("k", {"n": n, "status": "new"}) for n in ns])

    def decode(self, event: dict[str, Any]) -> list[Rec]:
        out = []
        for r in event["Records"]:
            seq = r["kinesis"]["sequenceNumber"]
            n = json.loads(base64.b64decode(r["kinesis"]["data"]))["n"]
            out.append(Rec(n=n, ident=seq, pos=seq))
        return out

    filter_none = '{"data": {"status": ["never"]}}'


class DynamoDBSource(StreamSource):
    label = kind = "dynamodb"
    info_key = "DDBStreamBatchInfo"

    async def setup(self, *, visibility: int = 30, max_receives: int | None = None) -> None:
        self.ddb = await self._stack.enter_async_context(aws_client("dynamodb", self.moto))
        self.table = f"contract-{self.name}"
        desc = await self.ddb.create_table(
            TableName=self.table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        self.arn = desc["TableDescription"]["LatestStreamArn"]

    async def produce(self, ns: Sequence[int], *, age: float = 0) -> None:
        for n in ns:  # one write at a time: the stream keeps their order
            await self.ddb.put_item(
                TableName=self.table,
                Item={"pk": {"S": f"item-{n}"}, "n": {"N": str(n)}, "status": {"S": "new"}},
            )

    def decode(self, event: dict[str, Any]) -> list[Rec]:
        out = []
        for r in event["Records"]:
            seq = r["dynamodb"]["SequenceNumber"]
            out.append(Rec(n=int(r["dynamodb"]["NewImage"]["n"]["N"]), ident=seq, pos=seq))
        return out

    filter_none = '{"dynamodb": {"NewImage": {"status": {"S": ["never"]}}}}'


# --- the harness ----------------------------------------------------------------------------


class Contract:
    """One row on one source: its daemon runs, what its target saw, its destination."""

    def __init__(
        self, source: Source, name: str, state: Path, moto: str | None, stack: Any
    ) -> None:
        self.source = source
        self.name = name
        self.function = name
        self._state = state
        self._moto = moto
        self._stack = stack
        self.destination: str | None = None
        self._dest_url = ""
        self._found: list[GivenUp] = []
        self._again = 0
        #: server.shutdown_grace_seconds: how long a stop waits for an in-flight batch
        self.grace = 2.0
        #: the config's retry section
        self.retry: dict[str, Any] = dict(RETRY)

    async def setup(self, *, visibility: int = 30, max_receives: int | None = None) -> None:
        await self.source.setup(visibility=visibility, max_receives=max_receives)
        if self.source.ordered:
            assert self._moto is not None
            self._sqs = await self._stack.enter_async_context(aws_client("sqs", self._moto))
            self._dest_url = (
                await self._sqs.create_queue(QueueName=f"contract-{self.name}-failures")
            )["QueueUrl"]
            self.destination = (
                await self._sqs.get_queue_attributes(
                    QueueUrl=self._dest_url, AttributeNames=["QueueArn"]
                )
            )["Attributes"]["QueueArn"]

    # --- running ------------------------------------------------------------------------

    def config(
        self, function: dict[str, Any], *, name: str | None = None, **props: Any
    ) -> dict[str, Any]:
        name = name or self.function
        if self.destination is not None and "DestinationConfig" not in props:
            props["DestinationConfig"] = {"OnFailure": {"Destination": self.destination}}
        aws = self.source.aws()
        if self._moto is not None:
            aws.setdefault("endpoint_url", self._moto)
        return {
            "server": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": self.grace},
            "aws": {"region": "us-east-1", **aws},
            "checkpoints": {"store": "sqlite", "path": str(self._state)},
            "retry": self.retry,
            "functions": {name: function},
            "mappings": [self.source.mapping(Name=self.name, FunctionName=name, **props)],
        }

    @contextlib.asynccontextmanager
    async def running(
        self,
        behaviour: Behaviour = handlers.succeed,
        *,
        function: dict[str, Any] | None = None,
        **props: Any,
    ) -> AsyncIterator[Daemon]:
        """The daemon with this row's mapping; the python target follows ``behaviour``."""
        handlers.plan(self.function, self.source.decode, behaviour)
        config = self.config(function or {"python": HANDLER}, **props)
        async with running_daemon(config) as daemon:
            yield daemon

    @property
    def calls(self) -> list[list[int]]:
        """The ``n`` of the records of every invocation so far."""
        return [[r.n for r in recs] for recs in handlers.calls[self.function]]

    @property
    def recs(self) -> list[list[Rec]]:
        return handlers.calls[self.function]

    def invocations_of(self, n: int) -> int:
        return sum(call.count(n) for call in self.calls)

    async def until(self, cond: Callable[[], Any], what: str, timeout: float = 20) -> None:
        await wait_for(cond, timeout, what)

    async def acknowledged(self, timeout: float = 15) -> None:
        """Kafka: the committed offset reaches the end; SQS: the queue is empty. Streams show
        it only to the next run (``rereads``)."""
        await wait_for(
            self.source.acknowledged, timeout, f"every {self.source.label} record acknowledged"
        )

    async def rereads(self) -> list[int]:
        """What the next run reads again, once the daemon stopped. Streams: start the mapping
        again on the same checkpoints, after a sentinel record; the records invoked before the
        sentinel are what the first run did not checkpoint. Kafka: the records from the
        committed offset on (a record's offset is its number). SQS: [] (``acknowledged``
        shows what is left in the queue)."""
        if isinstance(self.source, KafkaSource):
            return list(range(await self.source.committed(), self.source.produced))
        if not isinstance(self.source, StreamSource):
            return []
        self._again += 1
        again = f"{self.function}-again{self._again}"
        handlers.plan(again, self.source.decode, handlers.succeed)
        await self.source.produce([SENTINEL])
        config = self.config({"python": HANDLER}, name=again, BatchSize=100)
        config["mappings"][0].pop("DestinationConfig", None)
        try:
            async with running_daemon(config):
                await wait_for(
                    lambda: any(r.n == SENTINEL for c in handlers.calls[again] for r in c),
                    20,
                    "the restarted mapping to reach the sentinel",
                )
            return [r.n for c in handlers.calls[again] for r in c if r.n != SENTINEL]
        finally:
            handlers.forget(again)

    # --- the OnFailure destination --------------------------------------------------------

    async def given_up(self) -> list[GivenUp]:
        """Every invocation record the destination received so far."""
        if not self._dest_url:
            return []
        while True:
            resp = await self._sqs.receive_message(
                QueueUrl=self._dest_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = resp.get("Messages", [])
            if not messages:
                return list(self._found)
            for m in messages:
                self._found.append(self.source.given_up(json.loads(m["Body"])))
                await self._sqs.delete_message(
                    QueueUrl=self._dest_url, ReceiptHandle=m["ReceiptHandle"]
                )

    async def until_given_up(self, records: int, timeout: float = 20) -> list[GivenUp]:
        """Wait until invocation records covering ``records`` records arrived."""
        found: list[GivenUp] = []

        async def enough() -> bool:
            nonlocal found
            found = await self.given_up()
            return sum(g.size for g in found) >= records

        await wait_for(enough, timeout, f"{records} records in the OnFailure destination")
        return found

    def numbers(self, given: GivenUp) -> list[int]:
        """The ``n`` of the records an invocation record covers (they were invoked, or, on
        Kafka, their offset is their number)."""
        by_pos = {r.pos: r.n for recs in self.recs for r in recs}
        if isinstance(self.source, KafkaSource):
            return list(range(int(str(given.first)), int(str(given.last)) + 1))
        return list(range(by_pos[given.first], by_pos[given.last] + 1))

    # --- metrics ------------------------------------------------------------------------

    async def _scrape(self, daemon: Daemon) -> str:
        host, port = daemon.address
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as resp,
        ):
            return await resp.text()

    async def metrics(self, daemon: Daemon) -> dict[str, float]:
        """This mapping's counters from /metrics, summed over their other labels."""
        return scrape(await self._scrape(daemon), self.name)

    async def metric(self, daemon: Daemon, sample: str, **labels: str) -> float:
        """One sample of this mapping from /metrics, summed over the labels not given."""
        total = 0.0
        for family in text_string_to_metric_families(await self._scrape(daemon)):
            for s in family.samples:
                wanted = {"mapping": self.name, **labels}
                if s.name == sample and all(s.labels.get(k) == v for k, v in wanted.items()):
                    total += s.value
        return total
