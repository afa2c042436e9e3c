"""The esmd configuration file: typed models, loading, and error reporting.

Keys under ``mappings`` are the CloudFormation ``AWS::Lambda::EventSourceMapping`` property
names, so a mapping can be pasted from a template. Defaults and allowed ranges follow AWS's
documentation per source kind; those that depend on the source (BatchSize, the batching
window) are left ``None`` in the model and resolved by :meth:`MappingConfig.effective`.

A bad file is refused whole: :func:`load_config` gathers every error of every mapping and
raises one :class:`ConfigError` that lists them by mapping name and field path.
"""

from __future__ import annotations

import enum
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from service.arns import (
    DEFAULT_ACCOUNT,
    account_of,
    destination_kind,
    is_fifo_destination,
    is_role_arn,
    kinesis_consumer_stream,
    lambda_function_arn,
    parse_arn,
    role_arn,
)
from service.sources import PLANNED, SOURCES, owners
from service.sources.kinds import ARN_SERVICES, SourceKind

#: AWS's cap on the invocation payload of a synchronous Invoke (6 MB).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_FILTERS = 5
MAX_PATTERN_CHARS = 4096


class _Model(BaseModel):
    """Base for every config model: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- esmd's own sections -------------------------------------------------------------------


class ServerConfig(_Model):
    listen: str = Field("127.0.0.1:9464", description="host:port for /metrics, /healthz, /readyz")
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="How long SIGTERM waits for in-flight batches before abandoning"
    )
    workers: int | None = Field(
        None, ge=1, le=256, description="Worker processes (esmd run); default: one per core"
    )
    auth_token: SecretStr | None = Field(
        None,
        description="Bearer token for every path but /healthz and /readyz: the token itself "
        "(say ${ESMD_ADMIN_TOKEN}), env:NAME or file:PATH (a mounted secret). Set it whenever "
        "listen is reachable by others (0.0.0.0 in a pod)",
    )

    @field_validator("auth_token", mode="after")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        """env:NAME and file:PATH are read once, at load; the token is never shown."""
        if value is None:
            return None
        given = _read_secret(value.get_secret_value())
        if len(given) < 16:
            raise ValueError("use a token of 16 characters or more")
        return SecretStr(given)

    @property
    def token(self) -> str | None:
        return self.auth_token.get_secret_value() if self.auth_token else None

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host or "0.0.0.0", int(port)


def mapping_uuid(name: str) -> str:
    """The UUID of the mapping named ``name`` (MappingConfig.uuid)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"esmd:mapping:{name}"))


def _read_secret(given: str) -> str:
    """A secret given as itself, as ``env:NAME`` (an environment variable) or as
    ``file:PATH`` (a mounted secret), read once at load."""
    if given.startswith("env:"):
        found = os.environ.get(given.removeprefix("env:"))
        if not found:
            raise ValueError(f"environment variable {given.removeprefix('env:')} is not set")
        return found
    if given.startswith("file:"):
        try:
            return Path(given.removeprefix("file:")).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read {given.removeprefix('file:')}: {exc.strerror}") from None
    return given


class ScalingSettings(_Model):
    """How poller pools follow the load. esmd's own section: AWS publishes no such knobs."""

    poller_capacity_mb_per_second: float = Field(
        5.0, gt=0, description="Throughput one poller is counted at (AWS's figure: 5 MB/s)"
    )
    period_seconds: float = Field(
        1.0, gt=0, description="How often a provisioned pool is evaluated"
    )
    scale_up_after_seconds: float = Field(
        2.0, ge=0, description="How long lag must last before a provisioned pool grows"
    )
    scale_down_cooldown_seconds: float = Field(
        60.0, ge=0, description="How long without lag before a pool shrinks"
    )
    on_demand_period_seconds: float = Field(
        60.0, gt=0, description="Evaluation interval without ProvisionedPollerConfig (AWS: 1 min)"
    )
    sqs_period_seconds: float = Field(
        1.0, gt=0, description="How often an SQS mapping's concurrency is evaluated"
    )
    sqs_minute_seconds: float = Field(
        60.0,
        gt=0,
        description="The length of AWS's minute in SQS scaling (growth per minute, the idle "
        "minute before shrinking); lower it to compress time in tests and benchmarks",
    )


class KafkaSettings(_Model):
    """Kafka consumers (esmd's own section). Static membership (KIP-345): each poller joins
    its group with a group.instance.id that survives a restart, so a replica restarted
    within ``session_timeout_seconds`` takes its partitions back at once, without a
    rebalance. The price: a replica gone for good holds its partitions that long before
    the group gives them to others (a graceful stop does not leave the group either)."""

    static_membership: bool = Field(
        True, description="Join with a stable group.instance.id (pollers up to the pool minimum)"
    )
    instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="This replica's part of group.instance.id: unique among the replicas of a "
        "group and the same after a restart (a StatefulSet pod's name). Default: $HOSTNAME, "
        "else the host name",
    )
    session_timeout_seconds: float = Field(
        45.0,
        ge=6,
        le=1800,
        description="session.timeout.ms of the static members: how long a dead replica's "
        "partitions wait for it (the broker's group.min/max.session.timeout.ms bound it)",
    )


