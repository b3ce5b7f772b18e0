"""The numbers of an A/B run: nearest-rank percentiles, paired differences, win rates and a
seeded percentile-bootstrap confidence interval of the mean paired difference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernel.percentiles import percentile

BOOTSTRAP_ITERATIONS = 2000
BOOTSTRAP_SEED = 20260101


@dataclass
class Dist:
    """A latency distribution in ns."""

    n: int = 0
    p50_ns: int = 0
    p90_ns: int = 0
    p99_ns: int = 0
    mean_ns: int = 0
    max_ns: int = 0

    @classmethod
    def of(cls, values: Sequence[int]) -> Dist:
        if not values:
            return cls()
        v = sorted(values)
        return cls(
            n=len(v),
            p50_ns=percentile(v, 50),
            p90_ns=percentile(v, 90),
            p99_ns=percentile(v, 99),
            mean_ns=int(sum(v) // len(v)),
            max_ns=int(v[-1]),
        )


def bootstrap_mean_ci(
    diffs: Sequence[float], *, level: float = 0.95, iterations: int = BOOTSTRAP_ITERATIONS, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs` (resampled with replacement,
    `iterations` times, from a generator seeded with `seed`, so a run's interval is repeatable).
    (0, 0) when there are no differences."""
    if not diffs:
        return 0.0, 0.0
    x = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(iterations, dtype=np.float64)
    for start in range(0, iterations, 500):  # bounded memory: 500 resamples at a time
        m = min(500, iterations - start)
        means[start : start + m] = x[rng.integers(0, len(x), size=(m, len(x)))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass
class Paired:
    """B minus A over the questions both sides answered, in ns: positive means A was faster."""

    n: int = 0
    mean_diff_ns: float = 0.0
    median_diff_ns: float = 0.0
    ci_low_ns: float = 0.0
    ci_high_ns: float = 0.0
    a_mean_ns: float = 0.0
    # Share of pairs where A was faster (ties count half), 0..1.
    a_win_rate: float = 0.0
    # (mean B - mean A) / mean B: how much less time A took, as a share of B's; with its interval.
    a_faster_pct: float = 0.0
    a_faster_pct_low: float = 0.0
    a_faster_pct_high: float = 0.0
    # True when the interval excludes zero.
    significant: bool = False


def paired(a: Sequence[int], b: Sequence[int], *, seed: int = BOOTSTRAP_SEED) -> Paired:
    """Paired comparison of `a[i]` with `b[i]` (same question, same chunks)."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    if not a:
        return Paired()
    diffs = [float(y - x) for x, y in zip(a, b, strict=True)]
    lo, hi = bootstrap_mean_ci(diffs, seed=seed)
    wins = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diffs)
    mean_b = sum(b) / len(b)
    mean = sum(diffs) / len(diffs)

    def pct(d: float) -> float:
        return 100.0 * d / mean_b if mean_b else 0.0

    return Paired(
        n=len(diffs),
        mean_diff_ns=mean,
        median_diff_ns=float(np.median(diffs)),
        ci_low_ns=lo,
        ci_high_ns=hi,
        a_mean_ns=sum(a) / len(a),
        a_win_rate=wins / len(diffs),
        a_faster_pct=pct(mean),
        a_faster_pct_low=pct(lo),
        a_faster_pct_high=pct(hi),
        significant=lo > 0 or hi < 0,
    )


def verdict(a: str, b: str, p: Paired, what: str = "") -> str:
    """ "A faster by X% (95% CI lo..hi%)" only when the interval excludes zero."""
    if not p.n:
        return "no paired samples"
    if not p.significant:
        return "no significant difference" + (f" in {what}" if what else "")
    fast, slow, lo, hi, pct = (a, b, p.a_faster_pct_low, p.a_faster_pct_high, p.a_faster_pct)
    if p.mean_diff_ns < 0:
        # B faster: express it as a share of A's mean.
        denom = p.a_mean_ns or 1.0
        fast, slow = b, a
        pct = -100.0 * p.mean_diff_ns / denom
        lo, hi = -100.0 * p.ci_high_ns / denom, -100.0 * p.ci_low_ns / denom
    tail = f" in {what}" if what else ""
    return f"{fast} faster than {slow}{tail} by {pct:.1f}% (95% CI {lo:.1f}..{hi:.1f}%)"
