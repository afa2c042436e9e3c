"""Config rules for a Kafka mapping's SchemaRegistryConfig (AWS's KafkaSchemaRegistryConfig).

As AWS does: provisioned mode is required; the URI is a Confluent-compatible registry's URL
or a Glue registry ARN; each access type at most once, basic and mTLS authentication not
together. A Glue ARN passes validation (the file is right for AWS) but esmd cannot read Glue
registries: the mapping then stops with ESM_CONFIG_NOT_VALID at run time, saying so.
Imports nothing heavy: ``service.config`` runs these rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import MappingConfig

GLUE_REGISTRY_ARN = re.compile(r"^arn:aws[a-z-]*:glue:[a-z0-9-]+:\d{12}:registry/[\w.-]+$")
FIELD = "{config}.SchemaRegistryConfig"
_AUTH_TYPES = {"BASIC_AUTH", "CLIENT_CERTIFICATE_TLS_AUTH"}


def is_glue(uri: str) -> bool:
    return uri.startswith("arn:")


def schema_registry_errors(m: MappingConfig) -> Iterator[tuple[str, str]]:
    """(field, message) for each problem of the mapping's SchemaRegistryConfig."""
    from service.secrets import uri_problem

    registry = m.schema_registry
    if registry is None:
        return
    where = FIELD.format(
        config="SelfManagedKafkaEventSourceConfig"
        if m.SelfManagedKafkaEventSourceConfig is not None
        else "AmazonManagedKafkaEventSourceConfig"
    )
    if m.ProvisionedPollerConfig is None:
        yield (
            where,
            "a schema registry needs provisioned mode (ProvisionedPollerConfig), as AWS requires",
        )
    uri = registry.SchemaRegistryURI
    if is_glue(uri):
        if not GLUE_REGISTRY_ARN.match(uri):
            yield (
                f"{where}.SchemaRegistryURI",
                ("not a Glue registry ARN (arn:aws:glue:<region>:<account>:registry/<name>)"),
            )
        if registry.AccessConfigs:
            yield f"{where}.AccessConfigs", "a Glue registry is reached with IAM, not these"
    elif not re.match(r"^https?://[^/\s]+", uri):
        yield f"{where}.SchemaRegistryURI", "an http:// or https:// URL, or a Glue registry ARN"
    attributes = [c.Attribute for c in registry.SchemaValidationConfigs]
    if len(set(attributes)) != len(attributes):
        yield f"{where}.SchemaValidationConfigs", "each Attribute (KEY, VALUE) at most once"
    seen: set[str] = set()
    for i, access in enumerate(registry.AccessConfigs):
        field = f"{where}.AccessConfigs[{i}]"
        if access.Type in seen:
            yield f"{field}.Type", f"{access.Type} is given twice"
        elif access.Type in _AUTH_TYPES and seen & _AUTH_TYPES:
            yield f"{field}.Type", "BASIC_AUTH and CLIENT_CERTIFICATE_TLS_AUTH exclude each other"
        seen.add(access.Type)
        problem = uri_problem(access.URI)
        if problem is not None:
            yield f"{field}.URI", problem