class AwsConfig(_Model):
    region: str = "us-east-1"
    account_id: str = Field(
        DEFAULT_ACCOUNT,
        pattern=r"^\d{12}$",
        description="The account esmd names in ARNs it makes up (a function's ARN in payloads "
        "and invocation records when FunctionName is not an ARN); 12 digits",
    )
    endpoint_url: str | None = Field(None, description="Endpoint for every AWS API (moto, ...)")
    endpoints: dict[str, str] = Field(
        default_factory=dict, description="Per-service endpoint, e.g. {sqs: ...}; wins"
    )

    def endpoint_for(self, service: str) -> str | None:
        return self.endpoints.get(service, self.endpoint_url)


class DocumentDBSettings(_Model):
    """Where DocumentDB clusters are reached (esmd's own section: AWS finds the endpoint)."""

    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="A cluster's EventSourceArn -> a mongodb:// URI (host, port, TLS and "
        "replica-set options; no credentials: those come from SourceAccessConfigurations). "
        "Default: the cluster's endpoint from RDS DescribeDBClusters, with TLS",
    )
    log_retention_seconds: int = Field(
        10800,
        ge=1,
        le=604800,
        description="The clusters' change_stream_log_retention_duration: StartingPosition "
        "TRIM_HORIZON starts this long ago, as Lambda does (DocumentDB's default: 3 hours)",
    )

    @field_validator("endpoints")
    @classmethod
    def _uris(cls, value: dict[str, str]) -> dict[str, str]:
        for arn, uri in value.items():
            if not uri.startswith(("mongodb://", "mongodb+srv://")):
                raise ValueError(f"{arn}: {uri!r} is not a mongodb:// URI")
        return value


MqEngine = Literal["rabbitmq", "activemq"]


class MqBroker(_Model):
    """One Amazon MQ broker reached at a configured endpoint (off AWS, or to skip the MQ API)."""

    engine: MqEngine = Field(description="The broker's engine: rabbitmq or activemq")
    endpoints: list[str] = Field(
        min_length=1,
        description="Where the broker listens, tried in order (ActiveMQ's active/standby "
        "pair: both): rabbitmq amqp://host:port or amqps://host:port; activemq (STOMP) "
        "stomp://host:port or stomp+ssl://host:port. No credentials: those come from "
        "SourceAccessConfigurations BASIC_AUTH",
    )
    consumers: int = Field(
        1,
        ge=1,
        le=100,
        description="esmd's own: connections consuming the queue at once. One keeps the "
        "queue's order; more trade it for throughput",
    )

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if "://" not in url or "@" in url.split("://", 1)[1].split("/", 1)[0]:
                raise ValueError(f"{url!r} is not scheme://host:port (and holds no credentials)")
        return value


class MqSettings(_Model):
    """Where Amazon MQ brokers are reached (esmd's own section: AWS finds the endpoints)."""

    brokers: dict[str, MqBroker] = Field(
        default_factory=dict,
        description="A broker's EventSourceArn, or its name (the <name> of "
        "arn:aws:mq:<region>:<account>:broker:<name>:<id>) -> its engine and endpoints. "
        "Default: the broker's engine and endpoints from the MQ API's DescribeBroker",
    )

    def broker_for(self, arn: str) -> MqBroker | None:
        """The configured broker of a mapping's EventSourceArn: by ARN, else by name."""
        found = self.brokers.get(arn)
        if found is None:
            parts = arn.split(":")
            if len(parts) >= 7 and parts[5] == "broker":
                found = self.brokers.get(parts[6])
        return found


class CheckpointsConfig(_Model):
    """Where Kinesis, DynamoDB Streams and DocumentDB mappings keep checkpoints (and leases)."""

    store: Literal["sqlite", "dynamodb"] = "sqlite"
    path: str = "./esmd-state.db"
    table: str | None = Field(None, description="DynamoDB lease table (store: dynamodb)")
    lease_duration_seconds: float = Field(
        10.0, ge=1, le=600, description="A lease not renewed for this long is taken over"
    )
    owner: str | None = Field(
        None, description="This replica's name in the lease table (default: host-pid-random)"
    )


