"""AWS ARNs and OnFailure destination strings, parsed with nothing from the rest of esmd.

Both the configuration (validation, the ARNs a payload carries) and the destinations (which
client to build) read these strings; keeping the parsing here, free of imports from
``service``, lets each of them use it without needing the other.

An ARN is ``arn:<partition>:<service>:<region>:<account>:<resource>``; the resource keeps any
further colons (``stream/s/consumer/c:1700000000``). S3 bucket ARNs have no region or account
(``arn:aws:s3:::bucket``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: esmd's own OnFailure destination for Kafka mappings: a topic on the source's cluster
KAFKA_PREFIX = "kafka://"
#: the account esmd names when nothing says which (moto's and LocalStack's default too)
DEFAULT_ACCOUNT = "000000000000"

_ACCOUNT = re.compile(r"\d{12}")


@dataclass(frozen=True, slots=True)
class Arn:
    partition: str  # "aws", "aws-cn", "aws-us-gov", ...
    service: str
    region: str
    account: str
    resource: str

    def __str__(self) -> str:
        return ":".join(
            ("arn", self.partition, self.service, self.region, self.account, self.resource)
        )


def parse_arn(text: str) -> Arn | None:
    """The parts of an ARN; None when ``text`` is not one (too few parts, no service)."""
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or not parts[1].startswith("aws") or not parts[2]:
        return None
    return Arn(*parts[1:])


def require_arn(text: str) -> Arn:
    """:func:`parse_arn` for a string already validated; ValueError if it is not an ARN."""
    arn = parse_arn(text)
    if arn is None:
        raise ValueError(f"not an ARN: {text!r}")
    return arn


def account_of(text: str | None) -> str | None:
    """The 12-digit account of an ARN, None if it has none (S3, self-managed Kafka)."""
    arn = parse_arn(text) if text else None
    return arn.account if arn is not None and _ACCOUNT.fullmatch(arn.account) else None


# --- OnFailure destinations -----------------------------------------------------------------


def destination_kind(destination: str) -> str | None:
    """``sqs``, ``sns``, ``s3`` or ``kafka``; None for anything else (refused by config)."""
    if destination.startswith(KAFKA_PREFIX):
        return "kafka" if len(destination) > len(KAFKA_PREFIX) else None
    arn = parse_arn(destination)
    if arn is None:
        return None
    if arn.service in ("sqs", "sns") and arn.region and arn.account and arn.resource:
        return arn.service
    if arn.service == "s3" and arn.resource and "/" not in arn.resource:
        return "s3"
    return None


def is_fifo_destination(destination: str) -> bool:
    """An SQS FIFO queue or SNS FIFO topic (their names end in ``.fifo``)."""
    kind = destination_kind(destination)
    return kind in ("sqs", "sns") and destination.endswith(".fifo")


# --- event sources --------------------------------------------------------------------------


def kinesis_consumer_stream(text: str) -> str | None:
    """For a Kinesis enhanced fan-out consumer ARN
    (``arn:aws:kinesis:<region>:<account>:stream/<name>/consumer/<consumer>:<created>``),
    the ARN of its stream; None for anything else, a stream ARN included."""
    arn = parse_arn(text)
    if arn is None or arn.service != "kinesis":
        return None
    parts = arn.resource.split("/")
    if len(parts) < 4 or parts[0] != "stream" or parts[2] != "consumer":
        return None
    return str(Arn(arn.partition, "kinesis", arn.region, arn.account, f"stream/{parts[1]}"))


# --- what a payload names -------------------------------------------------------------------


def lambda_function_arn(
    function: str, region: str, account: str = DEFAULT_ACCOUNT, partition: str = "aws"
) -> str:
    """The ARN of a Lambda function given as Invoke's FunctionName accepts it: a full ARN
    (kept, qualifier included), a partial ARN ``<account>:function:<name>``, or a name."""
    if function.startswith("arn:"):
        return function
    if re.fullmatch(r"\d{12}:function:.+", function):
        return f"arn:{partition}:lambda:{region}:{function}"
    return f"arn:{partition}:lambda:{region}:{account}:function:{function}"


def role_arn(account: str, name: str = "esmd", partition: str = "aws") -> str:
    """An IAM role's ARN (IAM ARNs have no region)."""
    return f"arn:{partition}:iam::{account}:role/{name}"


def is_role_arn(text: str) -> bool:
    arn = parse_arn(text)
    return (
        arn is not None
        and arn.service == "iam"
        and not arn.region
        and _ACCOUNT.fullmatch(arn.account) is not None
        and arn.resource.startswith("role/")
        and len(arn.resource) > len("role/")
    )
