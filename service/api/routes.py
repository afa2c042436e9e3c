"""The aiohttp handlers of the five operations, behind SigV4, at AWS's paths:

- ``POST /2015-03-31/event-source-mappings[/]`` CreateEventSourceMapping -> 202
- ``GET  /2015-03-31/event-source-mappings[/]?EventSourceArn&FunctionName&Marker&MaxItems``
  ListEventSourceMappings -> 200 ``{NextMarker, EventSourceMappings}``
- ``GET|PUT|DELETE /2015-03-31/event-source-mappings/{UUID}`` Get (200), Update, Delete (202)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from service.api.control import Control
from service.api.shapes import ApiError, invalid, max_items
from service.api.sigv4 import verify
from service.config import ApiConfig

PREFIX = "/2015-03-31/event-source-mappings"
DEFAULT_MAX_ITEMS = 100
Operation = Callable[[web.Request, bytes], Awaitable[web.Response]]


class Api:
    def __init__(self, config: ApiConfig, control: Control) -> None:
        self.config = config
        self.control = control
        self._secrets = {
            c.access_key_id: c.secret_access_key.get_secret_value() for c in config.credentials
        }

    def routes(self) -> list[web.RouteDef]:
        item = PREFIX + "/{uuid}"
        return [
            web.post(PREFIX, self._handler(self._create)),
            web.post(PREFIX + "/", self._handler(self._create)),
            web.get(PREFIX, self._handler(self._list)),
            web.get(PREFIX + "/", self._handler(self._list)),
            web.get(item, self._handler(self._get)),
            web.put(item, self._handler(self._update)),
            web.delete(item, self._handler(self._delete)),
        ]

    def _handler(self, operation: Operation) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                self._authenticate(request, body)
                return await operation(request, body)
            except ApiError as exc:
                return exc.response()

        return handle

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        if self.config.allow_unauthenticated_on_loopback and _loopback(request.remote):
            return
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        verify(request.method, url, request.headers, body, self._secrets)

    # --- operations ------------------------------------------------------------------------

    async def _create(self, _: web.Request, body: bytes) -> web.Response:
        return _json(await self.control.create(_body(body)), 202)

    async def _get(self, request: web.Request, _: bytes) -> web.Response:
        return _json(self.control.get(request.match_info["uuid"]))

    async def _update(self, request: web.Request, body: bytes) -> web.Response:
        return _json(await self.control.update(request.match_info["uuid"], _body(body)), 202)

    async def _delete(self, request: web.Request, _: bytes) -> web.Response:
        return _json(await self.control.delete(request.match_info["uuid"]), 202)

    async def _list(self, request: web.Request, _: bytes) -> web.Response:
        query = request.query
        limit = _max_items(query.get("MaxItems"))
        found = self.control.list(query.get("EventSourceArn"), query.get("FunctionName"))
        marker = query.get("Marker")
        if marker:
            found = [m for m in found if m["UUID"] > marker]
        page = found[:limit]
        out: dict[str, Any] = {"EventSourceMappings": page}
        if len(found) > limit:
            out["NextMarker"] = page[-1]["UUID"]
        return _json(out)


def _max_items(given: str | None) -> int:
    if given is None:
        return DEFAULT_MAX_ITEMS
    try:
        value = int(given)
    except ValueError:
        raise invalid(f"MaxItems: {given!r} is not an integer") from None
    if not 1 <= value <= max_items():
        raise invalid(f"MaxItems: must be between 1 and {max_items()}")
    return value


def _body(body: bytes) -> Any:
    try:
        return orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise invalid("the request body is not JSON") from None


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
