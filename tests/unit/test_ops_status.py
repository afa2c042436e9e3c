"""``esmd status``'s rows from two /metrics samples and /mappings."""

from __future__ import annotations

from service.config import parse_config
from service.ops.status import Live, Table, live_rows, parse_metrics, render

MAPPING = {
    "Name": "clicks",
    "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:1"]}},
    "Topics": ["clicks"],
    "StartingPosition": "TRIM_HORIZON",
    "FunctionName": "fn",
}
CONFIG = parse_config(
    {"functions": {"fn": {"python": "m:f"}}, "mappings": [MAPPING]}, "test"
).mappings[0]
L = 'mapping="clicks",source="kafka"'


def page(polled: int, invoked: int, failed: int, lag: tuple[int, int]) -> str:
    return "\n".join(
        [
            f"esm_polled_events_total{{{L}}} {polled}",
            f"esm_invoked_events_total{{{L}}} {invoked}",
            f"esm_filtered_out_events_total{{{L}}} 0",
            f"esm_failed_invoke_events_total{{{L}}} {failed}",
            f'esm_errors_total{{{L},kind="invoke"}} 2',
            f'esm_errors_total{{{L},kind="polling"}} 0',
            f'esm_offset_lag{{{L},partition="0"}} {lag[0]}',
            f'esm_offset_lag{{{L},partition="1"}} {lag[1]}',
            f'esm_pollers{{{L},kind="current"}} 2',
            f'esm_pollers{{{L},kind="desired"}} 3',
            "",
        ]
    )


def status(**extra: object) -> dict[str, dict[str, object]]:
    base = {"name": "clicks", "state": "Enabled", "state_reason": "USER_INITIATED"}
    return {"clicks": {**base, "last_error": None, **extra}}


def test_rates_lag_pollers_and_errors() -> None:
    live = Live(
        status(),
        parse_metrics(page(100, 90, 0, (5, 5)), 10.0),
        parse_metrics(page(300, 250, 0, (7, 3)), 12.0),
    )
    rows = dict(live_rows(CONFIG, live))
    assert rows["state"] == "Enabled (USER_INITIATED)"
    assert rows["pollers"] == "2 current / 3 desired"
    assert rows["lag"] == "10 records (esm_offset_lag sum)"
    assert rows["records"] == "polled 100.0/s, invoked 80.0/s, filtered out 0.0/s"
    assert rows["errors"] == "invoke 2"
    assert rows["last result"] == "OK"


def test_last_result() -> None:
    idle = parse_metrics(page(0, 0, 0, (0, 0)), 0.0)
    assert dict(live_rows(CONFIG, Live(status(), idle, idle)))["last result"] == (
        "No records processed"
    )
    failing = Live(
        status(), parse_metrics(page(9, 9, 1, (0, 0)), 0), parse_metrics(page(9, 12, 4, (0, 0)), 1)
    )
    assert dict(live_rows(CONFIG, failing))["last result"] == "PROBLEM: function call failed"
    down = Live(status(state_reason="EVENT_SOURCE_AUTHN_ERROR", last_error="refused"), idle, idle)
    rows = dict(live_rows(CONFIG, down))
    assert rows["last result"] == "PROBLEM: EVENT_SOURCE_AUTHN_ERROR"
    assert rows["last error"] == "refused"


def test_render_aligns_rows() -> None:
    text = render([Table("clicks  (kafka)", [("state", "Enabled"), ("last error", "-")])])
    assert text == "clicks  (kafka)\n  state       Enabled\n  last error  -\n"


def test_sqs_rows_show_the_concurrency_in_flight_and_allowed() -> None:
    sqs = {
        "Name": "orders",
        "EventSourceArn": "arn:aws:sqs:us-east-1:1:orders",
        "FunctionName": "f",
    }
    cfg = parse_config({"mappings": [sqs]}, "test").mappings[0]
    labels = 'mapping="orders",source="sqs"'
    text = f"esm_invoke_concurrency{{{labels}}} 7\nesm_invoke_concurrency_limit{{{labels}}} 35\n"
    sample = parse_metrics(text, 1.0)
    base = {"name": "orders", "state": "Enabled", "state_reason": "USER_INITIATED"}
    live = Live({"orders": {**base, "last_error": None}}, sample, sample)
    assert dict(live_rows(cfg, live))["concurrency"] == "7 in flight / 35 allowed"
