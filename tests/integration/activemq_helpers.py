"""ActiveMQ test helpers: send and read over STOMP (stompman, the client esmd uses), an esmd
config for one queue, and a private broker a test may restart without disturbing the
shared one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import stompman

from service.devtools.servers import (
    ACTIVEMQ_PASSWORD,
    ACTIVEMQ_USER,
    HOST,
    activemq_command,
    activemq_ready,
)

ARN = "arn:aws:mq:us-east-1:000000000000:broker:esmd-test:b-0f5b7522-2b41-4f85-a615-735a4e6d96b5"


def _parameters(endpoint: str) -> list[stompman.ConnectionParameters]:
    host, port = endpoint.removeprefix("stomp://").rsplit(":", 1)
    return [stompman.ConnectionParameters(host, int(port), ACTIVEMQ_USER, ACTIVEMQ_PASSWORD)]


async def send(
    endpoint: str,
    queue: str,
    bodies: list[bytes],
    *,
    text: bool = True,
    headers: dict[str, str] | None = None,
) -> None:
    """Persistent messages, in order, each confirmed by a receipt (on the broker when this
    returns). ``text``: TextMessages (``amq-msg-type: text``), else BytesMessages."""
    extra = {"persistent": "true", "amq-msg-type": "text" if text else "bytes", **(headers or {})}
    async with stompman.Client(_parameters(endpoint)) as client:
        for body in bodies:
            await client.send(body, f"/queue/{queue}", headers=extra, receipt_timeout=10)


async def receive(endpoint: str, queue: str, count: int, timeout: float) -> list[Any]:
    """Up to ``count`` messages of ``queue`` (acknowledged: gone), waiting at most
    ``timeout`` seconds for them."""
    got: list[Any] = []
    done = asyncio.Event()

    async def handle(frame: stompman.AckableMessageFrame) -> None:
        got.append(frame)
        await frame.ack()
        if len(got) >= count:
            done.set()

    async with stompman.Client(_parameters(endpoint)) as client:
        subscription = await client.subscribe_with_manual_ack(f"/queue/{queue}", handle)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await done.wait()
        await subscription.unsubscribe()
    return got


def mq_config(endpoint: str, name: str, queue: str, handler: str, **mapping: Any) -> dict[str, Any]:
    """One ActiveMQ mapping on ``queue``; credentials from $ESMD_TEST_ACTIVEMQ_AUTH (set by
    ``credentials()``) unless the mapping says otherwise."""
    os.environ.setdefault(
        "ESMD_TEST_ACTIVEMQ_AUTH",
        f'{{"username": "{ACTIVEMQ_USER}", "password": "{ACTIVEMQ_PASSWORD}"}}',
    )
    return {
        "mq": {"brokers": {ARN: {"engine": "activemq", "endpoints": [endpoint]}}},
        "functions": {name: {"python": f"tests.integration.activemq_handlers:{handler}"}},
        "mappings": [
            {
                "Name": name,
                "EventSourceArn": ARN,
                "Queues": [queue],
                "FunctionName": name,
                "SourceAccessConfigurations": [
                    {"Type": "BASIC_AUTH", "URI": "env:ESMD_TEST_ACTIVEMQ_AUTH"}
                ],
                **mapping,
            }
        ],
    }


def _free_port_pair() -> int:
    """A port whose next one is free too (the private broker's STOMP and AMQP)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


class PrivateBroker:
    """An ActiveMQ of the test's own (port, state folder): one it may stop and start."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = _free_port_pair()
        self.endpoint = f"stomp://{HOST}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        command = activemq_command(self.state, self.port)
        with open(self.state / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                command, cwd=self.state, stdout=out, stderr=subprocess.STDOUT
            )
        _poll_until(lambda: activemq_ready(self.port), timeout, self._proc)

    def stop(self) -> None:
        """SIGTERM (ActiveMQ's shutdown hook closes KahaDB), SIGKILL after 30 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _poll_until(ready: Any, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the private ActiveMQ exited ({proc.returncode})")
        time.sleep(0.2)
    raise RuntimeError(f"the private ActiveMQ was not ready within {timeout}s")


@contextlib.contextmanager
def private_broker(state: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(state)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
