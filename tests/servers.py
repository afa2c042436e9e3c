"""The real servers the integration tests use, started when absent (service.devtools.servers)."""

from service.devtools.servers import ensure_activemq as activemq_endpoint
from service.devtools.servers import ensure_apicurio as apicurio_registry
from service.devtools.servers import ensure_elasticmq as elasticmq_endpoint
from service.devtools.servers import ensure_kafka as kafka_bootstrap
from service.devtools.servers import ensure_kafka_auth as kafka_auth_internal
from service.devtools.servers import ensure_mongo as mongo_endpoint
from service.devtools.servers import ensure_moto as moto_endpoint
from service.devtools.servers import ensure_prometheus as prometheus_endpoint
from service.devtools.servers import ensure_rabbitmq as rabbitmq_endpoint

__all__ = [
    "activemq_endpoint",
    "apicurio_registry",
    "elasticmq_endpoint",
    "kafka_auth_internal",
    "kafka_bootstrap",
    "mongo_endpoint",
    "moto_endpoint",
    "prometheus_endpoint",
    "rabbitmq_endpoint",
]
