"""The Kafka codec's hot path: Lambda's record shape, its size estimate, and the two filter
paths (value-only patterns decided before converting; metadata patterns on the whole view)."""

from __future__ import annotations

import base64

import orjson
from aiokafka.structs import ConsumerRecord

from service.filters import FilterCriteria, kafka_filter_view
from service.sources.kafka import KafkaCodec, lambda_record

ENVELOPE = {"eventSource": "SelfManagedKafka", "bootstrapServers": "127.0.0.1:9092"}


def raw(
    offset: int,
    value: bytes | None,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        "orders", 3, offset, 1_700_000_000_000 + offset, 1, key, value, None,
        len(key or b""), len(value or b""), headers or [],
    )  # fmt: skip


def test_lambda_record_is_lambdas_shape() -> None:
    record, _ = lambda_record(raw(7, b'{"a": 1}', b"k\xff", [("h", b"\x01\xfe")]))
    assert record == {
        "topic": "orders",
        "partition": 3,
        "offset": 7,
        "timestamp": 1_700_000_000_007,
        "timestampType": "LOG_APPEND_TIME",
        "key": base64.b64encode(b"k\xff").decode(),
        "value": base64.b64encode(b'{"a": 1}').decode(),
        "headers": [{"h": [1, -2]}],
    }


def test_absent_key_and_value_are_left_out() -> None:
    record, _ = lambda_record(raw(1, None))
    assert "key" not in record and "value" not in record and record["headers"] == []


def test_size_is_an_upper_estimate_of_the_json() -> None:
    for r in (raw(1, b"x" * 3000), raw(2, None, b"k" * 50, [("n", bytes(range(256)))] * 3)):
        record, size = lambda_record(r)
        assert len(orjson.dumps(record)) <= size


def test_both_filter_paths_decide_as_the_filter_view_does() -> None:
    raws = [raw(i, orjson.dumps({"n": i}) if i % 5 else b"not json") for i in range(20)]
    for pattern in ('{"value": {"n": [{"numeric": [">", 9]}]}}', '{"offset": [3, 4, 15]}'):
        criteria = FilterCriteria.parse({"Filters": [{"Pattern": pattern}]})
        kept, filtered, end = KafkaCodec(ENVELOPE, "orders", 3).decode(raws, criteria)
        expected = [
            r.offset for r in raws if criteria.matches(kafka_filter_view(lambda_record(r)[0]))
        ]
        assert [position for _, _, position in kept] == expected
        assert len(kept) + len(filtered) == len(raws) and end == 20


def test_screened_or_not_a_chunk_decides_as_the_filter_does() -> None:
    """Records the raw-bytes screen rejects are filtered unparsed; a chunk whose first
    records all pass is not screened; both give the filter's answers."""
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": '{"value": {"s": ["ok"]}}'}]})
    codec = KafkaCodec(ENVELOPE, "orders", 3)
    mixed = [raw(i, orjson.dumps({"s": "ok" if i % 2 else "no"})) for i in range(40)]
    kept_first = [raw(i, orjson.dumps({"s": "ok" if i < 20 else "no"})) for i in range(40)]
    escaped = [raw(0, b'{"s": "\\u006fk"}'), raw(1, b'{"s": "no"}'), raw(2, None)]
    for raws in (mixed, kept_first, escaped):
        kept, filtered, _ = codec.decode(raws, criteria)
        expected = [
            r.offset for r in raws if criteria.matches(kafka_filter_view(lambda_record(r)[0]))
        ]
        assert [position for _, _, position in kept] == expected
        assert len(filtered) == len(raws) - len(expected)
