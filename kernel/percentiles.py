"""The one percentile rule every measured figure uses (storage benchmarks, A/B runs)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * p // 100))
    return int(sorted_values[int(min(rank, len(sorted_values))) - 1])
