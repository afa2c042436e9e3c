"""Developer tooling shipped beside the daemon but never imported by it.

``servers`` fetches and starts the local servers (Kafka, ElasticMQ, moto_server, Prometheus)
for ``scripts/services.py``, the test fixtures and ``esmd demo``. Everything here is standard
library only, so ``scripts/services.py`` runs before the venv exists; keep it that way, and
keep imports of this package out of the daemon's modules (``esmd demo`` imports it lazily,
tests/unit/test_import_graph.py checks the rest).
"""