class ApiCredential(_Model):
    """One SigV4 key pair that may call the control-plane API (boto3, the AWS CLI)."""

    access_key_id: str = Field(min_length=1)
    secret_access_key: SecretStr = Field(
        description="The secret itself (say ${ESMD_API_SECRET}), env:NAME or file:PATH"
    )

    @field_validator("secret_access_key", mode="after")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        return SecretStr(_read_secret(value.get_secret_value()))


class ApiConfig(_Model):
    """Lambda's event source mapping API on ``server.listen`` (service/api/). Present: the
    API is on; absent: its paths answer 404."""

    credentials: list[ApiCredential] = Field(
        default_factory=list,
        description="SigV4 keys that may call the API; every request must be signed by one",
    )
    allow_unauthenticated_on_loopback: bool = Field(
        False, description="Local development only: unsigned requests from 127.0.0.1/::1 pass"
    )
    store: Literal["sqlite"] = Field(
        "sqlite", description="Where API-created mappings live (one replica: sqlite)"
    )
    path: str | None = Field(
        None, description="The sqlite file (default: checkpoints.path, in its own table)"
    )


class RetryConfig(_Model):
    """Backoff between retries of a failed invocation (exponential with jitter), and what
    happens when the OnFailure destination refuses records (esmd's own: AWS has no knob)."""

    initial_backoff_seconds: float = Field(1.0, gt=0)
    max_backoff_seconds: float = Field(60.0, gt=0)
    throttle_backoff_seconds: float = Field(1.0, gt=0)
    destination_attempts: int = Field(
        10,
        ge=1,
        le=1000,
        description="Sends of one failed batch to the OnFailure destination before its records "
        "count as dropped and the mapping moves on (as AWS does), with the backoff above "
        "between them; ignored with block_on_destination_failure",
    )
    block_on_destination_failure: bool = Field(
        False,
        description="Retry the OnFailure destination for as long as the mapping runs instead "
        "of dropping the records: the partition or shard waits for the destination, no "
        "record is lost (esmd's own; AWS drops them)",
    )


