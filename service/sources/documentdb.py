"""DocumentDB source: a cluster's change stream through pymongo's asyncio client.

Lambda reads one change stream per mapping (a collection's, or a whole database's when
``DocumentDBEventSourceConfig.CollectionName`` is absent) and invokes the function with
batches in stream order, one at a time (AWS: "Process Amazon DocumentDB events with Lambda").
Here: one ordered :class:`~service.lane.Lane`; the poller puts change documents in as the
driver returns them, the lane's :class:`ChangeCodec` renders each as ``{"event": <change>}``
in MongoDB Extended JSON (relaxed: ``{"$oid"}``, ``{"$timestamp": {"t", "i"}}``, ``{"$date"}``,
numbers as numbers), as Lambda's example event shows, and the Invoker retries a failed batch
until it succeeds (DocumentDB mappings have no retry limit, destination or bisection).

Checkpoints: the resume token (``_id``) of the last change of every settled batch, written to
the checkpoint store (``checkpoints.store``: sqlite, or DynamoDB leases so that one replica at
a time reads the stream) under ``changestream:<db>.<collection>``. A restart resumes after it;
a token the cluster no longer has (its change stream log moved past it, error
ChangeStreamHistoryLost and kin) is reported as the state reason ``RESUME_TOKEN_EXPIRED`` and
the mapping reads on from its StartingPosition: AWS disables such a mapping and asks for a new
one with a starting position of your choice; esmd's StartingPosition is that choice.

StartingPosition: LATEST (what changes after the stream opens), AT_TIMESTAMP
(``startAtOperationTime``), TRIM_HORIZON (``now - documentdb.log_retention_seconds``, as
Lambda starts from ``current_time - log_retention_duration``).

Where the cluster is: ``documentdb.endpoints[<EventSourceArn>]`` (a mongodb:// URI, esmd's
own setting), else the cluster's endpoint from DescribeDBClusters, with TLS. Credentials: the
BASIC_AUTH secret of SourceAccessConfigurations (service/secrets.py); a refused password
is EVENT_SOURCE_AUTHN_ERROR.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import gc
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from bson import json_util
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from service.checkpoints import ShardInfo, make_store
from service.context import MappingContext
from service.errors import RESUME_TOKEN_EXPIRED, SourceAuthError, SourceError
from service.lane import Kept, Lane
from service.secrets import read_credentials, string_fields

if TYPE_CHECKING:
    from pymongo.asynchronous.change_stream import AsyncChangeStream

    from service.filters import FilterCriteria

#: (change document as the driver decoded it, its ordinal in this run)
Raw = tuple[dict[str, Any], int]
#: server errors that mean a resume token cannot be used: ChangeStreamHistoryLost (286),
#: ChangeStreamFatalError (280), InvalidResumeToken (260), CappedPositionLost (136)
_TOKEN_LOST = frozenset({286, 280, 260, 136})
_AUTHN_FAILED = 18
_UNAUTHORIZED = 13
_RELAXED = json_util.RELAXED_JSON_OPTIONS
_CANONICAL = json_util.CANONICAL_JSON_OPTIONS


def relaxed(value: Any) -> Any:
    """A decoded BSON value as relaxed Extended JSON (JSON-ready), converted in place: the
    change documents are the poller's own, and rewriting only the values JSON lacks (ObjectId,
    Timestamp, dates, Int64, non-finite doubles, the rarer types by bson.json_util) allocates
    far less than a copy would; strings, numbers and booleans stay as they are."""
    kind = type(value)
    if kind is dict:
        return _in_place(value)
    if kind is ObjectId:
        return {"$oid": value.binary.hex()}
    if kind is Timestamp:
        return {"$timestamp": {"t": value.time, "i": value.inc}}
    if kind is list:
        for i, item in enumerate(value):
            k = type(item)
            if not (k is str or k is int or k is bool or item is None):
                value[i] = relaxed(item)
        return value
    if kind is float:
        return value if math.isfinite(value) else json_util.default(value, _RELAXED)
    if kind is str or kind is bool or value is None:
        return value
    if isinstance(value, int):  # bson.int64.Int64: a number in relaxed mode
        return int(value)
    if isinstance(value, dict):  # SON and other mappings
        return _in_place(value)
    return json_util.default(value, _RELAXED)


def _in_place(doc: dict[str, Any]) -> dict[str, Any]:
    """The per-document loop of :func:`relaxed`, which every change runs through several
    times (the change, its _id, ns, documentKey, fullDocument): the common kinds are handled
    here without a call per value."""
    for key, value in doc.items():  # replacing values (not keys) while iterating is safe
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        if kind is dict:
            _in_place(value)  # rewritten where it is
        elif kind is ObjectId:
            doc[key] = {"$oid": value.binary.hex()}
        elif kind is Timestamp:
            doc[key] = {"$timestamp": {"t": value.time, "i": value.inc}}
        elif kind is not float or not math.isfinite(value):
            doc[key] = relaxed(value)
    return doc


#: ``{"event":`` ... ``}`` and the comma between records
_RECORD_OVERHEAD = 11


class ChangeCodec:
    """Change documents -> Lambda's DocumentDB records (``{"event": ...}``) and events.

    ``tokens`` gets the resume token (:func:`_kept_token`) and cluster time of every change
    converted, in order, taken before the conversion rewrites the change: the poller
    checkpoints from it."""

    def __init__(self, arn: str) -> None:
        self._arn = arn
        self.tokens: collections.deque[tuple[Any, Any]] = collections.deque()
        self.envelope_bytes = len(
            orjson.dumps({"eventSourceArn": arn, "events": [], "eventSource": "aws:docdb"})
        )

    def position(self, raw: Raw) -> int:
        return raw[1]

    def decode(
        self, raws: Sequence[Raw], filters: FilterCriteria | None
    ) -> tuple[list[Kept], list[Any], int]:
        kept: list[Kept] = []
        tokens = self.tokens
        # the conversion makes no reference cycles: the cyclic collector, which would walk
        # the whole heap again and again as a large chunk allocates, runs once afterwards
        collecting = gc.isenabled()
        gc.disable()
        try:
            for change, ordinal in raws:
                # the Timestamp object itself: the conversion replaces it, never changes it
                tokens.append((_kept_token(change["_id"]), change.get("clusterTime")))
                event = _in_place(change)
                size = len(orjson.dumps(event)) + _RECORD_OVERHEAD
                kept.append(({"event": event}, size, ordinal))
        finally:
            if collecting:
                gc.enable()
        return kept, [], raws[-1][1] + 1

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"eventSourceArn": self._arn, "events": records, "eventSource": "aws:docdb"}


class DocumentDBPoller:
    """Reads one change stream into one ordered lane; see the module docstring."""

    max_await_ms = 500  # a getMore waits this long for changes (stop latency too)
    chunk_floor = 1000  # a chunk of changes put into the lane: BatchSize, at least this
    idle_interval = 0.1  # at most one empty read this often (servers that do not wait)
    checkpoint_interval = 1.0  # at the latest; normally right after each settled batch
    lease_period = 5.0  # how often a standby replica asks for the stream's lease

    def __init__(self, context: MappingContext) -> None:
        cfg = context.config
        stream = cfg.DocumentDBEventSourceConfig
        assert stream is not None, "validated: DocumentDB mappings have one"
        self._context = context
        self._arn = cfg.EventSourceArn or ""
        self._database = stream.DatabaseName
        self._collection = stream.CollectionName
        self._full_document = "updateLookup" if stream.FullDocument == "UpdateLookup" else None
        self.key = f"changestream:{self._database}.{self._collection or '*'}"
        self._start = cfg.StartingPosition.value if cfg.StartingPosition else "LATEST"
        self._chunk = max(self.chunk_floor, cfg.batch_size)
        self._store = make_store(context.esmd.checkpoints, cfg.Name, context.aws_client)
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._progressed = asyncio.Event()
        self._lane: Lane | None = None
        self._codec = ChangeCodec(self._arn)
        # the resume tokens and cluster times of the changes converted, from _base on
        self._tokens = self._codec.tokens
        self._base = 0  # the ordinal of _tokens[0]
        self._next = 0  # the ordinal of the next change read
        self._pending: list[Raw] = []
        self._done: tuple[Any, Any] | None = None
        self._written: str | None = None
        self._log = structlog.get_logger("esmd.documentdb").bind(mapping=cfg.Name)

    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> dict[str, Any]:
        lane = self._lane
        return {
            "stream": self.key,
            "checkpoint": self._written,
            "queued": lane.queued if lane is not None else 0,
        }

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        client = await self._connect(await self._endpoint())
        try:
            await self._store.open()
            try:
                position = await self._acquire()
                if position is not None:
                    await self._process(client, position)
            finally:
                await self._store.release([self.key])
                await self._store.close()
        finally:
            await client.close()

    async def _process(self, client: AsyncMongoClient[dict[str, Any]], position: str) -> None:
        lane = self._lane = self._context.new_lane(
            self.key,
            self._codec,
            on_backpressure=self._backpressure,
            on_settled=self._progressed.set,
        )
        lane.start()
        checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpoints")
        try:
            stream, first = await self._open(client, position)
            async with stream:
                await self._pump(stream, first)
        finally:
            self._stopping.set()
            await lane.stop(self._context.shutdown_grace)
            checkpointer.cancel()
            await asyncio.gather(checkpointer, return_exceptions=True)
            await self._checkpoint()

    async def _endpoint(self) -> str:
        configured = self._context.esmd.documentdb.endpoints.get(self._arn)
        if configured:
            return configured
        async with self._context.aws_client("docdb") as docdb:
            resp = await docdb.describe_db_clusters(DBClusterIdentifier=self._arn)
        cluster = resp["DBClusters"][0]
        return (
            f"mongodb://{cluster['Endpoint']}:{cluster['Port']}/?tls=true&replicaSet=rs0"
            "&readPreference=secondaryPreferred&retryWrites=false"
        )

    async def _connect(self, uri: str) -> AsyncMongoClient[dict[str, Any]]:
        """A client that reached the cluster (and, with BASIC_AUTH, was let in)."""
        user = password = None
        for access in self._context.config.SourceAccessConfigurations:
            if access.Type == "BASIC_AUTH":
                secret = await read_credentials(
                    access.Type, access.URI or "", self._context.esmd.aws
                )
                user, password = string_fields(access.Type, secret, "username", "password")
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri,
            appname=f"esmd-{self._context.name}",
            serverSelectionTimeoutMS=10_000,
            username=user,
            password=password,
        )
        try:
            await client.admin.command("ping")
        except OperationFailure as exc:
            await client.close()
            if exc.code == _AUTHN_FAILED:
                raise SourceAuthError(f"DocumentDB refused the credentials: {exc.code}") from None
            if exc.code == _UNAUTHORIZED:
                raise SourceError("EVENT_SOURCE_AUTHZ_ERROR", f"DocumentDB: {exc}") from None
            raise
        except BaseException:
            await client.close()
            raise
        self._context.connected()
        return client

    async def _acquire(self) -> str | None:
        """The stream's lease (sqlite: at once); its checkpoint, or None when stopped first."""
        while not self._stopping.is_set():
            await self._store.sync([ShardInfo(self.key)], self._start)
            held, leases = await self._store.acquire()
            if self.key in held:
                position = leases[self.key].checkpoint
                self._written = position
                self._log.info("reading", stream=self.key, position=_shown(position))
                return position
            await self._sleep(self.lease_period)
        return None

    async def _open(
        self, client: AsyncMongoClient[dict[str, Any]], position: str
    ) -> tuple[AsyncChangeStream[dict[str, Any]], dict[str, Any] | None]:
        """The change stream from ``position`` and its first change (None: nothing yet).
        A resume token the cluster no longer has is reported; the stream then starts at the
        mapping's StartingPosition."""
        try:
            return await self._watch(client, position)
        except OperationFailure as exc:
            if exc.code not in _TOKEN_LOST or not position.startswith("{"):
                raise
            message = (
                f"the change stream cannot resume from the checkpoint ({exc.code}: "
                f"{exc.details.get('codeName') if exc.details else ''}); reading on from "
                f"StartingPosition {self._start}"
            )
        self._log.error("resume token expired", error=message)
        self._context.report(RESUME_TOKEN_EXPIRED, message)
        if await self._store.checkpoint(self.key, self._start):
            self._written = self._start
        return await self._watch(client, self._start)

    async def _watch(
        self, client: AsyncMongoClient[dict[str, Any]], position: str
    ) -> tuple[AsyncChangeStream[dict[str, Any]], dict[str, Any] | None]:
        database = client[self._database]
        target = database if self._collection is None else database[self._collection]
        stream = await target.watch(
            full_document=self._full_document,
            max_await_time_ms=self.max_await_ms,
            **self._start_options(position),
        )
        try:
            return stream, await stream.try_next()
        except BaseException:
            await stream.close()
            raise

    def _start_options(self, position: str) -> dict[str, Any]:
        if position.startswith("{"):
            return {"resume_after": json_util.loads(position, json_options=_CANONICAL)}
        if position == "LATEST":
            return {}
        if position == "AT_TIMESTAMP":
            at = self._context.config.StartingPositionTimestamp or 0.0
        else:  # TRIM_HORIZON: as far back as the change stream log reaches
            at = time.time() - self._context.esmd.documentdb.log_retention_seconds
        return {"start_at_operation_time": Timestamp(int(at), 0)}

    async def _pump(
        self, stream: AsyncChangeStream[dict[str, Any]], change: dict[str, Any] | None
    ) -> None:
        """Read changes into the lane until stopped.

        The driver decodes a whole server reply at once and then hands its changes out
        without a wait. They go to the lane a chunk (BatchSize, at least ``chunk_floor``) at
        a time, and the lane converts and delivers each chunk (:func:`_hand_over`) before the
        next is read, so a change's records live from its chunk's conversion to its
        invocation rather than for the whole reply, unseen by the cyclic collector. A
        shorter rest goes to the lane when the next read waits."""
        lane = self._lane
        assert lane is not None
        loop = asyncio.get_running_loop()
        stopping = self._stopping
        while not stopping.is_set():
            if change is not None:
                if not self._pending:
                    loop.call_soon(self._flush)
                self._pending.append((change, self._next))
                self._next += 1
                if len(self._pending) >= self._chunk:
                    self._flush()
                    await _hand_over()
                    self._raise_failed()
            else:
                self._raise_failed()
            if lane.paused:
                self._room.clear()
                await self._sleep(self.checkpoint_interval, self._room)
            started = loop.time()
            change = await stream.try_next()
            if change is None:
                await self._sleep(self.idle_interval - (loop.time() - started))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and self._lane is not None and not self._stopping.is_set():
            self._lane.put(pending)
            self._context.metrics.polled.inc(len(pending))

    def _backpressure(self, paused: bool) -> None:
        if not paused:
            self._room.set()

    def _raise_failed(self) -> None:
        """A lane that died of a bug takes the poller down (the mapping restarts it)."""
        error = self._lane.failure() if self._lane is not None else None
        if error is not None:
            raise error

    async def _sleep(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep, cut short by a stop (or by ``event``)."""
        if seconds <= 0:
            return
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if event is not None:
            waits.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # --- checkpoints ----------------------------------------------------------------------

    def _done_token(self) -> tuple[Any, Any] | None:
        """The id and cluster time of the last change before the first one not settled."""
        lane = self._lane
        done = lane.done_upto if lane is not None else None
        if done is not None:
            while self._base < done and self._tokens:  # converted before they settle
                self._done = self._tokens.popleft()
                self._base += 1
        return self._done

    async def _checkpoint_loop(self) -> None:
        """After every settled batch (batches settling during a write fold into the next),
        at the latest every ``checkpoint_interval``."""
        while True:
            self._progressed.clear()
            await self._checkpoint()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.checkpoint_interval):
                    await self._progressed.wait()

    async def _checkpoint(self) -> None:
        done = self._done_token()
        if done is None:
            return
        token, stamp = done
        now = time.time()
        seconds = stamp.time if isinstance(stamp, Timestamp) else now
        self._context.metrics.iterator_age.set(max(0.0, (now - seconds) * 1000))
        if isinstance(token, str):
            token = {"_data": token}
        position = json_util.dumps(token, json_options=_CANONICAL)
        if position == self._written:
            return
        try:
            # shielded: a stop must not cut a write in half and lose track of what landed
            ok = await asyncio.shield(self._store.checkpoint(self.key, position))
        except Exception as exc:
            self._context.metrics.error("commit")
            self._log.warning("checkpoint failed", error=repr(exc))
            return
        if not ok:
            self._log.warning("lease lost: stopping")
            self._stopping.set()
            return
        self._written = position


async def _hand_over() -> None:
    """One turn of the event loop, in which the lane converts and delivers the chunk just
    put, with the cyclic collector paused: a chunk's records are made and freed within the
    turn (unless the target makes the lane wait), so the collector never walks them."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        await asyncio.sleep(0)
    finally:
        if collecting:
            gc.enable()


def _kept_token(token: Any) -> Any:
    """A change's resume token as kept for its checkpoint, out of reach of the codec (which
    rewrites the change in place) and of the handler (which gets the change): MongoDB's and
    DocumentDB's ``{"_data": "<hex>"}`` as its string, which is immutable (no copy per
    change); any other shape as a deep copy."""
    if type(token) is dict and len(token) == 1:
        data = token.get("_data")
        if type(data) is str:
            return data
    return copy.deepcopy(token)


def _shown(position: str) -> str:
    return position if len(position) < 120 else position[:117] + "..."
