"""The admin HTTP server (/metrics, /healthz, /readyz, /mappings), started the same way by a
single-process Daemon and by the workers' Supervisor.

With ``server.auth_token`` set, every path but the probes (/healthz, /readyz: kubelets send
no token) wants ``Authorization: Bearer <token>``, so the server may listen on 0.0.0.0 in a
pod without showing its mappings and metrics to the whole network. The Lambda API's paths
(``SIGNED_PREFIX``, service/api/) carry their own SigV4 authentication instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: paths open without the token: liveness and readiness probes
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: paths authenticated by SigV4 (service/api/sigv4.py), not by the bearer token
SIGNED_PREFIX = "/2015-03-31/"


def _bearer(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not request.path.startswith(SIGNED_PREFIX):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):  # constant time
                return web.Response(
                    status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"}
                )
        return await handler(request)

    return check


async def serve(
    host_port: tuple[str, int],
    routes: dict[str, Handler],
    token: str | None = None,
    extra: list[web.RouteDef] | None = None,
) -> web.AppRunner:
    """Listen on ``host_port`` with one GET handler per path (and the ``extra`` routes),
    behind the bearer ``token`` when given; clean up the returned runner."""
    app = web.Application(middlewares=[_bearer(token)] if token else [])
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    app.add_routes(extra or [])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, *host_port).start()
    return runner
