#!/usr/bin/env python3
"""Start, stop and show the local servers (Kafka, ElasticMQ, moto_server, mongo-java-server,
RabbitMQ, ActiveMQ, Apicurio Registry, Prometheus); see service/devtools/servers.py.

Runs with the system python before the venv exists: it needs only the standard library.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.devtools.servers import main

sys.exit(main(sys.argv[1:]))
