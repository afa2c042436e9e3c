"""RabbitMQ for development and tests: Debian's ``rabbitmq-server`` package and the Erlang
packages it needs, fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into the
cache folder (no root, nothing installed), and started as a plain process.

A node runs from a state folder (``RABBITMQ_*`` variables: its config, Mnesia database, logs;
``HOME`` for the Erlang cookie), listens for AMQP on 127.0.0.1 only, and its Erlang
distribution port and epmd (the Erlang port mapper, shared by the nodes, port
$ESMD_EPMD_PORT, default 4369) are bound to 127.0.0.1 too. Its definitions make the user
``esmd`` (password $ESMD_RABBITMQ_PASSWORD, default ``esmd-secret``) with every right on the
vhosts ``/`` and ``esmd``, for BASIC_AUTH and VIRTUAL_HOST tests. Stdlib only, like
service/devtools/servers.py, which registers the shared node; a test that restarts a broker
starts a private node of its own (its own name, port and state folder) with these functions.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

HOST = "127.0.0.1"
USER = "esmd"
PASSWORD = os.environ.get("ESMD_RABBITMQ_PASSWORD", "esmd-secret")
VHOST = "esmd"
EPMD_PORT = int(os.environ.get("ESMD_EPMD_PORT", "4369"))
#: the server and the Erlang applications it starts (Debian bookworm's dependencies)
PACKAGES = (
    "rabbitmq-server",
    *(
        f"erlang-{name}"
        for name in (
            *("base", "asn1", "crypto", "eldap", "inets", "mnesia", "os-mon", "parsetools"),
            *("public-key", "runtime-tools", "snmp", "ssl", "syntax-tools", "tools", "xmerl"),
        )
    ),
)

CONFIG = """\
listeners.tcp.1 = {host}:{port}
loopback_users = none
load_definitions = {definitions}
log.file = false
log.console = true
log.console.level = warning
"""


def unpacked(cache: Path) -> Path:
    """The root the packages are unpacked into (``usr/lib/erlang``, ``usr/lib/rabbitmq``),
    fetched once. Erlang's ``erl`` script names its install folder: it is pointed here."""
    root = cache / "rabbitmq-deb"
    marker = root / ".complete"
    if marker.exists():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RuntimeError("RabbitMQ: Debian's apt-get and dpkg are needed to fetch it")
    print(f"fetching Debian's rabbitmq-server and Erlang into {root} ...", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)
    download = root / "download"
    download.mkdir(parents=True)
    result = subprocess.run(
        ["apt-get", "download", *PACKAGES], cwd=download, capture_output=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(
            "apt-get download rabbitmq-server failed (as root, run `apt-get update` first):\n"
            + result.stderr.decode(errors="replace")
        )
    for deb in sorted(download.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=300)
    shutil.rmtree(download)
    erl = root / "usr/lib/erlang/bin/erl"
    erl.write_text(erl.read_text().replace("=/usr/lib/erlang", f"={root}/usr/lib/erlang"))
    marker.write_text("\n".join(PACKAGES))
    return root


def command(state: Path, cache: Path, port: int, node: str) -> list[str]:
    """Prepare ``state`` for node ``node`` on ``port``; the command that runs it."""
    root = unpacked(cache)
    definitions = state / "definitions.json"
    definitions.write_text(json.dumps(_definitions()))
    config = state / "rabbitmq.conf"
    config.write_text(CONFIG.format(host=HOST, port=port, definitions=definitions))
    (state / "enabled_plugins").write_text("[].\n")
    erlang_bin = root / "usr/lib/erlang/bin"
    env = {
        "PATH": f"{erlang_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(state),
        "ERL_EPMD_ADDRESS": HOST,
        "ERL_EPMD_PORT": str(EPMD_PORT),
        "RABBITMQ_NODENAME": f"{node}@localhost",
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(state / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(state / "mnesia"),
        "RABBITMQ_LOG_BASE": str(state / "log"),
        "RABBITMQ_DIST_PORT": str(port + 20000),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    script = state / "start.sh"
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    # epmd must run before the node names itself; -daemon returns at once (and does
    # nothing when one already runs)
    server = root / "usr/lib/rabbitmq/bin/rabbitmq-server"
    script.write_text(f"{exports}epmd -daemon\nexec '{server}'\n")
    return ["sh", str(script)]


def _definitions() -> dict[str, object]:
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    vhosts = ["/", VHOST]
    return {
        "users": [{"name": USER, "password": PASSWORD, "tags": ["administrator"]}],
        "vhosts": [{"name": v} for v in vhosts],
        "permissions": [{"user": USER, "vhost": v, **everything} for v in vhosts],
    }


def ready(port: int) -> bool:
    """The AMQP 0-9-1 protocol header answered with a Connection.Start method frame."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(11)
    except OSError:
        return False
    # frame type 1 (method), channel 0, size; class 10 (connection), method 10 (start)
    return len(frame) >= 11 and frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a"
