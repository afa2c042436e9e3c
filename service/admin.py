"""The admin HTTP server (/metrics, /healthz, /readyz, /mappings), started the same way by a
single-process Daemon and by the workers' Supervisor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(host_port: tuple[str, int], routes: dict[str, Handler]) -> web.AppRunner:
    """Listen on ``host_port`` with one GET handler per path; clean up the returned runner."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, *host_port).start()
    return runner
