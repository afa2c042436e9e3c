#!/bin/sh
# Sample orders for the compose example: one JSON order every ORDER_INTERVAL seconds on
# ORDERS_TOPIC; every third one is COMPLETED, which is what the example mapping's filter keeps.
# Runs in the apache/kafka image (its console producer); with no Kafka around, set
# PRODUCER=cat to see the orders on stdout.
set -eu

BOOTSTRAP="${KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}"
TOPIC="${ORDERS_TOPIC:-orders}"
INTERVAL="${ORDER_INTERVAL:-0.5}"
COUNT="${ORDER_COUNT:-0}" # 0: forever
PRODUCER="${PRODUCER:-/opt/kafka/bin/kafka-console-producer.sh --bootstrap-server $BOOTSTRAP --topic $TOPIC}"

orders() {
    i=0
    while [ "$COUNT" -eq 0 ] || [ "$i" -lt "$COUNT" ]; do
        i=$((i + 1))
        if [ $((i % 3)) -eq 0 ]; then status=COMPLETED; else status=PENDING; fi
        printf '{"id": %d, "status": "%s", "amount": %d.%02d}\n' "$i" "$status" $((i % 250)) $((i % 100))
        sleep "$INTERVAL"
    done
}

# shellcheck disable=SC2086 # PRODUCER is a command line on purpose
orders | $PRODUCER
