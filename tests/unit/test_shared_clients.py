"""SharedClients: the mappings of a process share one AWS client per service and endpoint."""

from __future__ import annotations

from service.aws import SharedClients
from service.config import AwsConfig


async def test_users_share_one_client_until_the_last_leaves() -> None:
    aws = AwsConfig(endpoint_url="http://127.0.0.1:1")  # no call is made
    clients = SharedClients()
    async with clients.client(aws, "sqs") as first, clients.client(aws, "sqs") as second:
        assert first is second
        async with clients.client(aws, "kinesis") as other:
            assert other is not first
    async with clients.client(aws, "sqs") as again:  # the last user left: a new client
        assert again is not first
