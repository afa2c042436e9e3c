"""SourceAccessConfigurations of Kafka mappings: the Types esmd honours and AWS's rules.

AWS's Types (Lambda API, SourceAccessConfiguration; CloudFormation
AWS::Lambda::EventSourceMapping SourceAccessConfiguration):

- authentication, one at most: BASIC_AUTH (SASL/PLAIN), SASL_SCRAM_256_AUTH,
  SASL_SCRAM_512_AUTH, CLIENT_CERTIFICATE_TLS_AUTH (mTLS), OAUTHBEARER_AUTH (SASL/OAUTHBEARER
  with OAuth 2.0 client credentials), IAM_AUTH (self-managed; the MSK IAM signer's token
  over SASL/OAUTHBEARER, no URI);
- SERVER_ROOT_CA_CERTIFICATE: the CA that signed the brokers' certificates (with any of them);
- OAUTHBEARER_SCOPE, _AUDIENCE, _LOGICAL_CLUSTER, _IDENTITY_POOL: values (not secrets) that
  go with OAUTHBEARER_AUTH;
- VPC_SUBNET, VPC_SECURITY_GROUP: where AWS places its pollers; nothing to do for esmd.

Amazon MSK mappings take SASL_SCRAM_512_AUTH or CLIENT_CERTIFICATE_TLS_AUTH; without either
esmd uses IAM when the cluster offers it, as Lambda does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from service.secrets import FORMS, uri_problem

if TYPE_CHECKING:
    from service.config import MappingConfig

#: authentication Type -> SASL mechanism ("" for a client certificate)
AUTHENTICATION = {
    "BASIC_AUTH": "PLAIN",
    "SASL_SCRAM_256_AUTH": "SCRAM-SHA-256",
    "SASL_SCRAM_512_AUTH": "SCRAM-SHA-512",
    "OAUTHBEARER_AUTH": "OAUTHBEARER",
    "IAM_AUTH": "OAUTHBEARER",
    "CLIENT_CERTIFICATE_TLS_AUTH": "",
}
ROOT_CA = "SERVER_ROOT_CA_CERTIFICATE"
OAUTH_OPTIONS = {
    "OAUTHBEARER_SCOPE": "scope",
    "OAUTHBEARER_AUDIENCE": "audience",
    "OAUTHBEARER_LOGICAL_CLUSTER": "logicalCluster",
    "OAUTHBEARER_IDENTITY_POOL": "identityPoolId",
}
NETWORK = frozenset({"VPC_SUBNET", "VPC_SECURITY_GROUP"})
SELF_MANAGED = frozenset({*AUTHENTICATION, ROOT_CA, *OAUTH_OPTIONS, *NETWORK})
MSK = frozenset({"SASL_SCRAM_512_AUTH", "CLIENT_CERTIFICATE_TLS_AUTH"})
#: Types whose URI is not a secret (a value, or nothing)
NOT_SECRETS = frozenset({*OAUTH_OPTIONS, *NETWORK, "IAM_AUTH"})
#: Types AWS has that esmd cannot honour, and why
REFUSED = {
    "IAM_OAUTHBEARER_AUTH": "Lambda asks AWS for a web identity token for the function's "
    "role; esmd has no such role to ask for",
    "VIRTUAL_HOST": "a RabbitMQ (Amazon MQ) setting",
}


def access_errors(m: MappingConfig, msk: bool) -> Iterator[tuple[str, str]]:
    """(field, message) for each SourceAccessConfigurations problem of a Kafka mapping."""
    allowed = MSK if msk else SELF_MANAGED
    seen: set[str] = set()
    for i, access in enumerate(m.SourceAccessConfigurations):
        field = f"SourceAccessConfigurations[{i}]"
        kind = access.Type
        if kind in seen:
            yield f"{field}.Type", f"{kind} is given twice"
        seen.add(kind)
        if kind in REFUSED:
            yield f"{field}.Type", f"{kind}: esmd cannot honour it ({REFUSED[kind]})"
        elif kind not in allowed:
            where = "Amazon MSK" if msk else "self-managed Kafka"
            yield f"{field}.Type", f"{kind} is not a {where} Type (AWS takes {_listed(allowed)})"
        elif kind == "IAM_AUTH":
            if access.URI:
                yield f"{field}.URI", "IAM_AUTH takes no URI"
        elif access.URI is None:
            yield f"{field}.URI", f"{kind} needs a URI ({FORMS})"
        elif kind not in NOT_SECRETS:
            problem = uri_problem(access.URI)
            if problem is not None:
                yield f"{field}.URI", problem
    yield from _combination_errors(m, seen)


def _combination_errors(m: MappingConfig, given: set[str]) -> Iterator[tuple[str, str]]:
    auth = [t for t in given if t in AUTHENTICATION]
    if len(auth) > 1:
        yield "SourceAccessConfigurations", f"one authentication Type at most, got {sorted(auth)}"
    options = sorted(given & set(OAUTH_OPTIONS))
    if options and "OAUTHBEARER_AUTH" not in given:
        yield "SourceAccessConfigurations", f"{', '.join(options)} need OAUTHBEARER_AUTH"
    if m.KafkaTls is False and given & {"CLIENT_CERTIFICATE_TLS_AUTH", ROOT_CA}:
        yield "KafkaTls", "false cannot go with a client certificate or a server root CA"


def _listed(types: frozenset[str]) -> str:
    return ", ".join(sorted(types))
