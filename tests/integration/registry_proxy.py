"""A proxy in front of the schema registry (Apicurio Registry, tests/conftest.py's
``apicurio_registry``), for what the shared registry itself must not do: be down (the proxy's
port refuses connections until it serves), require HTTP basic credentials, speak HTTPS with a
private CA, or count the schema fetches that reach it.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web


class RegistryProxy:
    """Forwards GETs to ``upstream`` (the registry's API), counting them in ``gets``; with
    ``basic``, only requests carrying those HTTP basic credentials (401 otherwise)."""

    def __init__(self, upstream: str, basic: tuple[str, str] | None = None) -> None:
        self.upstream = upstream
        self.expected = (
            "Basic " + base64.b64encode(":".join(basic).encode()).decode() if basic else None
        )
        self.gets = 0
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self._forward)

    async def _forward(self, request: web.Request) -> web.Response:
        if self.expected is not None and request.headers.get("Authorization") != self.expected:
            return web.json_response({"error_code": 401, "message": "Unauthorized"}, status=401)
        self.gets += 1
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.upstream + request.path_qs, headers=_forwarded(request)) as resp,
        ):
            return web.Response(
                body=await resp.read(), status=resp.status, content_type=resp.content_type
            )


@asynccontextmanager
async def serving(
    app: web.Application, port: int = 0, tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (``port``, or any free one; HTTPS with ``tls``); yield its
    base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls)
    await site.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _forwarded(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k == "Accept"}


def free_port() -> int:
    """A port nothing listens on (yet): a registry that is down refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