class FunctionConfig(_Model):
    """A target that ``FunctionName`` refers to: exactly one of python, url, lambda."""

    python: str | None = Field(None, description="module:function called with (event, context)")
    url: str | None = Field(None, description="HTTP endpoint that receives the event as a POST")
    lambda_: str | None = Field(None, alias="lambda", description="Lambda function name or ARN")
    timeout_seconds: float = Field(900.0, gt=0, le=900)
    endpoint_url: str | None = Field(None, description="Lambda-compatible endpoint (lambda only)")
    role_arn: str | None = Field(
        None,
        description="The function's execution role, an IAM role ARN: Kinesis records carry it "
        "as invokeIdentityArn (default: arn:aws:iam::<the stream's account>:role/esmd)",
    )

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        if value is not None and not is_role_arn(value):
            raise ValueError(
                f"must be an IAM role ARN (arn:aws:iam::<account>:role/<name>), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> FunctionConfig:
        given = [k for k in ("python", "url", "lambda_") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of python, url, lambda")
        if self.python and not re.fullmatch(r"[\w.]+:[\w.]+", self.python):
            raise ValueError(f"python must be 'module:function', got {self.python!r}")
        return self

    @property
    def kind(self) -> str:
        return "python" if self.python else "http" if self.url else "lambda"


# --- the CloudFormation mapping -------------------------------------------------------------


class Filter(_Model):
    Pattern: str = Field(max_length=MAX_PATTERN_CHARS)


class FilterCriteriaConfig(_Model):
    Filters: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)


class BootstrapEndpoints(_Model):
    KAFKA_BOOTSTRAP_SERVERS: list[str] = Field(min_length=1)


class SelfManagedSource(_Model):
    Endpoints: BootstrapEndpoints


class KafkaSchemaRegistryAccessConfig(_Model):
    """How esmd authenticates to the schema registry, or which CA it trusts (AWS's shape)."""

    Type: Literal["BASIC_AUTH", "CLIENT_CERTIFICATE_TLS_AUTH", "SERVER_ROOT_CA_CERTIFICATE"]
    URI: str = Field(
        description="A Secrets Manager secret ARN, or (esmd's own, off AWS) env:NAME or "
        "file:PATH, holding AWS's JSON: {username, password}; {certificate, privateKey, "
        "privateKeyPassword}; {certificate} for the root CA"
    )


class KafkaSchemaValidationConfig(_Model):
    Attribute: Literal["KEY", "VALUE"]


class KafkaSchemaRegistryConfig(_Model):
    """AWS's KafkaSchemaRegistryConfig: decode records' keys and values with a schema
    registry before filtering and delivery (docs/schema-registry.md). Provisioned mode only."""

    SchemaRegistryURI: str = Field(
        min_length=1,
        max_length=10000,
        description="A Confluent-compatible registry's URL (http:// or https://), or an AWS "
        "Glue registry ARN (accepted by validate; esmd cannot read Glue registries at run time)",
    )
    EventRecordFormat: Literal["JSON", "SOURCE"] = Field(
        "JSON",
        description="JSON: the decoded record as JSON (base64, as Lambda delivers it); "
        "SOURCE: the original payload without the schema header",
    )
    SchemaValidationConfigs: list[KafkaSchemaValidationConfig] = Field(
        min_length=1, max_length=2, description="Which of the record's KEY and VALUE to decode"
    )
    AccessConfigs: list[KafkaSchemaRegistryAccessConfig] = Field(default_factory=list)

    @property
    def attributes(self) -> frozenset[str]:
        return frozenset(c.Attribute for c in self.SchemaValidationConfigs)


class KafkaEventSourceConfig(_Model):
    ConsumerGroupId: str | None = Field(None, min_length=1, max_length=200)
    SchemaRegistryConfig: KafkaSchemaRegistryConfig | None = None


class Scaling(_Model):
    MaximumConcurrency: int | None = Field(None, ge=2, le=1000)


class EsmMetricsConfig(_Model):
    """Accepted as in AWS; esmd exports every metric whatever it lists (a scrape is free)."""

    Metrics: list[Literal["EventCount", "ErrorCount", "KafkaMetrics"]] = Field(
        default_factory=list, max_length=3
    )


class EsmLoggingConfig(_Model):
    """The level of esmd's own log lines about this mapping (AWS: its poller's system logs)."""

    SystemLogLevel: Literal["DEBUG", "INFO", "WARN"] | None = None


#: AWS's limits of a poller group (ProvisionedPollerConfig.PollerGroupName)
GROUP_MAPPINGS = 100
GROUP_POLLERS = 2000


class ProvisionedPollers(_Model):
    """AWS's ProvisionedPollerConfig. The per-kind rules are in service/sources/__init__.py:
    SQS: MinimumPollers default and minimum 2, MaximumPollers up to 10,000, and ``{}`` means
    on demand; Kafka: MaximumPollers up to 2,000."""

    MinimumPollers: int = Field(1, ge=1, le=200, description="Kafka default 1, SQS default 2")
    MaximumPollers: int = Field(
        200, ge=1, le=10000, description="Kafka: 1 to 2,000; SQS: 2 to 10,000"
    )
    PollerGroupName: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[a-zA-Z0-9_-]*$",
        description="Kafka: mappings with the same name share one pool of pollers (up to "
        f"{GROUP_MAPPINGS} mappings, MaximumPollers adding up to at most {GROUP_POLLERS}); "
        "each keeps its own consumer group, offsets, filters and target",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ProvisionedPollers:
        if self.MaximumPollers < self.MinimumPollers:
            raise ValueError("MaximumPollers must be >= MinimumPollers")
        return self


class OnFailureDestination(_Model):
    Destination: str


class Destinations(_Model):
    OnFailure: OnFailureDestination | None = None


class SourceAccessConfiguration(_Model):
    Type: str
    URI: str | None = Field(
        None,
        description="A Secrets Manager secret ARN, or (esmd's own, off AWS) env:NAME or "
        "file:PATH holding the same JSON; a plain value for the OAUTHBEARER_* options",
    )


class DocumentDBStreamConfig(_Model):
    """AWS's DocumentDBEventSourceConfig: what to read of the cluster's change streams."""

    DatabaseName: str = Field(min_length=1, max_length=63, pattern=r'^[^ /.$"]*$')
    CollectionName: str | None = Field(
        None, min_length=1, max_length=57, pattern=r"^[_a-zA-Z0-9][^$]*$"
    )
    FullDocument: Literal["UpdateLookup", "Default"] = "Default"

    @field_validator("CollectionName")
    @classmethod
    def _not_system(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("system."):
            raise ValueError("system. collections have no change stream")
        return value


class StartPosition(enum.StrEnum):
    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"


FunctionResponseType = Literal["ReportBatchItemFailures"]
RetryAttempts = Annotated[int, Field(ge=-1, le=10000)]


class MappingConfig(_Model):
    """One event source mapping, with the property names of AWS::Lambda::EventSourceMapping."""

    Name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="esmd's own")
    FunctionName: str = Field(min_length=1)
    EventSourceArn: str | None = Field(None, pattern=r"^arn:aws[a-zA-Z-]*:[a-z0-9-]+:")
    SelfManagedEventSource: SelfManagedSource | None = None
    Topics: list[str] | None = Field(None, min_length=1, max_length=1)
    Queues: list[str] | None = Field(
        None, description="Amazon MQ: the one queue to consume (AWS takes exactly one)"
    )
    Enabled: bool = True
    BatchSize: int | None = Field(None, ge=1, le=10000)
    MaximumBatchingWindowInSeconds: float | None = Field(None, ge=0, le=300)
    StartingPosition: StartPosition | None = None
    StartingPositionTimestamp: float | None = Field(None, ge=0)
    FilterCriteria: FilterCriteriaConfig | None = None
    FunctionResponseTypes: list[FunctionResponseType] = Field(default_factory=list)
    MaximumRetryAttempts: RetryAttempts = -1
    MaximumRecordAgeInSeconds: int = Field(-1, ge=-1, le=604800)
    BisectBatchOnFunctionError: bool = False
    ParallelizationFactor: int = Field(1, ge=1, le=10)
    TumblingWindowInSeconds: int | None = Field(None, ge=0, le=900)
    DestinationConfig: Destinations | None = None
    ScalingConfig: Scaling | None = None
    ProvisionedPollerConfig: ProvisionedPollers | None = None
    MetricsConfig: EsmMetricsConfig | None = None
    LoggingConfig: EsmLoggingConfig | None = None
    SelfManagedKafkaEventSourceConfig: KafkaEventSourceConfig | None = None
    AmazonManagedKafkaEventSourceConfig: KafkaEventSourceConfig | None = None
    DocumentDBEventSourceConfig: DocumentDBStreamConfig | None = None
    SourceAccessConfigurations: list[SourceAccessConfiguration] = Field(default_factory=list)
    KafkaTls: bool | None = Field(
        None,
        description="esmd's own, self-managed Kafka: TLS to the brokers. Unset: as AWS, TLS "
        "whenever the mapping authenticates (SASL_SSL, SSL), else plaintext; false: SASL over "
        "plaintext (SASL_PLAINTEXT), for clusters inside a trusted network; true: TLS with "
        "the system's CAs even without authentication",
    )
    KmsKeyArn: str | None = None
    Tags: list[dict[str, str]] = Field(default_factory=list)

    @property
    def source_kind(self) -> SourceKind:
        if self.SelfManagedEventSource is not None:
            return SourceKind.KAFKA
        arn = parse_arn(self.EventSourceArn or "")
        return ARN_SERVICES[arn.service if arn else ""]

    @property
    def uuid(self) -> str:
        """A stable UUID for the mapping, derived from its name (AWS assigns one at creation)."""
        return mapping_uuid(self.Name)

    @property
    def batch_size(self) -> int:
        """BatchSize, or the source kind's default (the registry's: SQS 10, others 100)."""
        if self.BatchSize is not None:
            return self.BatchSize
        entry = SOURCES.get(self.source_kind)
        return entry.batch_size if entry else 100

    @property
    def batching_window_seconds(self) -> float:
        """MaximumBatchingWindowInSeconds, or the kind's default (Kafka 0.5 s, others 0)."""
        if self.MaximumBatchingWindowInSeconds is not None:
            return self.MaximumBatchingWindowInSeconds
        entry = SOURCES.get(self.source_kind)
        return entry.window_seconds if entry else 0.5

    @property
    def poller_group(self) -> str | None:
        """PollerGroupName, or None (also for an empty name: no group)."""
        pollers = self.ProvisionedPollerConfig
        return (pollers.PollerGroupName or None) if pollers is not None else None

    @property
    def kafka_cluster(self) -> tuple[Any, ...]:
        """What identifies a Kafka mapping's cluster and how it connects: mappings of one
        poller group must agree on it."""
        source = self.SelfManagedEventSource
        brokers = tuple(sorted(source.Endpoints.KAFKA_BOOTSTRAP_SERVERS)) if source else ()
        access = tuple(sorted((a.Type, a.URI) for a in self.SourceAccessConfigurations))
        return (brokers, self.EventSourceArn if source is None else None, access, self.KafkaTls)

    @property
    def consumer_group_id(self) -> str:
        """AWS uses the mapping's UUID when no ConsumerGroupId is given."""
        cfg = self.SelfManagedKafkaEventSourceConfig or self.AmazonManagedKafkaEventSourceConfig
        return cfg.ConsumerGroupId if cfg and cfg.ConsumerGroupId else self.uuid

    @property
    def schema_registry(self) -> KafkaSchemaRegistryConfig | None:
        """The Kafka source config's SchemaRegistryConfig, if any."""
        cfg = self.SelfManagedKafkaEventSourceConfig or self.AmazonManagedKafkaEventSourceConfig
        return cfg.SchemaRegistryConfig if cfg else None

    @property
    def reports_batch_item_failures(self) -> bool:
        return "ReportBatchItemFailures" in self.FunctionResponseTypes

    @property
    def on_failure_destination(self) -> str | None:
        dest = self.DestinationConfig
        return dest.OnFailure.Destination if dest and dest.OnFailure else None

    def source_errors(self) -> Iterator[tuple[str, str]]:
        """Rules that depend on the source kind, as (field, message); AWS rejects the same."""
        if (self.EventSourceArn is None) == (self.SelfManagedEventSource is None):
            yield "EventSourceArn", "give exactly one of EventSourceArn and SelfManagedEventSource"
            return
        arn = parse_arn(self.EventSourceArn or "")
        if self.EventSourceArn is not None and arn is None:
            yield "EventSourceArn", "not a whole ARN (arn:aws:<service>:<region>:<account>:...)"
            return
        service = arn.service if arn else ""
        if self.EventSourceArn is not None and service not in ARN_SERVICES:
            yield "EventSourceArn", f"unsupported event source service {service!r}"
            return
        yield from _kind_errors(self)


_EFO_REFUSED = (
    "a Kinesis enhanced fan-out consumer ARN: esmd does not support enhanced fan-out consumers "
    "(it reads shards with GetRecords, not SubscribeToShard); use the stream ARN {stream}"
)


def _optional_properties(m: MappingConfig) -> Iterator[str]:
    """The optional properties a mapping sets that only some source kinds have."""
    given = {
        "Topics": m.Topics is not None,
        "Queues": m.Queues is not None,
        "ParallelizationFactor": m.ParallelizationFactor != 1,
        "TumblingWindowInSeconds": m.TumblingWindowInSeconds is not None,
        "ScalingConfig": m.ScalingConfig is not None,
        "ProvisionedPollerConfig": m.ProvisionedPollerConfig is not None,
        "LoggingConfig": m.LoggingConfig is not None,
        "KafkaTls": m.KafkaTls is not None,
        "DocumentDBEventSourceConfig": m.DocumentDBEventSourceConfig is not None,
    }
    yield from (prop for prop, set_ in given.items() if set_)
    for metric in m.MetricsConfig.Metrics if m.MetricsConfig else []:
        if metric != "EventCount":
            yield f"MetricsConfig.{metric}"


def _kind_errors(m: MappingConfig) -> Iterator[tuple[str, str]]:
    """The source registry's rules for the mapping's kind (service/sources/__init__.py)."""
    kind = m.source_kind
    stream = kinesis_consumer_stream(m.EventSourceArn or "")
    if stream is not None:
        yield "EventSourceArn", _EFO_REFUSED.format(stream=stream)
    entry = SOURCES.get(kind)
    if entry is None:
        yield "EventSourceArn", f"{PLANNED.get(kind, kind)} sources are not supported by esmd yet"
        return
    for prop in _optional_properties(m):
        if prop not in entry.properties:
            field, _, metric = prop.partition(".")
            what = f"the {metric} metric" if metric else prop
            yield (
                (f"{field}.Metrics" if metric else field),
                f"only {owners(prop)} mappings have {what}",
            )
    yield from _position_errors(m, entry.title, entry.starting_positions)
    if 0 <= m.MaximumRecordAgeInSeconds < 60:
        yield "MaximumRecordAgeInSeconds", "must be -1 or between 60 and 604800"
    yield from _destination_errors(m, entry.title, entry.destinations)
    if not entry.authenticates:
        yield from _access_errors(m, entry.title, entry.access)
    yield from entry.rules(m)


#: SourceAccessConfigurations that only place AWS's pollers in a network: nothing to do here
_NETWORK_ONLY = {"VPC_SUBNET", "VPC_SECURITY_GROUP"}


def _access_errors(
    m: MappingConfig, title: str, allowed: frozenset[str]
) -> Iterator[tuple[str, str]]:
    """Authentication esmd cannot honour (yet) is refused: connecting without the credentials
    a mapping names would silently ignore accepted configuration. The types a kind takes
    (the registry's ``access``) need a secret URI (service/secrets.py), at most one each."""
    from service.secrets import uri_problem

    seen: set[str] = set()
    for i, access in enumerate(m.SourceAccessConfigurations):
        where = f"SourceAccessConfigurations[{i}]"
        if access.Type in _NETWORK_ONLY:
            continue
        if access.Type not in allowed:
            yield (
                f"{where}.Type",
                (
                    f"{access.Type}: esmd cannot authenticate {title} sources this way yet; "
                    "refused rather than connecting without it"
                ),
            )
            continue
        if access.Type in seen:
            yield f"{where}.Type", f"{access.Type} is given twice"
        seen.add(access.Type)
        problem = uri_problem(access.URI) if access.URI else "a secret URI is required"
        if problem is not None:
            yield f"{where}.URI", problem


def _position_errors(
    m: MappingConfig, title: str, allowed: tuple[str, ...]
) -> Iterator[tuple[str, str]]:
    if not allowed:
        if m.StartingPosition is not None:
            yield "StartingPosition", f"{title} mappings have no StartingPosition"
        return
    if m.StartingPosition is None:
        yield "StartingPosition", f"required for {title} ({', '.join(allowed)})"
    elif m.StartingPosition not in allowed:
        yield "StartingPosition", f"{title} supports {' and '.join(allowed)} only"
    if m.StartingPosition is StartPosition.AT_TIMESTAMP and m.StartingPositionTimestamp is None:
        yield "StartingPositionTimestamp", "required with StartingPosition AT_TIMESTAMP"


def _destination_errors(
    m: MappingConfig, title: str, allowed: frozenset[str]
) -> Iterator[tuple[str, str]]:
    """DestinationConfig.OnFailure as AWS accepts it per source kind (the registry's
    ``destinations``). FIFO queues and topics are refused: AWS cannot deliver invocation
    records to them (they carry no MessageGroupId), so every record sent there would be
    lost."""
    field, dest = "DestinationConfig.OnFailure.Destination", m.on_failure_destination
    if dest is None or not allowed:
        return  # a kind without destinations says why in its own rules
    found = destination_kind(dest)
    if found is None:
        yield field, f"{dest!r} is not an SQS queue, SNS topic or S3 bucket ARN, nor kafka://"
    elif found not in allowed:
        shown = "kafka://" if found == "kafka" else found
        yield field, f"a {shown} destination is for {owners('destination:' + found)} mappings only"
    elif is_fifo_destination(dest):
        what = "an SQS FIFO queue" if found == "sqs" else "an SNS FIFO topic"
        why = "AWS does not accept FIFO queues or topics as OnFailure destinations"
        yield field, f"{dest!r} is {what}: {why}; use a standard queue or topic"


class EsmdConfig(_Model):
    """The whole file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    aws: AwsConfig = Field(default_factory=AwsConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    documentdb: DocumentDBSettings = Field(default_factory=DocumentDBSettings)
    mq: MqSettings = Field(default_factory=MqSettings)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    api: ApiConfig | None = None
    functions: dict[str, FunctionConfig] = Field(default_factory=dict)
    mappings: list[MappingConfig] = Field(default_factory=list)

    @property
    def api_store_path(self) -> str:
        return (self.api.path if self.api else None) or self.checkpoints.path

    def function_for(self, mapping: MappingConfig) -> FunctionConfig:
        """The target of a mapping; a FunctionName not under ``functions`` is a Lambda name."""
        found = self.functions.get(mapping.FunctionName)
        return (
            found
            if found is not None
            else FunctionConfig.model_validate({"lambda": mapping.FunctionName})
        )

    def function_arn(self, mapping: MappingConfig) -> str:
        """The function's ARN as Lambda puts it in invocation records (requestContext
        .functionArn) and a context's invoked_function_arn: a ``lambda`` target's own ARN when
        it is one, else ``arn:aws:lambda:<aws.region>:<aws.account_id>:function:<name>`` (the
        lambda target's function name, or FunctionName for python and url targets)."""
        function = self.function_for(mapping)
        name = function.lambda_ or mapping.FunctionName
        return lambda_function_arn(name, self.aws.region, self.aws.account_id)

    def invoke_identity_arn(self, mapping: MappingConfig) -> str:
        """``invokeIdentityArn`` of Kinesis records (DynamoDB Streams records have no such
        field): Lambda puts the function's execution role there. The function's ``role_arn``
        when set; else a role named ``esmd`` in the source's account (``aws.account_id`` when
        the source ARN has none)."""
        configured = self.function_for(mapping).role_arn
        if configured is not None:
            return configured
        source = parse_arn(mapping.EventSourceArn or "")
        account = account_of(mapping.EventSourceArn) or self.aws.account_id
        return role_arn(account, partition=source.partition if source else "aws")


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    mapping: str | None  # the mapping's Name, None for the sections outside mappings
    field: str  # dotted path inside the mapping (or the file)
    message: str

    def __str__(self) -> str:
        where = f"mapping {self.mapping!r}: " if self.mapping is not None else ""
        return f"{where}{self.field or '<root>'}: {self.message}"


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} error(s)\n{lines}")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a loaded YAML tree."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise KeyError(f"{path or '<root>'}: environment variable {name} is not set")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _mapping_problems(raw: Any, index: int) -> tuple[MappingConfig | None, list[ConfigProblem]]:
    name = raw.get("Name") if isinstance(raw, dict) else None
    label = str(name) if name else f"#{index + 1}"
    try:
        mapping = MappingConfig.model_validate(raw)
    except ValidationError as exc:
        return None, [ConfigProblem(label, _loc(e["loc"]), e["msg"]) for e in exc.errors()]
    problems = [ConfigProblem(label, f, msg) for f, msg in mapping.source_errors()]
    problems += _filter_problems(mapping, label)
    return mapping, problems


