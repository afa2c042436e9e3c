"""The schema registry client: schemas by id, over Confluent's REST API, cached.

``GET <SchemaRegistryURI>/schemas/ids/<id>`` is the one call: Confluent Schema Registry,
Apicurio Registry (under ``/apis/ccompat/v7``), Redpanda and Karapace all answer it with
``{"schema": "<text>", "schemaType": "AVRO|PROTOBUF|JSON"}``. A schema is fetched and
compiled once per id and kept for the daemon's life (ids are immutable); an id the registry
does not know is kept as such too, so a topic full of bad records does not hammer it.

Two kinds of failure, kept apart because they end differently:

- :class:`~service.sources.schema_formats.UndecodableRecord`: the record is at fault (no
  header, an unknown id, bytes that do not fit): it goes to the OnFailure destination;
- :class:`RegistryUnavailable`: the registry is (connection refused, timeout, 5xx, refused
  credentials): the caller retries with backoff and counts ``esm_errors_total{kind=
  "schema_registry"}``; nothing past the record is committed meanwhile.

AccessConfigs become an ``aiohttp`` session: BASIC_AUTH's username and password, the client
certificate of CLIENT_CERTIFICATE_TLS_AUTH and the CA of SERVER_ROOT_CA_CERTIFICATE, read
from their secrets (service/secrets.py) when the source starts.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from service.errors import SourceError
from service.secrets import read_credentials, string_fields
from service.sources.schema_formats import Schema, UndecodableRecord, compile_schema
from service.sources.schema_rules import is_glue

if TYPE_CHECKING:
    from service.config import AwsConfig, KafkaSchemaRegistryConfig

#: a registry call that takes longer is an outage (retried), not a slow success
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)


class RegistryUnavailable(Exception):
    """The registry did not answer usefully; retry later. The message names no secret."""


class SchemaRegistry:
    """Schemas by id from one registry, compiled and cached."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self._shown = _redacted(self.url)  # in errors and logs: no user:password@
        self._session = session
        self._schemas: dict[int, Schema | UndecodableRecord] = {}
        self._pending: dict[int, asyncio.Task[Schema | UndecodableRecord]] = {}

    def cached(self, schema_id: int) -> Schema | None:
        """The compiled schema when it is already known (an unknown id: None, ask again)."""
        found = self._schemas.get(schema_id)
        return found if isinstance(found, Schema) else None

    async def schema(self, schema_id: int) -> Schema:
        """The compiled schema; UndecodableRecord for an id the registry does not have (or
        a schema that does not compile), RegistryUnavailable when it cannot be asked."""
        found = self._schemas.get(schema_id)
        if found is None:
            task = self._pending.get(schema_id)
            if task is None:  # one fetch per id, however many lanes wait for it
                task = asyncio.create_task(self._fetch(schema_id))
                self._pending[schema_id] = task
                task.add_done_callback(lambda _: self._pending.pop(schema_id, None))
            found = await asyncio.shield(task)
            self._schemas[schema_id] = found
        if isinstance(found, UndecodableRecord):
            raise found
        return found

    async def _fetch(self, schema_id: int) -> Schema | UndecodableRecord:
        body = await self._get(f"/schemas/ids/{schema_id}")
        if body is None:
            return UndecodableRecord(f"schema id {schema_id} is not in the registry")
        if body.get("references"):
            return UndecodableRecord(f"schema {schema_id} has references: not supported by esmd")
        text, kind = body.get("schema"), body.get("schemaType") or "AVRO"
        if not isinstance(text, str):
            raise RegistryUnavailable(f"schema {schema_id}: the registry's answer has no schema")
        try:
            return await asyncio.to_thread(compile_schema, str(kind), text)
        except UndecodableRecord as exc:
            return exc

    async def _get(self, path: str) -> dict[str, Any] | None:
        """The JSON object at ``path``; None on 404."""
        try:
            async with self._session.get(self.url + path, timeout=REQUEST_TIMEOUT) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise RegistryUnavailable(f"{self._shown}{path}: HTTP {resp.status}")
                body = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            what = f"{type(exc).__name__}: {exc}".replace(self.url, self._shown)
            raise RegistryUnavailable(f"{self._shown}{path}: {what}") from None
        if not isinstance(body, dict):
            raise RegistryUnavailable(f"{self._shown}{path}: not a JSON object")
        return body

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        await self._session.close()


async def open_registry(config: KafkaSchemaRegistryConfig, aws: AwsConfig) -> SchemaRegistry:
    """A client for the mapping's registry, its AccessConfigs' secrets read. A Glue ARN is
    refused here (SourceError ESM_CONFIG_NOT_VALID): esmd speaks Confluent's API only."""
    uri = config.SchemaRegistryURI
    if is_glue(uri):
        raise SourceError(
            "ESM_CONFIG_NOT_VALID",
            f"{uri}: an AWS Glue schema registry; esmd reads Confluent-compatible registries "
            "only (Confluent, Apicurio's /apis/ccompat/v7, Redpanda, Karapace)",
        )
    secrets: dict[str, dict[str, Any]] = {
        a.Type: await read_credentials(a.Type, a.URI, aws) for a in config.AccessConfigs
    }
    headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
    if "BASIC_AUTH" in secrets:
        user, password = string_fields("BASIC_AUTH", secrets["BASIC_AUTH"], "username", "password")
        headers["Authorization"] = _basic(user, password)
    context = await _tls_context(secrets) if uri.startswith("https:") else None
    connector = aiohttp.TCPConnector(ssl=context if context is not None else True, limit=4)
    session = aiohttp.ClientSession(headers=headers, connector=connector)
    return SchemaRegistry(uri, session)


def _redacted(url: str) -> str:
    """The URL without the credentials it may carry (``https://user:secret@host``)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def _basic(user: str, password: str) -> str:
    """RFC 7617's header (aiohttp's BasicAuth is deprecated from 3.14, its replacement new)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _tls_context(secrets: dict[str, dict[str, Any]]) -> ssl.SSLContext:
    """Kafka's TLS rules, for the registry: the root CA and client certificate secrets."""
    from service.sources.kafka_auth import tls_context

    auth = "CLIENT_CERTIFICATE_TLS_AUTH" if "CLIENT_CERTIFICATE_TLS_AUTH" in secrets else "NONE"
    return await tls_context(auth, secrets)
