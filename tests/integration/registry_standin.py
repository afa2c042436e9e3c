"""A Confluent-compatible schema registry for the integration tests, and a proxy that can be
down.

The issue asks for Apicurio Registry 3.x; its Maven artifacts cannot be resolved from the
package mirror this project builds with (apicurio-registry-schema-util-provider 3.3.3 and
Quarkus 3.33.3.1 parents are missing), so ``schema_registry`` uses, in order:
$ESMD_SCHEMA_REGISTRY_URL (a real registry: Apicurio's ``.../apis/ccompat/v7``, Confluent,
Redpanda), else this in-process stand-in. It answers the two calls involved
(``POST /subjects/<subject>/versions``, ``GET /schemas/ids/<id>``) with Confluent's shapes.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
from aiohttp import web


class StandInRegistry:
    """Schemas by global id, the same text under the same id (as Confluent and Apicurio)."""

    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, str]] = {}
        self.fetches = 0
        self.app = web.Application()
        self.app.router.add_post("/subjects/{subject}/versions", self._register)
        self.app.router.add_get("/schemas/ids/{id}", self._by_id)

    async def _register(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        entry = {"schema": body["schema"], "schemaType": body.get("schemaType", "AVRO")}
        for found, known in self.schemas.items():
            if known == entry:
                return web.json_response({"id": found})
        new = len(self.schemas) + 1
        self.schemas[new] = entry
        return web.json_response({"id": new})

    async def _by_id(self, request: web.Request) -> web.Response:
        self.fetches += 1
        entry = self.schemas.get(int(request.match_info["id"]))
        if entry is None:
            return web.json_response(
                {"error_code": 40403, "message": "Schema not found"}, status=404
            )
        shown = dict(entry)
        if shown["schemaType"] == "AVRO":
            del shown["schemaType"]  # as Confluent's API: Avro is the default
        return web.json_response(shown)


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


def proxy_app(upstream: str, basic: tuple[str, str] | None = None) -> web.Application:
    """Forwards GETs to ``upstream``: the registry, reached through a port that can be down,
    or (``basic``) only with those HTTP basic credentials (401 otherwise)."""
    expected = "Basic " + base64.b64encode(":".join(basic).encode()).decode() if basic else None

    async def forward(request: web.Request) -> web.Response:
        if expected is not None and request.headers.get("Authorization") != expected:
            return web.json_response({"error_code": 401, "message": "Unauthorized"}, status=401)
        async with (
            aiohttp.ClientSession() as http,
            http.get(upstream + request.path_qs, headers=_forwarded(request)) as resp,
        ):
            return web.Response(
                body=await resp.read(), status=resp.status, content_type=resp.content_type
            )

    app = web.Application()
    app.router.add_get("/{tail:.*}", forward)
    return app


def _forwarded(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k == "Accept"}


def free_port() -> int:
    """A port nothing listens on (yet): a registry that is down refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