def parse_mapping(raw: Any, source: str = "<api>") -> MappingConfig:
    """One mapping, checked as ``esmd validate`` checks each mapping of a file; raises
    ConfigError listing every problem."""
    mapping, problems = _mapping_problems(raw, 0)
    if problems or mapping is None:
        raise ConfigError(source, problems)
    return mapping


def _filter_problems(mapping: MappingConfig, label: str) -> list[ConfigProblem]:
    from service.filters import FilterCriteria, InvalidPatternError

    problems = []
    for i, flt in enumerate(mapping.FilterCriteria.Filters if mapping.FilterCriteria else []):
        try:
            FilterCriteria.parse({"Filters": [{"Pattern": flt.Pattern}]})
        except InvalidPatternError as exc:
            problems.append(ConfigProblem(label, f"FilterCriteria.Filters[{i}].Pattern", str(exc)))
    return problems


def parse_config(data: Any, source: str = "<config>") -> EsmdConfig:
    """Validate a loaded (and env-expanded) tree; raise ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigProblem(None, "", "the file must be a YAML mapping")])
    problems: list[ConfigProblem] = []
    raw_mappings = data.get("mappings") or []
    if not isinstance(raw_mappings, list):
        problems.append(ConfigProblem(None, "mappings", "must be a list"))
        raw_mappings = []
    mappings = []
    for i, raw in enumerate(raw_mappings):
        mapping, found = _mapping_problems(raw, i)
        problems += found
        if mapping is not None:
            mappings.append(mapping)
    rest = {k: v for k, v in data.items() if k != "mappings"}
    try:
        config = EsmdConfig.model_validate(rest)
    except ValidationError as exc:
        problems += [ConfigProblem(None, _loc(e["loc"]), e["msg"]) for e in exc.errors()]
        config = EsmdConfig()
    problems += _cross_problems(config, mappings)
    if problems:
        raise ConfigError(source, problems)
    config.mappings = mappings
    return config


def _cross_problems(config: EsmdConfig, mappings: list[MappingConfig]) -> list[ConfigProblem]:
    problems = []
    seen: set[str] = set()
    for m in mappings:
        if m.Name in seen:
            problems.append(ConfigProblem(m.Name, "Name", "two mappings have this name"))
        seen.add(m.Name)
    groups: dict[str, list[MappingConfig]] = {}
    for m in mappings:
        if m.poller_group is not None:
            groups.setdefault(m.poller_group, []).append(m)
    for name, members in groups.items():
        problems += [
            ConfigProblem(m, "ProvisionedPollerConfig.PollerGroupName", message)
            for m, message in poller_group_problems(name, members)
        ]
    return problems


def poller_group_problems(name: str, members: list[MappingConfig]) -> Iterator[tuple[str, str]]:
    """AWS's limits of a poller group, and what esmd's shared fetching needs: one cluster
    (brokers and credentials) and one mapping per topic. Yields (mapping name, message)."""
    if len(members) > GROUP_MAPPINGS:
        yield (
            members[GROUP_MAPPINGS].Name,
            f"group {name!r} has more than {GROUP_MAPPINGS} mappings",
        )
    total = sum(
        m.ProvisionedPollerConfig.MaximumPollers for m in members if m.ProvisionedPollerConfig
    )
    if total > GROUP_POLLERS:
        yield (
            members[-1].Name,
            (
                f"the MaximumPollers of group {name!r} add up to {total}, "
                f"above {GROUP_POLLERS} (AWS)"
            ),
        )
    first = members[0]
    topics: dict[str, str] = {}
    for m in members:
        if m.kafka_cluster != first.kafka_cluster:
            yield (
                m.Name,
                (
                    f"group {name!r} reads one Kafka cluster with one set of credentials: "
                    f"{first.Name!r} has other brokers, SourceAccessConfigurations or KafkaTls"
                ),
            )
        for topic in m.Topics or []:
            if topic in topics:
                yield (
                    m.Name,
                    (
                        f"topic {topic!r} is already read by {topics[topic]!r} in group {name!r} "
                        "(its pollers fetch each topic once); use another group"
                    ),
                )
            topics.setdefault(topic, m.Name)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> EsmdConfig:
    """Read, expand and validate a config file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, [ConfigProblem(None, "", f"cannot read: {exc}")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [ConfigProblem(None, "", f"invalid YAML: {exc}")]) from exc
    try:
        data = expand_env(data, os.environ if env is None else env)
    except KeyError as exc:
        raise ConfigError(source, [ConfigProblem(None, "", str(exc.args[0]))]) from exc
    return parse_config(data, source)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the file, for editors (yaml-language-server) and docs."""
    schema = EsmdConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "esmd configuration"
    return schema
