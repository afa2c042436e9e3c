"""The one way esmd makes aiobotocore clients: sources, destinations, checkpoints and the
Lambda target all come here, so region, endpoint (moto, LocalStack, per-service overrides)
and connection pool follow the ``aws`` section the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

if TYPE_CHECKING:  # annotations only: service.config may import what imports this module
    from service.config import AwsConfig

#: botocore's own retries off: the caller's backoff (the Invoker's, the sender's) must see
#: every throttle and failure
NO_RETRIES = {"total_max_attempts": 1, "mode": "standard"}


@functools.cache
def _session() -> Any:
    """One botocore session for the process: a new session parses the service models and
    endpoint data again (about 90 ms of CPU a client, against 2-3 ms from a shared one),
    which made a daemon with hundreds of SQS mappings spend most of its start-up there.
    Clients made from it are independent; credentials resolve once, and refreshable ones
    (instance profiles, web identity) keep refreshing themselves."""
    return get_session()


def aws_client(
    aws: AwsConfig,
    service: str,
    connections: int = 10,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    **config: Any,
) -> AbstractAsyncContextManager[Any]:
    """A client of ``service``. ``connections`` sizes its HTTP pool: a source whose long polls
    hold connections must leave room for its deletes and checkpoints; ``config`` goes to
    AioConfig (timeouts, retries)."""
    return _session().create_client(  # type: ignore[no-any-return]
        service,
        region_name=region or aws.region,
        endpoint_url=endpoint_url or aws.endpoint_for(service),
        config=AioConfig(max_pool_connections=connections, **config),
    )


#: a shared client's HTTP pool: every user's long polls and acknowledgements get their own
#: connections, as they would from a client of their own
SHARED_CONNECTIONS = 10_000


class SharedClients:
    """The clients that the mappings of one process share, one per service, region and
    endpoint. A used aiobotocore client holds about 1 MB (operation models, endpoint rules,
    its HTTP session) and its first calls cost CPU, so 500 SQS mappings with a client each
    held 500 MB and took most of the start-up; shared, they hold one. A client is made on
    first use and closed when its last user leaves (``client()`` is a context manager)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str | None], _Shared] = {}

    @contextlib.asynccontextmanager
    async def client(self, aws: AwsConfig, service: str) -> AsyncIterator[Any]:
        key = (service, aws.region, aws.endpoint_for(service))
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Shared(
                functools.partial(aws_client, aws, service, SHARED_CONNECTIONS)
            )
        client = await entry.acquire()
        try:
            yield client
        finally:
            await entry.release()


class _Shared:
    """One shared client and how many use it."""

    def __init__(self, make: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._make = make
        self._opened: AbstractAsyncContextManager[Any] | None = None
        self._client: Any = None
        self._users = 0
        self._lock = asyncio.Lock()

    async def acquire(self) -> Any:
        async with self._lock:
            if self._opened is None:
                opened = self._make()
                self._client = await opened.__aenter__()
                self._opened = opened
            self._users += 1
            return self._client

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users == 0 and self._opened is not None:
                opened, self._opened, self._client = self._opened, None, None
                await opened.__aexit__(None, None, None)


class LazyClient:
    """A client made on first use and closed with ``close()``: for objects that live as long
    as a mapping (a destination, a target) and may never need their client."""

    def __init__(
        self,
        aws: AwsConfig,
        service: str,
        connections: int = 10,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        **config: Any,
    ) -> None:
        self._make = functools.partial(
            aws_client,
            aws,
            service,
            connections,
            region=region,
            endpoint_url=endpoint_url,
            **config,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def get(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(self._make())
        return self._client

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def destination_client(aws: AwsConfig, service: str, region: str | None = None) -> LazyClient:
    """The client of an OnFailure destination: no retries of botocore's (the sender retries),
    and short timeouts, so a hung service does not hold a send for long."""
    return LazyClient(
        aws, service, region=region, retries=NO_RETRIES, connect_timeout=10, read_timeout=30
    )
