"""SQS source: standard and FIFO queues, with Lambda's delivery and deletion semantics.

Receivers long-poll (20 s, 10 messages a call) and feed lanes: a standard queue has one
unordered lane whose batches run concurrently, as many as the mapping's scaler allows (AWS's
on-demand ramp or provisioned pollers x 10, service/sources/sqs_scaling.py); a FIFO queue has
an ordered lane per MessageGroupId (one batch of a group in flight), under the same cap.
The Invoker settles each batch (SQS retries by redelivery: nothing is retried here) and this
module acknowledges, as the lane's Acker. Acknowledging is deleting:

- success deletes the batch; a failed invocation deletes nothing, so the messages return
  when their visibility timeout ends and the queue's own redrive policy moves them to its DLQ;
- with ReportBatchItemFailures only the listed items stay (FIFO: and every later message of
  their group, invoked or still queued, to keep the group's order);
- filtered-out messages are deleted, as Lambda does.

Every message esmd holds, from the moment it is received until it is deleted or given up
(waiting to be batched, waiting for a concurrency slot or a FIFO group, being invoked), has its
visibility extended before half of it has run out, so no second copy is delivered while the
first is still ours. FIFO queues are batched per
MessageGroupId, and a group has at most one batch in flight.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from service.config import MappingConfig
from service.context import MappingContext
from service.filters import parse_payload
from service.invoke import Backoff
from service.lane import Kept, Lane
from service.scaling import PollerPool, PoolBounds
from service.sources.sqs_scaling import Capacity, Concurrency, Observed, SqsScaler, capacity_for

if TYPE_CHECKING:
    from service.filters import FilterCriteria

RECEIVE_WAIT_SECONDS = 20
RECEIVE_MAX = 10
#: a receive unanswered this long is waiting on an empty queue
EMPTY_POLL_SECONDS = 2.0
#: HTTP connections kept for DeleteMessageBatch and ChangeMessageVisibilityBatch
ACK_CONNECTIONS = 32
#: ChangeMessageVisibilityBatch calls in flight at once (half the acknowledging connections)
VISIBILITY_CALLS = ACK_CONNECTIONS // 2
#: bytes of a record's JSON besides body and attributes (field names, ids, handles, ARN)
_RECORD_OVERHEAD = 600


def queue_parts(arn: str) -> tuple[str, str, str]:
    """(region, account, queue name) of an SQS queue ARN."""
    _, _, _, region, account, name = arn.split(":", 5)
    return region, account, name


def lambda_record(message: dict[str, Any], arn: str, region: str) -> dict[str, Any]:
    """An SQS message as Lambda delivers it, field for field."""
    attributes = dict(message.get("Attributes", {}))
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": attributes,
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        **(
            {"md5OfMessageAttributes": message["MD5OfMessageAttributes"]}
            if "MD5OfMessageAttributes" in message
            else {}
        ),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [_b64(v) for v in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = _b64(value["BinaryValue"])
    return out


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def _size(record: dict[str, Any]) -> int:
    return _RECORD_OVERHEAD + len(record["body"]) + len(orjson.dumps(record["messageAttributes"]))


def _group(record: dict[str, Any]) -> str:
    return str(record["attributes"].get("MessageGroupId", ""))


class SqsCodec:
    """SQS records are converted on receipt (visibility is tracked from then); the lane's
    codec filters them on the body and numbers them."""

    envelope_bytes = 64

    def __init__(self) -> None:
        self._next = 0

    def position(self, raw: dict[str, Any]) -> int:
        return 0

    def decode(
        self, raws: Sequence[dict[str, Any]], filters: FilterCriteria | None
    ) -> tuple[list[Kept], list[Any], int]:
        kept: list[Kept] = []
        filtered: list[Any] = []
        match = filters.matcher if filters is not None else None
        n = self._next
        for r in raws:
            if match is None or match({**r, "body": parse_payload(r["body"])}):
                kept.append((r, _size(r), n))
                n += 1
            else:
                filtered.append(r)
        self._next = n
        return kept, filtered, n

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": records}


class SqsPoller:
    def __init__(self, context: MappingContext) -> None:
        self._context = context
        cfg: MappingConfig = context.config
        self._arn = cfg.EventSourceArn or ""
        self._region, self._account, self._queue = queue_parts(self._arn)
        self._fifo = self._queue.endswith(".fifo")
        # the mapping's capacity model (on demand or provisioned); each worker process
        # takes its share of it
        self._capacity: Capacity = capacity_for(cfg).share(context.worker.part)
        cap = self._capacity
        self._bounds = PoolBounds(cap.pollers(cap.floor), cap.max_pollers)
        # what the scaler reads and resets each period
        self._receives: int = 0
        #: when each receiver's receive in progress was sent (keyed by its retire event)
        self._polling: dict[asyncio.Event, float] = {}
        self._full_receives: int = 0
        self._received_bytes: int = 0
        self._failed_batches: int = 0
        # the batches in flight, resized by the scaler
        self._slots = Concurrency(cap.floor)
        self._stopping = asyncio.Event()
        # the receivers' brake: they pause while this many messages are received but not yet
        # acknowledged or given back (each one is invisible)
        self._room = asyncio.Event()
        self._room.set()
        self._outstanding = 0
        self._batch_size = cfg.batch_size
        self._lanes: dict[str, Lane] = {}
        self._lane_error: BaseException | None = None
        self._acks: set[asyncio.Task[None]] = set()
        # every message received and not yet acknowledged: receipt handle -> (record, the
        # monotonic time its visibility runs out); the visibility keeper reads it
        self._held: dict[str, tuple[dict[str, Any], float]] = {}
        self._sqs: Any = None
        self._pool: PollerPool | None = None
        self._url = ""
        self._visibility = 30
        self._log = structlog.get_logger("esmd.sqs").bind(mapping=cfg.Name)

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        # every receiver may hold a connection for a whole long poll; deletes and visibility
        # changes get connections of their own, or they would wait behind the polls
        connections = self._bounds.maximum + ACK_CONNECTIONS
        async with self._context.aws_client("sqs", connections) as sqs:
            self._sqs = sqs
            resp = await sqs.get_queue_url(
                QueueName=self._queue, QueueOwnerAWSAccountId=self._account
            )
            self._url = resp["QueueUrl"]
            attrs = await sqs.get_queue_attributes(
                QueueUrl=self._url, AttributeNames=["VisibilityTimeout"]
            )
            self._visibility = int(attrs["Attributes"].get("VisibilityTimeout", 30))
            self._context.connected()
            pool = self._pool = PollerPool(
                self._receive_loop, self._bounds, self._context.metrics, "sqs receiver"
            )
            pool.start()
            self._context.metrics.concurrency_limit.set(self._slots.limit)
            cap = self._capacity
            self._log.info(
                "polling",
                queue=self._url,
                fifo=self._fifo,
                mode="provisioned" if cap.provisioned else "on demand",
                concurrency=f"{cap.floor}..{cap.ceiling}",
                pollers=f"{self._bounds.minimum}..{self._bounds.maximum}",
            )
            helpers = [
                asyncio.create_task(self._scale_loop(pool), name="sqs scaler"),
                asyncio.create_task(self._visibility_loop(), name="sqs visibility keeper"),
            ]
            try:
                await self._stopping.wait()
            finally:
                await pool.close()
                await self._drain()
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
            if self._lane_error is not None:
                raise self._lane_error

    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> dict[str, Any]:
        pollers = self._pool.size if self._pool else 0
        queued = sum(lane.queued for lane in self._lanes.values())
        return {
            "queue": self._url,
            "pollers": pollers,
            "concurrency": self._slots.limit,
            "queued": queued,
        }

    async def _drain(self) -> None:
        """Let in-flight invocations finish; give back what was received but not invoked."""
        grace = self._context.shutdown_grace
        await asyncio.gather(*(lane.stop(grace) for lane in self._lanes.values()))
        if self._acks:
            _, pending = await asyncio.wait(self._acks, timeout=max(grace, 5.0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- receiving ------------------------------------------------------------------------

    async def _receive_loop(self, retire: asyncio.Event) -> None:
        backoff = Backoff(0.5, 20.0)
        failures = 0
        while not self._stopping.is_set() and not retire.is_set():
            await self._room.wait()
            sent = time.monotonic()  # visibility runs from the receive, not its answer
            self._polling[retire] = sent
            try:
                resp = await self._sqs.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=RECEIVE_MAX,
                    WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                    AttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                failures = 0
            except Exception as exc:  # the endpoint or credentials: back off and go on
                self._context.metrics.error("polling")
                wait = backoff.delay(failures)
                failures += 1
                self._log.warning("receive failed", error=repr(exc), retry_in=round(wait, 2))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stopping.wait()
                continue
            finally:
                del self._polling[retire]
            messages = resp.get("Messages", [])
            self._receives += 1
            self._full_receives += len(messages) == RECEIVE_MAX
            if messages:
                self._received_bytes += sum(len(m.get("Body", "")) for m in messages)
                records = [lambda_record(m, self._arn, self._region) for m in messages]
                self._hold(records, sent)
                self._context.metrics.polled.inc(len(records))
                self._dispatch(records)

    def _dispatch(self, records: list[dict[str, Any]]) -> None:
        """To the queue's lane, or (FIFO) to each message group's lane."""
        if not self._fifo:
            self._lane("").put(records)
            return
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            groups.setdefault(_group(r), []).append(r)
        for group, share in groups.items():
            self._lane(group).put(share)
        if len(self._lanes) > 1000:
            self._retire_idle_lanes()

    def _lane(self, group: str) -> Lane:
        lane = self._lanes.get(group)
        if lane is None:
            context, codec = self._context, SqsCodec()
            if self._fifo:  # every later record of a batch with a failed one fails too
                policy = dataclasses.replace(context.policy, group_of=_group)
                lane = context.new_lane(
                    f"group {group}",
                    codec,
                    invoker=context.invoker(codec, policy),
                    acker=self,
                    slots=self._slots,
                    fifo=True,
                )
            else:
                lane = context.new_lane(
                    "queue", codec, acker=self, ordered=False, slots=self._slots
                )
            lane.start().add_done_callback(self._lane_ended)
            self._lanes[group] = lane
        return lane

    def _lane_ended(self, task: asyncio.Task[None]) -> None:
        """A lane that died of a bug stops the poller, which the mapping restarts."""
        if not task.cancelled() and task.exception() is not None:
            self._lane_error = task.exception()
            self._stopping.set()

    def _retire_idle_lanes(self) -> None:
        for group, lane in list(self._lanes.items()):
            if lane.idle:
                del self._lanes[group]
                self._spawn(lane.stop(0))

    # --- scaling --------------------------------------------------------------------------

    async def _scale_loop(self, pool: PollerPool) -> None:
        """Lambda's rule (service/sources/sqs_scaling.py), evaluated every period: the
        scaler sets the concurrency, the receivers follow it."""
        settings = self._context.esmd.scaling
        scaler = SqsScaler(self._capacity, settings.sqs_minute_seconds)
        period = settings.sqs_period_seconds
        last = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            seen = self._observe(now - last)
            last = now
            decision = scaler.decide(now, self._slots.limit, seen)
            reason = "concurrency follows" if decision is None else decision[1]
            if decision is not None:
                self._log.info(
                    "scaling concurrency",
                    before=self._slots.limit,
                    after=decision[0],
                    reason=reason,
                )
                self._slots.resize(decision[0])
                self._context.metrics.concurrency_limit.set(decision[0])
                self._track(0)  # the receivers' brake follows the limit
            pool.resize(self._capacity.pollers(self._slots.limit, seen.bytes_per_second), reason)

    def _observe(self, elapsed: float) -> Observed:
        """What the last period showed (and reset its counts). Messages are available when
        a receive came back full, or received messages wait for a concurrency slot. A long
        poll still open after EMPTY_POLL_SECONDS found the queue empty (SQS answers at once
        when it has messages); without that, a completed receive or anything waiting, the
        period says nothing."""
        waiting = self._slots.waiting or any(lane.queued for lane in self._lanes.values())
        available = bool(self._full_receives) or bool(waiting) or not self._room.is_set()
        now = time.monotonic()
        empty = any(now - sent > EMPTY_POLL_SECONDS for sent in self._polling.values())
        seen = Observed(
            available=available if available or self._receives or empty else None,
            failed_batches=self._failed_batches,
            peak=self._slots.take_peak(),
            bytes_per_second=self._received_bytes / elapsed if elapsed > 0 else 0.0,
        )
        self._receives = self._full_receives = self._received_bytes = self._failed_batches = 0
        return seen

    # --- acknowledging (the lanes' Acker) ---------------------------------------------------

    def filtered(self, raws: list[Any]) -> None:
        """Filtered out: deleted, as Lambda does (beside the lane: no SQS round trip on it)."""
        self._spawn(self._delete(raws))

    def settled(self, records: list[dict[str, Any]], released: list[dict[str, Any]]) -> None:
        """Delete what succeeded; what was released is left to its visibility timeout, so
        the queue's redrive policy counts the receive and its DLQ applies."""
        if released:
            self._failed_batches += 1
            self._forget(released)
            keep = {r["receiptHandle"] for r in released}
            records = [r for r in records if r["receiptHandle"] not in keep]
        if records:
            self._spawn(self._delete(records))

    def abandoned(self, records: list[Any]) -> None:
        """Never invoked, or not settled before a stop: visible again at once."""
        self._spawn(self._give_back(records))

    async def _give_back(self, records: list[dict[str, Any]]) -> None:
        try:
            await self._change_visibility(records, 0)
        finally:
            self._forget(records)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a delete or visibility change as a task that shutdown waits for."""
        task = asyncio.create_task(work)
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    # --- visibility -------------------------------------------------------------------------

    def _hold(self, records: list[dict[str, Any]], received: float) -> None:
        """Track messages from the moment their receive was sent: on a busy loop the answer
        may be read seconds after the queue started their visibility timeout."""
        until = received + self._visibility
        for r in records:
            self._held[r["receiptHandle"]] = (r, until)
        self._track(len(records))

    def _forget(self, records: list[dict[str, Any]]) -> None:
        gone = 0
        for r in records:
            gone += self._held.pop(r["receiptHandle"], None) is not None
        self._track(-gone)

    def _track(self, delta: int) -> None:
        """Count messages held; brake the receivers at twice what the concurrency invokes."""
        self._outstanding += delta
        if self._outstanding >= max(100, 2 * self._slots.limit * self._batch_size):
            self._room.clear()
        else:
            self._room.set()

    async def _visibility_loop(self) -> None:
        """Extend every held message whose visibility is half gone, whatever it waits for."""
        if self._visibility < 2:
            return  # nothing to keep: the queue hands messages out again at once
        half = self._visibility / 2
        while True:
            await asyncio.sleep(max(0.5, self._visibility / 6))
            now = time.monotonic()
            due = [r for r, until in self._held.values() if until - now < half]
            if not due:
                continue
            extended = await self._change_visibility(due, self._visibility)
            until = now + self._visibility
            for r in extended:
                if r["receiptHandle"] in self._held:
                    self._held[r["receiptHandle"]] = (r, until)

    async def _change_visibility(
        self, records: list[dict[str, Any]], seconds: int
    ) -> list[dict[str, Any]]:
        """ChangeMessageVisibilityBatch, several chunks of 10 at once (a scaled-up mapping
        holds thousands: one chunk after another would let the last ones lapse); returns
        the records it was applied to."""
        calls = asyncio.Semaphore(VISIBILITY_CALLS)

        async def change(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            entries = [
                {"Id": str(i), "ReceiptHandle": r["receiptHandle"], "VisibilityTimeout": seconds}
                for i, r in enumerate(chunk)
            ]
            async with calls:
                try:
                    resp = await self._sqs.change_message_visibility_batch(
                        QueueUrl=self._url, Entries=entries
                    )
                except Exception as exc:
                    self._context.metrics.error("polling")
                    self._log.warning("visibility change failed", error=repr(exc))
                    return []
            return [chunk[int(ok["Id"])] for ok in resp.get("Successful", [])]

        done = await asyncio.gather(*(change(chunk) for chunk in _chunks(records, 10)))
        return [r for changed in done for r in changed]

    async def _delete(self, records: list[dict[str, Any]]) -> None:
        """DeleteMessageBatch, retrying the entries that fail; the records are no longer held
        afterwards, deleted or not (those not deleted come back after their timeout)."""
        try:
            await self._delete_chunks(records)
        finally:
            self._forget(records)

    async def _delete_chunks(self, records: list[dict[str, Any]]) -> None:
        for chunk in _chunks(records, 10):
            entries = {str(i): r["receiptHandle"] for i, r in enumerate(chunk)}
            last_error, deleted = "", 0
            for attempt in range(5):
                try:
                    resp = await self._sqs.delete_message_batch(
                        QueueUrl=self._url,
                        Entries=[{"Id": k, "ReceiptHandle": v} for k, v in entries.items()],
                    )
                except Exception as exc:
                    self._context.metrics.error("commit")
                    self._log.warning("delete failed", error=repr(exc), attempt=attempt + 1)
                    await asyncio.sleep(Backoff(0.2, 5).delay(attempt))
                    continue
                done = [s["Id"] for s in resp.get("Successful", [])]
                deleted += len(done)
                self._context.metrics.deleted.inc(len(done))
                for ident in done:
                    entries.pop(ident, None)
                if not entries:
                    break
                for entry in resp.get("Failed", []):
                    last_error = f"{entry.get('Code')}: {entry.get('Message')}"
                    if entry.get("SenderFault"):  # a stale receipt handle: retrying cannot help
                        entries.pop(entry["Id"], None)
                if not entries:
                    break
                await asyncio.sleep(Backoff(0.2, 5).delay(attempt))
            if not_deleted := len(chunk) - deleted:
                self._log.error(
                    "messages not deleted; they will be delivered again",
                    count=not_deleted,
                    error=last_error,
                )


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
