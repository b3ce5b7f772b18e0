"""The A/B numbers: the bootstrap interval against known distributions, paired verdicts, errors
counted (never dropped), the CSV, the interleaving order, and the offline HTML report."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest

from kernel.errors import ServiceError
from kernel.percentiles import percentile
from services.llm_gateway.ab.engine import order
from services.llm_gateway.ab.model import AbRequest, BackendInfo, Sample, run_document, samples_csv
from services.llm_gateway.ab.report import render_html
from services.llm_gateway.ab.stats import Dist, bootstrap_mean_ci, paired, verdict


def test_bootstrap_interval_matches_the_normal_theory_width() -> None:
    # N(5, 2^2), n = 400: the 95% interval of the mean is mean +- 1.96 * 2 / 20 = +-0.196.
    x = np.random.default_rng(7).normal(5.0, 2.0, 400)
    lo, hi = bootstrap_mean_ci(list(x))
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert lo < x.mean() < hi
    assert abs((hi - lo) / 2 - half) / half < 0.1, (lo, hi, half)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    # 300 independent samples of an exponential (skewed, like latencies) with mean 3: the
    # percentile bootstrap's coverage at n = 80 is close to its nominal 95%. Seeds are fixed.
    rng = np.random.default_rng(11)
    covered = 0
    for i in range(300):
        lo, hi = bootstrap_mean_ci(list(rng.exponential(3.0, 80)), iterations=1000, seed=i)
        covered += lo <= 3.0 <= hi
    assert 0.88 <= covered / 300 <= 0.99, covered


def test_the_interval_is_repeatable_for_a_seed_and_empty_input_is_zero() -> None:
    d = [1.0, 5.0, 2.0, 8.0, 3.0]
    assert bootstrap_mean_ci(d, seed=3) == bootstrap_mean_ci(d, seed=3)
    assert bootstrap_mean_ci([]) == (0.0, 0.0)


def test_percentiles_are_nearest_rank() -> None:
    v = list(range(1, 101))
    assert (percentile(v, 50), percentile(v, 90), percentile(v, 99)) == (50, 90, 99)
    assert Dist.of([]).n == 0 and Dist.of([3, 1, 2]).p50_ns == 2


def test_paired_verdicts_say_faster_only_when_the_interval_excludes_zero() -> None:
    rng = np.random.default_rng(5)
    a = [int(v) for v in rng.normal(1_000_000, 50_000, 200)]
    b_slow = [v + 500_000 + int(rng.normal(0, 50_000)) for v in a]
    p = paired(a, b_slow)
    assert p.significant and p.ci_low_ns > 0 and p.a_win_rate > 0.99
    text = verdict("ddn", "s3 (emulated)", p, "fetch ttfb")
    assert text.startswith("ddn faster than s3 (emulated) in fetch ttfb by 33.") and "95% CI" in text
    # B faster: said the other way round, as a share of A.
    q = paired(b_slow, a)
    assert verdict("s3", "ddn", q).startswith("ddn faster than s3 by 3")
    # Same distribution: no claim.
    same = [v + int(rng.normal(0, 50_000)) for v in a]
    r = paired(a, same)
    assert not r.significant and verdict("a", "b", r) == "no significant difference"
    with pytest.raises(ValueError):
        paired([1], [1, 2])


def _doc() -> dict:
    req = AbRequest(backends=["local", "s3-emulated"], questions=["q one?", "q two?"], repeat=2, source="unit")
    infos = {
        "local": BackendInfo("local", label="s3_compatible", kind="s3_compatible"),
        "s3-emulated": BackendInfo("s3-emulated", label="emulated: RTT 20 ms", emulated=True, shaping={"rtt_ms": 20.0}),
    }
    samples = []
    for p in range(2):
        for q in range(2):
            for slot, b in enumerate(order(q, p, "local", "s3-emulated")):
                extra = 20_000_000 if b == "s3-emulated" else 0
                s = Sample(q, p, "cold" if p == 0 else "warm", b, slot, chunks=2, bytes=100)
                s.fetch_ttfb_ns, s.fetch_total_ns, s.ttft_ns = 1_000_000 + extra, 2_000_000 + extra, 9_000_000 + extra
                samples.append(s)
    samples.append(Sample(1, 1, "warm", "s3-emulated", 0, error="UNAVAILABLE", error_message="down"))
    return run_document(
        run_id="20260101T000000Z-0000abcd",
        started_unix_ns=1,
        finished_unix_ns=2,
        status="complete",
        req=req,
        backends=infos,
        machine={"cpu_count": 2},
        notes=[],
        samples=samples,
    )


def test_errors_are_counted_by_kind_and_never_dropped() -> None:
    doc = _doc()
    warm = doc["summary"]["warm"]["backends"]["s3-emulated"]
    assert warm["errors"] == 1 and warm["errors_by_kind"] == {"UNAVAILABLE": 1} and warm["samples"] == 3
    assert warm["fetch_ttfb"]["n"] == 2  # the failed sample is not a fast success
    assert doc["summary"]["cold"]["paired"]["fetch_ttfb"]["mean_diff_ns"] == 20_000_000


def test_the_csv_has_one_row_per_sample_and_keeps_the_emulated_label() -> None:
    doc = _doc()
    rows = list(csv.DictReader(io.StringIO(samples_csv(doc))))
    assert len(rows) == len(doc["samples"])
    assert {r["backend_label"] for r in rows if r["backend"] == "s3-emulated"} == {"emulated: RTT 20 ms"}
    assert {r["error"] for r in rows} == {"", "UNAVAILABLE"}


def test_interleaving_alternates_a_b_then_b_a() -> None:
    seq = [b for q in range(3) for b in order(q, 0, "A", "B")]
    assert seq == ["A", "B", "B", "A", "A", "B"]


def test_the_html_report_is_self_contained() -> None:
    html = render_html(_doc())
    assert html.count("<svg") >= 4 and "<script" not in html
    assert not re.search(r"(src|href)=", html), "the report loads nothing"
    assert "s3-emulated (emulated)" in html and "emulated: RTT 20 ms" in html and "@media print" in html


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"backends": ["a"]}, "INVALID_AB_BACKENDS"),
        ({"backends": ["a", "a"]}, "INVALID_AB_BACKENDS"),
        ({"questions": []}, "NO_QUESTIONS"),
        ({"repeat": 0}, "INVALID_REPEAT"),
        ({"top_k": 0}, "INVALID_TOP_K"),
        ({"collection": "../x"}, "INVALID_COLLECTION"),
    ],
)
def test_bad_requests_say_what_is_wrong(kw: dict, reason: str) -> None:
    req = AbRequest(**{"backends": ["a", "b"], "questions": ["q?"], **kw})
    with pytest.raises(ServiceError) as ei:
        req.validate()
    assert ei.value.reason == reason and ei.value.message
