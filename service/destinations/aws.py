"""The aiobotocore client the AWS destinations share: region from the destination's ARN,
endpoint from the ``aws`` section, botocore's own retries off (the sender retries)."""

from __future__ import annotations

import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from service.config import AwsConfig


class AwsClient:
    """A lazily created client of one service, closed with ``close()``."""

    def __init__(self, service: str, region: str | None, aws: AwsConfig) -> None:
        self._service = service
        self._region = region or aws.region
        self._endpoint = aws.endpoint_for(service)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def get(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(
                get_session().create_client(
                    self._service,
                    region_name=self._region,
                    endpoint_url=self._endpoint,
                    config=AioConfig(
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=10,
                        read_timeout=30,
                    ),
                )
            )
        return self._client

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
