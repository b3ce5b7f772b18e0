"""The Metrics page's arithmetic (gateway/metrics_window.py): Prometheus's histogram_quantile,
increases across restarts, and windows over real prometheus_client expositions."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics_window import History, Snapshot, histogram_quantile, increases, parse


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    # 10 observations <= 0.1, 10 more in (0.1, 0.5]: cumulative {0.1: 10, 0.5: 20, +Inf: 20}.
    buckets = {0.1: 10.0, 0.5: 20.0, math.inf: 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)  # halfway through (0.1, 0.5]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # the first bucket starts at 0
    # Observations past the last finite bound answer that bound, as Prometheus does.
    assert histogram_quantile(0.99, {0.1: 1.0, math.inf: 10.0}) == pytest.approx(0.1)
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


def test_increases_count_a_restart_from_zero() -> None:
    key = ("x_total", ())
    first, last = Snapshot(0.0, {key: 10.0}), Snapshot(1.0, {key: 3.0})
    assert increases(first, last) == {key: 3.0}
    assert increases(first, Snapshot(1.0, {key: 15.0})) == {key: 5.0}
    assert increases(None, last) == {key: 3.0}


def _scrape(reg: CollectorRegistry, job: str, at: float) -> Snapshot:
    return Snapshot(at, parse(generate_latest(reg).decode(), job, "i0"))


def test_window_quantiles_rates_and_ttfb_from_real_expositions() -> None:
    reg = CollectorRegistry()
    ttfb = Histogram("storage_backend_ttfb_seconds", "", ["backend", "operation"], registry=reg, buckets=(0.01, 0.1, 1))
    calls = Histogram(
        "grpc_server_call_duration_seconds", "", ["grpc_method", "grpc_status"], registry=reg, buckets=(0.1, 1)
    )
    Counter("unrelated", "", registry=reg).inc()
    history = History()
    # Before the window: slow GETs that must not count.
    for _ in range(50):
        ttfb.labels("seaweed", "get").observe(0.5)
    history.add(_scrape(reg, "storage", 1000.0))
    history.add(_scrape(reg, "storage", 1100.0))
    for _ in range(9):
        ttfb.labels("seaweed", "get").observe(0.005)
        calls.labels("svc/Get", "OK").observe(0.01)
    ttfb.labels("seaweed", "get").observe(0.05)
    calls.labels("svc/Get", "UNAVAILABLE").observe(0.01)
    calls.labels("svc/Head", "NOT_FOUND").observe(0.01)  # a caller's miss, not an error
    history.add(_scrape(reg, "storage", 1200.0))
    w = history.window(150)
    assert w["measured_s"] == pytest.approx(100.0) and not w["partial"]
    [row] = w["storage_ttfb"]
    assert (row["backend"], row["operation"], row["count"]) == ("seaweed", "get", 10)
    # Cumulative {0.01: 9, 0.1: 10}: p50 is 5/9 into the first bucket, p99 0.9 into the second.
    assert row["p50_ms"] == pytest.approx(1000 * 0.01 * 5 / 9, abs=1e-3)
    assert row["p99_ms"] == pytest.approx(1000 * (0.01 + 0.09 * 0.9), abs=1e-3)
    req = w["requests"]["storage"]
    assert req == {"requests": 11, "rate_per_s": 0.11, "errors": 1, "error_ratio": round(1 / 11, 4)}
    series = w["storage_ttfb_series"]["seaweed"]
    assert series[-1]["count"] == 10 and all(p["count"] == 0 for p in series[:-1])
    # A window longer than the history covers all of it, and says so.
    longer = history.window(1800)
    assert longer["partial"] is True and longer["measured_s"] == pytest.approx(200.0)
    assert longer["storage_ttfb"][0]["count"] == 10  # the 50 GETs before the first scrape are not in it


def test_gateway_alone_still_shows_answer_ttft() -> None:
    """With no peers scraped (a cluster), the answer TTFT comes from the gateway's own histogram;
    the llm_gateway's figures are empty, not made up."""
    from gateway.metrics import GatewayMetrics

    gm = GatewayMetrics()
    history = History()
    history.add(_scrape(gm.registry, "gateway", 10.0))
    gm.ttft.observe(0.2)
    history.add(_scrape(gm.registry, "gateway", 20.0))
    ttft = history.window(300)["ttft"]
    assert ttft["gateway"]["count"] == 1 and 100 < ttft["gateway"]["p50_ms"] <= 250
    assert ttft["rag"] == {"count": 0, "p50_ms": None, "p99_ms": None}


def test_parse_keeps_only_wanted_series_exactly_as_a_full_parse() -> None:
    # parse() drops unwanted lines before parsing; the result must equal a full parse, filtered.
    from prometheus_client.parser import text_string_to_metric_families

    reg = CollectorRegistry()
    h = Histogram("gateway_ttft_seconds", "ttft", ["route"], registry=reg)
    other = Histogram("unrelated_seconds", "noise", ["a"], registry=reg)
    c = Counter("gateway_requests", "requests", ["method", "code"], registry=reg)
    for i in range(20):
        h.labels('r "quoted" {x}').observe(i / 10)
        other.labels(str(i)).observe(i)
        c.labels("GET", "200").inc()
    text = generate_latest(reg).decode()
    full = {
        (s.name, tuple(sorted({**s.labels, "job": "j", "instance": "i"}.items()))): float(s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in ("gateway_requests_total",) or s.name.startswith("gateway_ttft_seconds_")
        if not s.name.endswith("_created")
    }
    got = parse(text, "j", "i")
    assert got == full and any(k[0] == "gateway_ttft_seconds_bucket" for k in got)
