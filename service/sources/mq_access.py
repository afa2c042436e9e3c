"""SourceAccessConfigurations of Amazon MQ mappings: the Types AWS takes and esmd honours.

AWS (Lambda API, SourceAccessConfiguration; "Using Lambda with Amazon MQ"):

- BASIC_AUTH, required: a Secrets Manager secret ``{"username", "password"}`` (off AWS
  also ``env:NAME`` or ``file:PATH``, service/secrets.py). ActiveMQ: the
  SimpleAuthenticationPlugin's users; RabbitMQ: PLAIN, the only mechanism Lambda uses;
- VIRTUAL_HOST (RabbitMQ only): the vhost's name itself as the URI (not a secret); default
  ``/``. The engine is known only at run time (``mq.brokers`` or DescribeBroker), so an
  ActiveMQ mapping with a VIRTUAL_HOST is refused then, as ESM_CONFIG_NOT_VALID;
- VPC_SUBNET, VPC_SECURITY_GROUP: where AWS places its pollers; nothing to do for esmd.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.secrets import FORMS, uri_problem

if TYPE_CHECKING:
    from service.config import MappingConfig

BASIC_AUTH = "BASIC_AUTH"
VIRTUAL_HOST = "VIRTUAL_HOST"
NETWORK = frozenset({"VPC_SUBNET", "VPC_SECURITY_GROUP"})
DEFAULT_VIRTUAL_HOST = "/"


def access_errors(m: MappingConfig) -> Iterator[tuple[str, str]]:
    """(field, message) for each SourceAccessConfigurations problem of an MQ mapping."""
    seen: set[str] = set()
    for i, access in enumerate(m.SourceAccessConfigurations):
        field, kind = f"SourceAccessConfigurations[{i}]", access.Type
        if kind in seen:
            yield f"{field}.Type", f"{kind} is given twice"
        seen.add(kind)
        if kind in NETWORK:
            continue
        if kind not in (BASIC_AUTH, VIRTUAL_HOST):
            yield f"{field}.Type", f"{kind} is not an Amazon MQ Type (BASIC_AUTH, VIRTUAL_HOST)"
        elif not access.URI:
            what = FORMS if kind == BASIC_AUTH else "the virtual host's name"
            yield f"{field}.URI", f"{kind} needs a URI ({what})"
        elif kind == BASIC_AUTH and (problem := uri_problem(access.URI)) is not None:
            yield f"{field}.URI", problem
    if BASIC_AUTH not in seen:
        yield "SourceAccessConfigurations", "Amazon MQ mappings need BASIC_AUTH (AWS)"


def virtual_host(m: MappingConfig) -> str:
    """The mapping's VIRTUAL_HOST, or RabbitMQ's default ``/``."""
    for access in m.SourceAccessConfigurations:
        if access.Type == VIRTUAL_HOST and access.URI:
            return access.URI
    return DEFAULT_VIRTUAL_HOST


def basic_auth_uri(m: MappingConfig) -> str:
    """The BASIC_AUTH secret's URI (validated: every MQ mapping has one)."""
    for access in m.SourceAccessConfigurations:
        if access.Type == BASIC_AUTH and access.URI:
            return access.URI
    raise ValueError(f"mapping {m.Name!r}: no BASIC_AUTH (not validated?)")
