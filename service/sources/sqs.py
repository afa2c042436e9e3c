"""SQS source: standard and FIFO queues, with Lambda's delivery and deletion semantics.

Receivers long-poll (20 s, 10 messages a call) and feed one BatchBuilder; closed batches are
invoked concurrently, up to ScalingConfig.MaximumConcurrency. Acknowledging is deleting:

- success deletes the batch; a failed invocation deletes nothing, so the messages return
  when their visibility timeout ends and the queue's own redrive policy moves them to its DLQ;
- with ReportBatchItemFailures only the listed items stay (FIFO: and every later message of
  their group, to keep the group's order);
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
import collections
import contextlib
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from service.batching import Batch, BatchBuilder
from service.config import MappingConfig
from service.filters import parse_payload
from service.invoke import Backoff, Invoker, Outcome, batch_item_failures
from service.scaling import PollerPool, PoolBounds
from service.targets import InvokeResult

if TYPE_CHECKING:
    from service.mapping import Mapping

RECEIVE_WAIT_SECONDS = 20
RECEIVE_MAX = 10
#: HTTP connections kept for DeleteMessageBatch and ChangeMessageVisibilityBatch
ACK_CONNECTIONS = 32
#: bytes of a record's JSON besides body and attributes (field names, ids, handles, ARN)
_RECORD_OVERHEAD = 600


def pool_bounds(cfg: MappingConfig, concurrency: int | None) -> PoolBounds:
    """Provisioned: the configured bounds. On demand: Lambda starts with 5 pollers; we grow
    to 100 (or MaximumConcurrency, which caps the invocations anyway)."""
    if cfg.ProvisionedPollerConfig is not None:
        pp = cfg.ProvisionedPollerConfig
        return PoolBounds(pp.MinimumPollers, pp.MaximumPollers)
    ceiling = min(100, concurrency or 100)
    return PoolBounds(min(5, ceiling), ceiling)


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


class SqsPoller:
    def __init__(self, mapping: Mapping) -> None:
        self._mapping = mapping
        cfg: MappingConfig = mapping.config
        self._arn = cfg.EventSourceArn or ""
        self._region, self._account, self._queue = queue_parts(self._arn)
        self._fifo = self._queue.endswith(".fifo")
        concurrency = cfg.ScalingConfig.MaximumConcurrency if cfg.ScalingConfig else None
        self._bounds = mapping.worker.share(pool_bounds(cfg, concurrency))
        # what the scaler reads and resets each period
        self._receives: int = 0
        self._full_receives: int = 0
        self._failed_batches: int = 0
        # MaximumConcurrency is the whole mapping's: each worker process takes its share
        self._slots = asyncio.Semaphore(mapping.worker.part(concurrency) if concurrency else 1000)
        self._stopping = asyncio.Event()
        # received records waiting to be batched, and the receivers' brake: they pause while
        # this many messages are received but not yet acknowledged (each one is invisible)
        self._pending: collections.deque[list[dict[str, Any]]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._outstanding = 0
        self._max_outstanding = max(100, 2 * (concurrency or 100) * cfg.batch_size)
        self._builder = BatchBuilder(cfg.batch_size, cfg.batching_window_seconds, 64)
        self._inflight: set[asyncio.Task[None]] = set()
        # every message received and not yet acknowledged: receipt handle -> (record, the
        # monotonic time its visibility runs out); the visibility keeper reads it
        self._held: dict[str, tuple[dict[str, Any], float]] = {}
        self._group_locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._sqs: Any = None
        self._pool: PollerPool | None = None
        self._url = ""
        self._visibility = 30
        self._log = structlog.get_logger("esmd.sqs").bind(mapping=cfg.Name)
        self._invoker = Invoker(
            mapping.require_target(),
            self._make_event,
            mapping.metrics,
            mapping.esmd.retry,
            0,
            self._stopping,  # SQS retries by redelivery, not in process
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        # every receiver may hold a connection for a whole long poll; deletes and visibility
        # changes get connections of their own, or they would wait behind the polls
        connections = self._bounds.maximum + ACK_CONNECTIONS
        async with self._mapping.aws_client("sqs", connections) as sqs:
            self._sqs = sqs
            resp = await sqs.get_queue_url(
                QueueName=self._queue, QueueOwnerAWSAccountId=self._account
            )
            self._url = resp["QueueUrl"]
            attrs = await sqs.get_queue_attributes(
                QueueUrl=self._url, AttributeNames=["VisibilityTimeout"]
            )
            self._visibility = int(attrs["Attributes"].get("VisibilityTimeout", 30))
            pool = self._pool = PollerPool(
                self._receive_loop, self._bounds, self._mapping.metrics, "sqs receiver"
            )
            pool.start()
            self._log.info(
                "polling",
                queue=self._url,
                fifo=self._fifo,
                pollers=f"{self._bounds.minimum}..{self._bounds.maximum}",
            )
            helpers = [
                asyncio.create_task(self._scale_loop(pool), name="sqs scaler"),
                asyncio.create_task(self._visibility_loop(), name="sqs visibility keeper"),
            ]
            try:
                await self._batch_loop()
            finally:
                await pool.close()
                await self._drain()
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    def status(self) -> dict[str, Any]:
        pollers = self._pool.size if self._pool else 0
        return {"queue": self._url, "pollers": pollers, "in_flight": len(self._inflight)}

    async def _drain(self) -> None:
        """Let in-flight invocations finish; give back what was received but not invoked."""
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=self._mapping.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        leftovers = [r for chunk in self._pending for r in chunk]
        leftovers += self._builder.flush("stop").records
        if leftovers:
            await self._change_visibility(leftovers, 0)
            self._forget(leftovers)

    # --- receiving ------------------------------------------------------------------------

    async def _receive_loop(self, retire: asyncio.Event) -> None:
        backoff = Backoff(0.5, 20.0)
        failures = 0
        while not self._stopping.is_set() and not retire.is_set():
            await self._room.wait()
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
                self._mapping.metrics.error("polling")
                wait = backoff.delay(failures)
                failures += 1
                self._log.warning("receive failed", error=repr(exc), retry_in=round(wait, 2))
                await asyncio.sleep(wait)
                continue
            messages = resp.get("Messages", [])
            self._receives += 1
            self._full_receives += len(messages) == RECEIVE_MAX
            if messages:
                records = [lambda_record(m, self._arn, self._region) for m in messages]
                self._hold(records)
                self._mapping.metrics.polled.inc(len(records))
                self._pending.append(records)
                self._wakeup.set()
                self._track(len(records))

    # --- batching -------------------------------------------------------------------------

    async def _scale_loop(self, pool: PollerPool, period: float = 2.0) -> None:
        """Lambda's on-demand rule, in small steps: grow while receives come back full and
        invocations succeed; shrink while receives come back short or empty."""
        while True:
            await asyncio.sleep(period)
            receives, full, failed = self._receives, self._full_receives, self._failed_batches
            self._receives = self._full_receives = self._failed_batches = 0
            size = pool.size
            if receives and full / receives >= 0.9 and not failed:
                pool.resize(size + max(1, size // 2), f"backlog: {full}/{receives} full")
            elif failed:
                pool.resize(size - 1, f"{failed} failed invocations")
            elif receives and full / receives < 0.5:
                pool.resize(size - 1, f"little backlog: {full}/{receives} full")

    def _track(self, delta: int) -> None:
        """Count messages received but not yet acknowledged; brake the receivers at the cap."""
        self._outstanding += delta
        if self._outstanding >= self._max_outstanding:
            self._room.clear()
        else:
            self._room.set()

    async def _batch_loop(self) -> None:
        builder = self._builder
        while not self._stopping.is_set():
            if self._pending:
                await self._add(builder, await self._filtered(self._pending.popleft()))
                continue
            self._wakeup.clear()
            try:
                async with asyncio.timeout(builder.until_next()):
                    await self._wakeup.wait()
            except TimeoutError:
                self._dispatch(builder.flush("window"))

    async def _add(self, builder: BatchBuilder, records: list[dict[str, Any]]) -> None:
        if self._fifo:
            for group in _by_group(records):
                for i in range(0, len(group), builder.max_records):
                    chunk = group[i : i + builder.max_records]
                    self._dispatch(Batch(chunk, 0, 0, 0, "size"))
            return
        kept = [(r, _size(r), 0) for r in records]
        i = 0
        while i < len(kept):
            i = builder.fill(kept, i)
            if builder.full:
                self._dispatch(builder.flush("size"))
            elif i < len(kept):
                self._dispatch(builder.flush("bytes"))
        if len(builder) and builder.until_next() == 0:
            self._dispatch(builder.flush("window"))

    async def _filtered(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop and delete the records no filter matches (Lambda deletes them too)."""
        filters = self._mapping.filters
        if filters is None:
            return records
        match = filters.matcher
        kept: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        for r in records:
            (kept if match({**r, "body": parse_payload(r["body"])}) else dropped).append(r)
        if dropped:
            self._mapping.metrics.filtered_out.inc(len(dropped))
            # deleted beside the batch loop, which must not wait on SQS round trips
            self._spawn(self._delete(dropped), len(dropped))
        return kept

    def _dispatch(self, batch: Batch) -> None:
        self._mapping.metrics.batch_closed(len(batch), batch.reason)
        self._spawn(self._invoke(batch), len(batch))

    def _spawn(self, work: Coroutine[Any, Any, None], messages: int) -> None:
        """Run an invocation or a delete as a task that shutdown waits for; its messages stop
        counting against the receivers' brake when it ends."""
        task = asyncio.create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(lambda _: self._track(-messages))

    # --- invoking and acknowledging ---------------------------------------------------------

    async def _invoke(self, batch: Batch) -> None:
        group = batch.records[0]["attributes"].get("MessageGroupId") if self._fifo else None
        lock = self._group_locks[group] if group is not None else contextlib.nullcontext()
        try:
            async with self._slots, lock:
                outcome, result = await self._invoker.deliver(batch)
            if outcome is not Outcome.DELIVERED:
                self._failed_batches += 1
                return  # nothing deleted: the messages come back after their timeout
            await self._acknowledge(batch, result)
        finally:
            self._forget(batch.records)

    async def _acknowledge(self, batch: Batch, result: InvokeResult | None) -> None:
        """Delete what succeeded: all, or all but the reported batchItemFailures."""
        ids = [r["messageId"] for r in batch.records]
        failed: set[str] | None = set()
        if self._mapping.config.reports_batch_item_failures and result is not None:
            failed = batch_item_failures(result.payload, ids)
        if failed is None:
            self._mapping.metrics.failed_invoke.inc(len(batch))
            self._log.warning("malformed batchItemFailures: the whole batch failed")
            return
        if failed and self._fifo:
            failed = _fifo_failures(batch.records, failed)
        if failed:
            self._mapping.metrics.failed_invoke.inc(len(failed))
        await self._delete([r for r in batch.records if r["messageId"] not in failed])

    # --- visibility -------------------------------------------------------------------------

    def _hold(self, records: list[dict[str, Any]]) -> None:
        until = time.monotonic() + self._visibility
        for r in records:
            self._held[r["receiptHandle"]] = (r, until)

    def _forget(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            self._held.pop(r["receiptHandle"], None)

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
        """ChangeMessageVisibilityBatch; returns the records it was applied to."""
        changed: list[dict[str, Any]] = []
        for chunk in _chunks(records, 10):
            try:
                resp = await self._sqs.change_message_visibility_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": r["receiptHandle"],
                            "VisibilityTimeout": seconds,
                        }
                        for i, r in enumerate(chunk)
                    ],
                )
            except Exception as exc:
                self._mapping.metrics.error("polling")
                self._log.warning("visibility change failed", error=repr(exc))
                continue
            changed += [chunk[int(ok["Id"])] for ok in resp.get("Successful", [])]
        return changed

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
                    self._mapping.metrics.error("commit")
                    self._log.warning("delete failed", error=repr(exc), attempt=attempt + 1)
                    await asyncio.sleep(Backoff(0.2, 5).delay(attempt))
                    continue
                done = [s["Id"] for s in resp.get("Successful", [])]
                deleted += len(done)
                self._mapping.metrics.deleted.inc(len(done))
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

    def _make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": records}


def _by_group(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["attributes"].get("MessageGroupId", ""), []).append(r)
    return list(groups.values())


def _fifo_failures(records: list[dict[str, Any]], failed: set[str]) -> set[str]:
    """In a FIFO group, everything after a failed message fails too (order is kept)."""
    out, broken = set(failed), set()
    for r in records:
        group = r["attributes"].get("MessageGroupId", "")
        if group in broken:
            out.add(r["messageId"])
        elif r["messageId"] in failed:
            broken.add(group)
    return out


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
