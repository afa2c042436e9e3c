"""Local servers for the demo, development and tests: Apache Kafka (KRaft), ElasticMQ,
moto_server, mongo-java-server (the DocumentDB stand-in), RabbitMQ, ActiveMQ Classic
(Amazon MQ's two brokers), Apicurio Registry and Prometheus. Dev tooling: the daemon never
imports it.

    python3 scripts/services.py up [NAME ...]         # all of SERVERS, or the named ones
    python3 scripts/services.py down [...]            # stop what this started
    python3 scripts/services.py status

Kafka comes from the official jars on Maven Central (resolved by Maven from kafka-pom.xml
beside this file into the cache folder), runs as a single combined broker+controller on
127.0.0.1:9092, and is ready when it answers a Metadata request with itself as a broker.
A second broker, ``kafka-auth``, runs from the same jars with authentication on every
listener but an internal plaintext one (see AUTH_LISTENERS): SASL_PLAINTEXT and SASL_SSL
with PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (the broker's unsecured validator),
and SSL that requires a client certificate; its certificates are made by keytool at first
start (a CA, and the broker's key signed by it), its SCRAM users at format time.
moto_server comes from the venv (PyPI moto[server]). mongo-java-server (memory backend, its
oplog on for change streams) comes from Maven Central too, started by the small main
EsmdMongoServer.java beside this file (compiled with javac into the cache folder), which adds
SCRAM-SHA-1 authentication for the user ``esmd`` (password $ESMD_MONGO_PASSWORD, default
``esmd-secret``); it listens on 127.0.0.1:27017 and is ready when it answers ``ping``.
RabbitMQ is Debian's `rabbitmq-server` with its Erlang packages, fetched and unpacked the same
way, on 127.0.0.1:5672 (see service/devtools/rabbitmq.py: the user ``esmd`` and the vhost
``esmd``); it is ready when it answers the AMQP protocol header with Connection.Start.

Apicurio Registry (the Kafka schema registry) is built by Maven from its Maven Central
artifacts with apicurio-pom.xml beside this file (once, into the cache folder; the POM says
why version 2.4.2.Final), stores schemas in memory, serves its Confluent-compatible API on
http://127.0.0.1:8081/apis/ccompat/v7 and is ready when that API lists subjects.
ActiveMQ Classic (activemq-all from Maven Central) runs embedded in the small main
EsmdActiveMQBroker.java (compiled the same way): STOMP on 127.0.0.1:61613, AMQP 1.0 on 61614,
persistent messages in KahaDB in its state folder, the user ``esmd`` (password
$ESMD_ACTIVEMQ_PASSWORD, default ``esmd-secret``) and a redelivery policy of 5 redeliveries
1 s apart, then the queue's dead-letter queue ``DLQ.<queue>``; queues ``forbidden.*`` refuse
consumers (as an authorization map would); ready when a STOMP CONNECT is answered with
CONNECTED.
Prometheus is Debian's package `prometheus`, fetched with `apt-get download` and unpacked
(`dpkg -x`) into the cache folder, so it needs no install as root; it scrapes every 1 s the
targets listed in JSON files in its state folder's ``targets/`` (file_sd: a test adds its
daemon there). Servers run detached, so they outlive the shell or pytest session that started them.

Where things live: in a checkout, `.cache/` (jars) and `.services/` (pid files, logs, data)
at the repository root; when installed, under ~/.cache/esmd. $ESMD_HOME and $ESMD_CACHE
override. Stdlib only, so it runs before the venv exists; `esmd demo` (when given no
--bootstrap) and the test fixtures call ensure_kafka(), ensure_moto() and the like.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.devtools import rabbitmq

_CHECKOUT = Path(__file__).resolve().parents[2]  # service/devtools/servers.py
ROOT = Path(
    os.environ.get("ESMD_HOME")
    or (_CHECKOUT if (_CHECKOUT / "pyproject.toml").exists() else Path.home() / ".cache" / "esmd")
)
STATE = ROOT / ".services"
CACHE = Path(os.environ.get("ESMD_CACHE", ROOT / ".cache"))
HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    address: str
    command: Callable[[Path], list[str]]  # prepares the state dir, returns the command
    ready: Callable[[], bool]
    timeout: float


# --- Kafka ----------------------------------------------------------------------------------


def maven_libs(name: str) -> Path:
    """The jars of ``<name>-pom.xml`` (beside this file), resolved from Maven Central once per
    version into the cache folder."""
    pom = HERE / f"{name}-pom.xml"
    version = pom.read_text().split("<artifact.version>")[1].split("</artifact.version>")[0]
    libs = CACHE / f"{name}-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    print(f"resolving {name} {version} from Maven Central into {libs} ...", file=sys.stderr)
    shutil.rmtree(libs, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        check=True,
        timeout=900,
    )
    marker.touch()
    return libs


KAFKA_PROPERTIES = """\
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters=1@{host}:{controller}
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
"""

LOG4J2 = """\
Configuration:
  Appenders:
    File:
      name: file
      fileName: {log}
      PatternLayout: {{pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root:
      level: INFO
      AppenderRef: [{{ref: file}}]
"""


def kafka_command(state: Path, port: int | None = None, heap: str = "1g") -> list[str]:
    port = port or KAFKA_PORT
    props = state / "server.properties"
    props.write_text(
        KAFKA_PROPERTIES.format(host=HOST, port=port, controller=port + 1, data=state / "data")
    )
    return _kafka_java(state, props, heap)


def _kafka_java(state: Path, props: Path, heap: str, *format_args: str) -> list[str]:
    """Format the data folder once (with ``format_args``), return the broker's command."""
    libs = maven_libs("kafka")
    (state / "log4j2.yaml").write_text(LOG4J2.format(log=state / "kafka.log"))
    classpath = f"{libs}/*"
    if not (state / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        subprocess.run(
            [
                "java",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(props),
                "--cluster-id",
                cluster_id,
                *format_args,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return [
        "java",
        "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:TieredStopAtLevel=1",  # starts faster; a test broker needs no peak throughput
        f"-Dlog4j2.configurationFile={state / 'log4j2.yaml'}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(props),
    ]


# --- Kafka with authentication --------------------------------------------------------------

#: the kafka-auth broker's listeners, at KAFKA_AUTH_PORT + offset; INTERNAL is plaintext and
#: unauthenticated (inter-broker traffic, and tests' topic set-up)
AUTH_LISTENERS = {"INTERNAL": 0, "SASL_PLAINTEXT": 1, "SSL": 2, "SASL_SSL": 3}
#: the users of the kafka-auth broker: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 all know them
AUTH_USER, AUTH_PASSWORD = "esmd", "esmd-secret"
#: keystores' password (test material only)
AUTH_STORE_PASSWORD = "esmd-store"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

KAFKA_AUTH_PROPERTIES = """\
node.id=1
process.roles=broker,controller
listeners={listeners},CONTROLLER://{host}:{controller}
advertised.listeners={listeners}
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,\
SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.quorum.voters=1@{host}:{controller}
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
sasl.enabled.mechanisms={mechanisms}
ssl.keystore.type=PKCS12
ssl.keystore.location={tls}/broker.p12
ssl.keystore.password={store_password}
ssl.key.password={store_password}
ssl.truststore.type=PKCS12
ssl.truststore.location={tls}/truststore.p12
ssl.truststore.password={store_password}
listener.name.ssl.ssl.client.auth=required
{jaas}
"""

_JAAS = {
    "plain": "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="{user}" password="{password}" user_{user}="{password}";',
    "scram-sha-256": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    "scram-sha-512": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    "oauthbearer": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule "
    'required unsecuredLoginStringClaim_sub="{user}";',
}
_UNSECURED_VALIDATOR = (
    "org.apache.kafka.common.security.oauthbearer.internals.unsecured."
    "OAuthBearerUnsecuredValidatorCallbackHandler"
)


def _auth_jaas() -> str:
    """One ``listener.name.<listener>.<mechanism>.sasl.jaas.config`` per SASL listener and
    mechanism (Kafka reads no listener-wide default), and the unsecured OAUTHBEARER
    validator: it accepts any unsigned JWT with a ``sub`` claim."""
    lines = []
    for listener in ("sasl_plaintext", "sasl_ssl"):
        for mechanism, jaas in _JAAS.items():
            config = jaas.format(user=AUTH_USER, password=AUTH_PASSWORD)
            lines.append(f"listener.name.{listener}.{mechanism}.sasl.jaas.config={config}")
        lines.append(
            f"listener.name.{listener}.oauthbearer.sasl.server.callback.handler.class="
            + _UNSECURED_VALIDATOR
        )
    return "\n".join(lines)


def auth_address(listener: str) -> str:
    return f"{HOST}:{KAFKA_AUTH_PORT + AUTH_LISTENERS[listener]}"


def auth_tls_dir() -> Path:
    """The kafka-auth broker's certificates: ``ca.pem`` (the CA that signed the broker's key
    and that the broker trusts for client certificates) and ``ca.p12`` (its key, password
    AUTH_STORE_PASSWORD, alias ``ca``: tests sign client certificates with it)."""
    return STATE / "kafka-auth" / "tls"


def _keytool(tls: Path, *args: str) -> None:
    subprocess.run(
        ["keytool", *args, "-storepass", AUTH_STORE_PASSWORD, "-noprompt"],
        cwd=tls,
        check=True,
        capture_output=True,
        timeout=60,
    )


def make_auth_certificates(tls: Path) -> None:
    """A CA and the broker's key signed by it (SAN 127.0.0.1 and localhost), by keytool."""
    if (tls / ".complete").exists():
        return
    shutil.rmtree(tls, ignore_errors=True)
    tls.mkdir(parents=True)
    key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", "3650", "-storetype", "PKCS12"]
    _keytool(tls, "-genkeypair", "-alias", "ca", "-dname", "CN=esmd test CA", "-ext",
             "bc:c", "-keystore", "ca.p12", *key)  # fmt: skip
    _keytool(tls, "-exportcert", "-rfc", "-alias", "ca", "-keystore", "ca.p12", "-file",
             "ca.pem")  # fmt: skip
    _keytool(tls, "-genkeypair", "-alias", "broker", "-dname", "CN=localhost", "-keystore",
             "broker.p12", *key)  # fmt: skip
    _keytool(tls, "-certreq", "-alias", "broker", "-keystore", "broker.p12", "-file",
             "broker.csr")  # fmt: skip
    _keytool(tls, "-gencert", "-rfc", "-alias", "ca", "-keystore", "ca.p12", "-infile",
             "broker.csr", "-outfile", "broker.pem", "-validity", "3650", "-ext",
             "san=ip:127.0.0.1,dns:localhost")  # fmt: skip
    _keytool(tls, "-importcert", "-alias", "ca", "-file", "ca.pem", "-keystore", "broker.p12")
    _keytool(tls, "-importcert", "-alias", "broker", "-file", "broker.pem", "-keystore",
             "broker.p12")  # fmt: skip
    _keytool(tls, "-importcert", "-alias", "ca", "-file", "ca.pem", "-keystore",
             "truststore.p12", "-storetype", "PKCS12")  # fmt: skip
    (tls / ".complete").touch()


def kafka_auth_command(state: Path) -> list[str]:
    tls = state / "tls"
    make_auth_certificates(tls)
    props = state / "server.properties"
    listeners = ",".join(f"{name}://{auth_address(name)}" for name in AUTH_LISTENERS)
    props.write_text(
        KAFKA_AUTH_PROPERTIES.format(
            host=HOST,
            listeners=listeners,
            controller=KAFKA_AUTH_PORT + len(AUTH_LISTENERS),
            data=state / "data",
            mechanisms=",".join(SASL_MECHANISMS),
            tls=tls,
            store_password=AUTH_STORE_PASSWORD,
            jaas=_auth_jaas(),
        )
    )
    scram = [
        arg
        for bits in (256, 512)
        for arg in ("--add-scram", f"SCRAM-SHA-{bits}=[name={AUTH_USER},password={AUTH_PASSWORD}]")
    ]
    return _kafka_java(state, props, "512m", *scram)


def kafka_ready(port: int | None = None) -> bool:
    """A Metadata (v4) request answered with at least one broker: the broker is serving."""
    client = b"esmd-services"
    # header: api_key=3 (Metadata), api_version=4, correlation_id=7, client_id
    body = struct.pack(">hhih", 3, 4, 7, len(client)) + client
    body += struct.pack(">i?", 0, False)  # topics: empty array; allow_auto_topic_creation
    try:
        with socket.create_connection((HOST, port or KAFKA_PORT), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv(sock, 4))[0]
            resp = _recv(sock, size)
    except OSError:
        return False
    correlation, _throttle, brokers = struct.unpack(">iii", resp[:12])
    return bool(correlation == 7 and brokers > 0)


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


# --- ElasticMQ -----------------------------------------------------------------------------

ELASTICMQ_CONF = """\
include classpath("application.conf")
node-address {{ protocol = http, host = "{host}", port = {port}, context-path = "" }}
rest-sqs {{ enabled = true, bind-port = {port}, bind-hostname = "{host}", sqs-limits = strict }}
rest-stats {{ enabled = false }}
aws {{ region = us-east-1, accountId = 000000000000 }}
"""


#: a private instance keeps its queues and messages across restarts (H2 files in its state)
ELASTICMQ_STORAGE = """\
queues-storage {{ enabled = true, path = "{state}/queues.conf" }}
messages-storage {{ enabled = true, uri = "jdbc:h2:{state}/messages", prune-data-on-init = false }}
"""


def elasticmq_command(state: Path, port: int | None = None, persist: bool = False) -> list[str]:
    libs = maven_libs("elasticmq")
    conf = state / "elasticmq.conf"
    text = ELASTICMQ_CONF.format(host=HOST, port=port or ELASTICMQ_PORT)
    conf.write_text(text + (ELASTICMQ_STORAGE.format(state=state) if persist else ""))
    return [
        "java",
        "-Xms128m",
        "-Xmx512m",
        f"-Dconfig.file={conf}",
        "-cp",
        f"{libs}/*",
        "org.elasticmq.server.Main",
    ]


def elasticmq_ready(port: int | None = None) -> bool:
    """ListQueues (query protocol) answers: the SQS endpoint is serving."""
    url = f"http://{HOST}:{port or ELASTICMQ_PORT}/?Action=ListQueues"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


# --- moto -----------------------------------------------------------------------------------


def moto_command(state: Path) -> list[str]:
    # the venv esmd runs in, else the checkout's venv (system python running the script), else PATH
    candidates = [Path(sys.executable).parent / "moto_server", _CHECKOUT / ".venv/bin/moto_server"]
    exe = next((str(c) for c in candidates if c.exists()), None) or shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("moto_server not found: run `make venv` (moto[server] is a dev extra)")
    return [exe, "-H", HOST, "-p", str(MOTO_PORT)]


def moto_ready() -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{MOTO_PORT}/moto-api/", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


# --- mongo-java-server (the DocumentDB stand-in) ----------------------------------------------

MONGO_USER = "esmd"
MONGO_PASSWORD = os.environ.get("ESMD_MONGO_PASSWORD", "esmd-secret")


def java_main_classes(libs_name: str, main: str) -> Path:
    """``<main>.java`` beside this file compiled against the jars Maven resolved for
    ``libs_name``, once per version of the source (the folder is named by its digest; a
    per-process temporary folder, renamed when complete, lets two starts race safely)."""
    libs = maven_libs(libs_name)
    source = HERE / f"{main}.java"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    classes = libs.parent / f"classes-{digest}"
    if not (classes / f"{main}.class").exists():
        tmp = classes.with_name(classes.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            ["javac", "-nowarn", "-cp", f"{libs}/*", "-d", str(tmp), str(source)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        tmp.rename(classes)
    return classes


def mongo_command(state: Path, port: int | None = None) -> list[str]:
    classes = java_main_classes("mongo", "EsmdMongoServer")
    libs = maven_libs("mongo")
    return [
        "java",
        "-Xms256m",
        "-Xmx2g",  # memory only, and the oplog is never trimmed
        "-cp",
        f"{classes}:{libs}/*",
        "EsmdMongoServer",
        HOST,
        str(port or MONGO_PORT),
        f"{MONGO_USER}:{MONGO_PASSWORD}",
    ]


def mongo_ready(port: int | None = None) -> bool:
    """An OP_MSG ``ping`` on admin answered with ok: 1."""
    doc = _bson({"ping": 1, "$db": "admin"})
    # OP_MSG: length, requestID, responseTo, opCode 2013; flagBits; section kind 0; the body
    request = struct.pack("<iiiiI", 16 + 5 + len(doc), 7, 0, 2013, 0) + b"\x00" + doc
    try:
        with socket.create_connection((HOST, port or MONGO_PORT), timeout=2) as sock:
            sock.sendall(request)
            size = struct.unpack("<i", _recv(sock, 4))[0]
            reply = _recv(sock, size - 4)
    except OSError:
        return False
    return (b"\x01ok\x00" + struct.pack("<d", 1.0)) in reply or (
        b"\x10ok\x00" + struct.pack("<i", 1)
    ) in reply


def _bson(doc: dict[str, object]) -> bytes:
    """A flat BSON document of int32 and string values (enough for ``ping``)."""
    out = b""
    for key, value in doc.items():
        name = key.encode() + b"\x00"
        if isinstance(value, int):
            out += b"\x10" + name + struct.pack("<i", value)
        else:
            data = str(value).encode() + b"\x00"
            out += b"\x02" + name + struct.pack("<i", len(data)) + data
    return struct.pack("<i", len(out) + 5) + out + b"\x00"


# --- Apicurio Registry (a Confluent-compatible schema registry) ------------------------------


def apicurio_runner() -> Path:
    """Apicurio Registry's runnable jar, built once per version of apicurio-pom.xml and of the
    sources in ``apicurio/`` beside this file: Maven resolves Apicurio's application module and
    its dependencies from Maven Central, and the Quarkus plugin packages them (see the POM for
    why this version and what is replaced). The jar's libraries lie in ``lib/`` beside it."""
    pom = HERE / "apicurio-pom.xml"
    sources = sorted((HERE / "apicurio").glob("*.java"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in (pom, *sources))).hexdigest()[:12]
    version = pom.read_text().split("<artifact.version>")[1].split("</artifact.version>")[0]
    target = CACHE / f"apicurio-{version}" / f"build-{digest}"
    runner = target / "esmd-apicurio-runtime-1-runner.jar"
    if (target / ".complete").exists():
        return runner
    print(
        f"building Apicurio Registry {version} from Maven Central into {target} ...",
        file=sys.stderr,
    )
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(pom), f"-Desmd.target={target}",
         "package"],
        check=True,
        timeout=1500,
    )  # fmt: skip
    shutil.rmtree(target / "classes")  # the unpacked module: the runner jar holds it now
    (target / ".complete").touch()
    return runner


def apicurio_command(state: Path) -> list[str]:
    """In-memory storage (H2, Apicurio's default for this module): a restart starts empty.
    Quarkus 2.16 has no separate management port: health and metrics share the HTTP one."""
    return [
        "java",
        "-Xms64m",
        "-Xmx512m",
        "-XX:TieredStopAtLevel=1",  # starts faster; a test registry needs no peak throughput
        f"-Dquarkus.http.host={HOST}",
        f"-Dquarkus.http.port={APICURIO_PORT}",
        "-jar",
        str(apicurio_runner()),
    ]


def apicurio_ready() -> bool:
    """The Confluent-compatible API lists subjects: the registry and its storage serve."""
    try:
        with urllib.request.urlopen(APICURIO_URL + "/subjects", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


# --- ActiveMQ Classic (one of Amazon MQ's brokers) ------------------------------------------

ACTIVEMQ_USER = "esmd"
ACTIVEMQ_PASSWORD = os.environ.get("ESMD_ACTIVEMQ_PASSWORD", "esmd-secret")

ACTIVEMQ_LOG4J2 = """\
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


def activemq_command(state: Path, port: int | None = None) -> list[str]:
    """The embedded broker (EsmdActiveMQBroker.java): STOMP on ``port``, AMQP 1.0 on
    ``port + 1``, KahaDB in ``state/data``. A test that restarts a broker passes its own
    state folder and port (see tests/integration/mq_helpers.py)."""
    port = port or ACTIVEMQ_PORT
    classes, libs = java_main_classes("activemq", "EsmdActiveMQBroker"), maven_libs("activemq")
    (state / "log4j2.properties").write_text(ACTIVEMQ_LOG4J2.format(log=state / "activemq.log"))
    return [
        "java",
        "-Xms128m",
        "-Xmx512m",
        "-XX:TieredStopAtLevel=1",  # starts faster; a test broker needs no peak throughput
        f"-Dlog4j2.configurationFile={state / 'log4j2.properties'}",
        "-cp",
        f"{classes}:{libs}/*",
        "EsmdActiveMQBroker",
        HOST,
        str(port),
        str(state / "data"),
        f"{ACTIVEMQ_USER}:{ACTIVEMQ_PASSWORD}",
    ]


def activemq_ready(port: int | None = None) -> bool:
    """A STOMP CONNECT with the test user answered with CONNECTED."""
    frame = (
        f"CONNECT\naccept-version:1.2\nhost:{HOST}\nlogin:{ACTIVEMQ_USER}\n"
        f"passcode:{ACTIVEMQ_PASSWORD}\n\n\x00"
    )
    try:
        with socket.create_connection((HOST, port or ACTIVEMQ_PORT), timeout=2) as sock:
            sock.sendall(frame.encode())
            reply = sock.recv(4096)
            sock.sendall(b"DISCONNECT\n\n\x00")
    except OSError:
        return False
    return reply.lstrip(b"\n").startswith(b"CONNECTED")


# --- Prometheus -----------------------------------------------------------------------------

#: scrape every second: a test sees a change within a second or two; file_sd picks up target
#: files as they are written (inotify), the refresh interval is only the fallback
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: esmd
    metrics_path: /metrics
    file_sd_configs:
      - files: ["{targets}/*.json"]
        refresh_interval: 2s
"""


def prometheus_binary() -> Path:
    """``prometheus`` on PATH (e.g. Debian's package installed), else the binary of Debian's
    package, downloaded once into the cache folder and unpacked there without installing."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    root = CACHE / "prometheus-deb"
    binary = root / "usr" / "bin" / "prometheus"
    marker = root / ".complete"
    if marker.exists() and binary.exists():
        return binary
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RuntimeError("Prometheus: put `prometheus` on PATH (apt-get and dpkg are missing)")
    print(f"fetching Debian's prometheus package into {root} ...", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)
    download = root / "download"
    download.mkdir(parents=True)

    def fetch() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["apt-get", "download", "prometheus"], cwd=download, capture_output=True, timeout=600
        )

    result = fetch()
    if result.returncode != 0 and os.geteuid() == 0:
        # a fresh machine may have no package lists yet; as root we can fetch them
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, check=False)
        result = fetch()
    if result.returncode != 0:
        raise RuntimeError(
            "apt-get download prometheus failed (as root, run `apt-get update` first):\n"
            + result.stderr.decode(errors="replace")
        )
    [deb] = download.glob("prometheus_*.deb")
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=300)
    shutil.rmtree(download)
    marker.write_text(deb.name)
    return binary


def prometheus_command(state: Path) -> list[str]:
    binary = prometheus_binary()
    targets = state / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    for stale in targets.glob("*.json"):  # left by runs that were killed: nothing serves them
        stale.unlink()
    config = state / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(targets=targets))
    return [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={state / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address={HOST}:{PROMETHEUS_PORT}",
        # Debian's defaults point at /usr/share and /etc; use the unpacked copies when present
        *_prometheus_assets(binary),
    ]


def _prometheus_assets(binary: Path) -> list[str]:
    if len(binary.parents) < 3:
        return []
    root = binary.parents[2]  # <root>/usr/bin/prometheus
    web, consoles = root / "usr/share/prometheus/web", root / "etc/prometheus"
    flags = [f"--web.local-assets={web}"] if web.is_dir() else []
    if (consoles / "consoles").is_dir():
        flags += [
            f"--web.console.templates={consoles / 'consoles'}",
            f"--web.console.libraries={consoles / 'console_libraries'}",
        ]
    return flags


def prometheus_ready() -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{PROMETHEUS_PORT}/-/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


KAFKA_PORT = int(os.environ.get("ESMD_KAFKA_PORT", "9092"))
#: the kafka-auth broker's first port; its listeners and controller take the next four
KAFKA_AUTH_PORT = int(os.environ.get("ESMD_KAFKA_AUTH_PORT", "9192"))
MOTO_PORT = int(os.environ.get("ESMD_MOTO_PORT", "5000"))
ELASTICMQ_PORT = int(os.environ.get("ESMD_ELASTICMQ_PORT", "9324"))
PROMETHEUS_PORT = int(os.environ.get("ESMD_PROMETHEUS_PORT", "9090"))
MONGO_PORT = int(os.environ.get("ESMD_MONGO_PORT", "27017"))
RABBITMQ_PORT = int(os.environ.get("ESMD_RABBITMQ_PORT", "5672"))
#: STOMP; AMQP 1.0 on the next port
ACTIVEMQ_PORT = int(os.environ.get("ESMD_ACTIVEMQ_PORT", "61613"))


def rabbitmq_server(name: str, port: int) -> Server:
    """A RabbitMQ node named ``esmd-<name>`` on ``port``, its state in the folder ``name``:
    the shared one, or a test's private node (which it may stop and start again)."""
    return Server(
        name,
        port,
        f"amqp://{HOST}:{port}",
        lambda state: rabbitmq.command(state, CACHE, port, f"esmd-{name}"),
        lambda: rabbitmq.ready(port),
        120,
    )


APICURIO_PORT = int(os.environ.get("ESMD_APICURIO_PORT", "8081"))
#: the base URL of Apicurio's Confluent-compatible API (what SchemaRegistryURI names)
APICURIO_URL = f"http://{HOST}:{APICURIO_PORT}/apis/ccompat/v7"

SERVERS = {
    "kafka": Server("kafka", KAFKA_PORT, f"{HOST}:{KAFKA_PORT}", kafka_command, kafka_ready, 120),
    "kafka-auth": Server(
        "kafka-auth",
        KAFKA_AUTH_PORT,
        auth_address("INTERNAL"),
        kafka_auth_command,
        lambda: kafka_ready(KAFKA_AUTH_PORT),
        120,
    ),
    "moto": Server("moto", MOTO_PORT, f"http://{HOST}:{MOTO_PORT}", moto_command, moto_ready, 60),
    "elasticmq": Server(
        "elasticmq",
        ELASTICMQ_PORT,
        f"http://{HOST}:{ELASTICMQ_PORT}",
        elasticmq_command,
        elasticmq_ready,
        120,
    ),
    "mongo": Server(
        "mongo", MONGO_PORT, f"mongodb://{HOST}:{MONGO_PORT}", mongo_command, mongo_ready, 120
    ),
    "rabbitmq": rabbitmq_server("rabbitmq", RABBITMQ_PORT),
    "apicurio": Server(
        "apicurio", APICURIO_PORT, APICURIO_URL, apicurio_command, apicurio_ready, 120
    ),
    "activemq": Server(
        "activemq",
        ACTIVEMQ_PORT,
        f"stomp://{HOST}:{ACTIVEMQ_PORT}",
        activemq_command,
        activemq_ready,
        120,
    ),
    "prometheus": Server(
        "prometheus",
        PROMETHEUS_PORT,
        f"http://{HOST}:{PROMETHEUS_PORT}",
        prometheus_command,
        prometheus_ready,
        120,
    ),
}


# --- private instances ----------------------------------------------------------------------


def private_kafka(name: str, port: int) -> Server:
    """A broker of its own (``port``, its controller on ``port + 1``, state in
    ``.services/<name>``) for a test that stops and restarts it: the shared one on
    KAFKA_PORT serves everyone else's tests meanwhile. Its data survives :func:`stop`."""
    return Server(
        name,
        port,
        f"{HOST}:{port}",
        lambda state: kafka_command(state, port, heap="512m"),
        lambda: kafka_ready(port),
        120,
    )


def private_elasticmq(name: str, port: int) -> Server:
    """An ElasticMQ of its own whose queues and messages persist (H2) across a restart."""
    return Server(
        name,
        port,
        f"http://{HOST}:{port}",
        lambda state: elasticmq_command(state, port, persist=True),
        lambda: elasticmq_ready(port),
        120,
    )


def private_mongo(name: str, port: int) -> Server:
    """A mongo-java-server of its own, for a run that restarts it (its memory-only oplog is
    never trimmed: a benchmark series starts from an empty one) while the shared one on
    MONGO_PORT serves everyone else's tests."""
    return Server(
        name,
        port,
        f"mongodb://{HOST}:{port}",
        lambda state: mongo_command(state, port),
        lambda: mongo_ready(port),
        120,
    )


# --- process management ---------------------------------------------------------------------


def _pid(server: Server) -> int | None:
    """The pid of the server we started, if it still runs. A pid file can outlive its process
    (a reboot, a killed session) and its number be reused: the process must also run in the
    server's state folder, where ``ensure`` starts it."""
    state = STATE / server.name
    try:
        pid = int((state / "pid").read_text())
        os.kill(pid, 0)
        cwd = Path(f"/proc/{pid}/cwd")
        if Path("/proc/self").exists() and cwd.resolve() != state.resolve():
            return None
        return pid
    except (OSError, ValueError):
        return None


def _log_tail(server: Server, lines: int = 20) -> str:
    """The first ERROR lines (the cause; the tail is often just a stack trace), then the tail."""
    state = STATE / server.name
    text = ""
    for log in (state / "stdout.log", state / f"{server.name}.log"):
        if log.exists() and log.stat().st_size:
            all_lines = log.read_text(errors="replace").splitlines()
            errors = [line for line in all_lines if " ERROR " in line][:3]
            text += f"\n--- {log}\n" + "\n".join(
                errors + ["..."] * bool(errors) + all_lines[-lines:]
            )
    return text


#: servers this process started: they outlive it on purpose, and a Popen object dropped while
#: its child runs would warn (an error under pytest's warning filters)
_STARTED: list[subprocess.Popen[bytes]] = []


def ensure(name: str | Server) -> str:
    """Return the server's address, starting it first when it does not answer. ``name``
    is one of SERVERS or a private instance (:func:`private_kafka`, ...)."""
    server = SERVERS[name] if isinstance(name, str) else name
    if server.ready():
        return server.address
    state = STATE / server.name
    state.mkdir(parents=True, exist_ok=True)
    proc: subprocess.Popen[bytes] | None = None
    if _pid(server) is None:
        command = server.command(state)
        with open(state / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                command,
                cwd=state,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (state / "pid").write_text(str(proc.pid))
        _STARTED.append(proc)
    deadline = time.monotonic() + server.timeout
    while time.monotonic() < deadline:
        if server.ready():
            return server.address
        # poll() reaps our own child: a dead child stays a zombie that os.kill(pid, 0) still finds
        if (proc.poll() is not None) if proc else _pid(server) is None:
            raise RuntimeError(f"{server.name} exited while starting\n{_log_tail(server)}")
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {server.timeout:.0f}s\n{_log_tail(server)}")


def ensure_kafka() -> str:
    return ensure("kafka")


def ensure_kafka_auth() -> str:
    """The kafka-auth broker's INTERNAL (plaintext) address; see AUTH_LISTENERS."""
    return ensure("kafka-auth")


def ensure_moto() -> str:
    return ensure("moto")


def ensure_elasticmq() -> str:
    return ensure("elasticmq")


def ensure_mongo() -> str:
    return ensure("mongo")


def ensure_apicurio() -> str:
    """The base URL of Apicurio Registry's Confluent-compatible API."""
    return ensure("apicurio")


def ensure_activemq() -> str:
    """The ActiveMQ broker's STOMP address (``stomp://host:port``); user ACTIVEMQ_USER."""
    return ensure("activemq")


def ensure_prometheus() -> str:
    return ensure("prometheus")


def ensure_rabbitmq() -> str:
    """The shared RabbitMQ node's amqp:// address (no credentials: see rabbitmq.USER)."""
    return ensure("rabbitmq")


def stop(name: str | Server, wait: float = 20) -> None:
    server = SERVERS[name] if isinstance(name, str) else name
    pid = _pid(server)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(server):
            os.killpg(pid, signal.SIGKILL)
    (STATE / server.name / "pid").unlink(missing_ok=True)


def _alive(server: Server) -> bool:
    """Whether the server still runs; a child of this process is reaped once it exited."""
    pid = _pid(server)
    for proc in _STARTED:
        if proc.pid == pid and proc.poll() is not None:
            _STARTED.remove(proc)
            return False
    return pid is not None


def main(argv: list[str]) -> int:
    command, names = (argv[0] if argv else "status"), (argv[1:] or list(SERVERS))
    unknown = [n for n in names if n not in SERVERS]
    if command not in ("up", "down", "status") or unknown:
        print(__doc__, file=sys.stderr)
        return 2
    for name in names:
        if command == "up":
            started = time.monotonic()
            try:
                address = ensure(name)
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                print(f"{name}: failed: {error}", file=sys.stderr)
                return 1
            print(f"{name}: ready on {address} ({time.monotonic() - started:.1f}s)")
        elif command == "down":
            stop(name)
            print(f"{name}: stopped")
        else:
            state = "ready" if SERVERS[name].ready() else "not answering"
            print(f"{name}: {state} on {SERVERS[name].address} (pid {_pid(SERVERS[name])})")
    return 0
