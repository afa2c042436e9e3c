"""The real servers the integration tests use, started when absent (service.devservers)."""

from service.devservers import ensure_elasticmq as elasticmq_endpoint
from service.devservers import ensure_kafka as kafka_bootstrap
from service.devservers import ensure_moto as moto_endpoint
from service.devservers import ensure_prometheus as prometheus_endpoint

__all__ = ["elasticmq_endpoint", "kafka_bootstrap", "moto_endpoint", "prometheus_endpoint"]
