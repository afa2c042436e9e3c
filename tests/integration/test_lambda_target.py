"""The lambda target through the Invoke API, against a real Lambda runtime: the AWS Lambda
Runtime Interface Emulator (built with go install) running awslambdaric. Also: an endpoint
that refuses connections is a service error, retried until it answers, with no record lost
or given up on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    scrape,
    wait_for,
)
from tests.integration.rie import free_port, running_rie

pytestmark = pytest.mark.integration


@pytest.fixture
def rie(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    out = tmp_path / "invocations.jsonl"
    with running_rie("tests.integration.lambda_fn.handle", out, "thumbs") as url:
        yield url, out


async def test_kafka_to_a_real_lambda_runtime(
    kafka_bootstrap: str, unique: str, rie: tuple[str, Path]
) -> None:
    endpoint, out = rie
    topic, group = f"rie-{unique}", f"g-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(50)])
    config = {
        # the emulator serves one function, under the name "function"
        "functions": {"thumbs": {"lambda": "function", "endpoint_url": endpoint}},
        "mappings": [
            kafka_mapping(
                "rie",
                kafka_bootstrap,
                topic,
                group,
                FunctionName="thumbs",
                BatchSize=20,
                MaximumBatchingWindowInSeconds=0,
            )
        ],
    }

    def invoked() -> list[int]:
        if not out.exists():
            return []
        return [o for line in out.read_text().splitlines() for o in json.loads(line)["offsets"]]

    async with running_daemon(config):
        await wait_for(lambda: len(invoked()) >= 50, 60, "50 records through the runtime")

        async def committed() -> bool:
            done, ends = await offsets(kafka_bootstrap, topic, group, 1)
            return done == ends

        await wait_for(committed, 30, "offsets committed")
    assert invoked() == list(range(50))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["function"] for line in lines} == {"thumbs"}


@asynccontextmanager
async def forwarding(port: int, to: str) -> AsyncIterator[None]:
    """A TCP forwarder on 127.0.0.1:``port`` to the ``to`` URL's host and port."""
    target = urlsplit(to)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        assert target.hostname is not None and target.port is not None
        server_r, server_w = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refused_endpoint_is_retried_until_it_answers(
    kafka_bootstrap: str, unique: str, rie: tuple[str, Path]
) -> None:
    runtime, out = rie
    port = free_port()  # nothing listens here until the forwarder starts: connections refused
    topic, group, name = f"refused-{unique}", f"g-{unique}", f"refused-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(10)])
    config = {
        "retry": {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2},
        "functions": {"thumbs": {"lambda": "function", "endpoint_url": f"http://127.0.0.1:{port}"}},
        "mappings": [
            kafka_mapping(
                name,
                kafka_bootstrap,
                topic,
                group,
                FunctionName="thumbs",
                BatchSize=10,
                MaximumBatchingWindowInSeconds=0,
            )
        ],
    }

    def invoked() -> list[int]:
        if not out.exists():
            return []
        return [o for line in out.read_text().splitlines() for o in json.loads(line)["offsets"]]

    async with running_daemon(config) as daemon:
        await asyncio.sleep(2)  # a few refused invocations
        done, _ = await offsets(kafka_bootstrap, topic, group, 1)
        assert done.get(0, 0) == 0 and invoked() == []
        async with forwarding(port, runtime):

            async def committed() -> bool:
                done, ends = await offsets(kafka_bootstrap, topic, group, 1)
                return done == ends

            await wait_for(committed, 30, "offsets committed once the endpoint answers")
        host, listen = daemon.address
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{listen}/metrics") as resp,
        ):
            metrics = scrape(await resp.text(), name)
    assert sorted(invoked()) == list(range(10))
    assert metrics.get("esm_dropped_events_total", 0) == 0
