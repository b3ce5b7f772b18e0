"""Token arrival statistics of one stream: TTFT, generation time, inter-token percentiles,
tokens per second."""

from __future__ import annotations

import time
from typing import Any

from .domain import Usage


class StreamStats:
    """Arrival times of tokens: TTFT, generation time, inter-token percentiles."""

    def __init__(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.times: list[int] = []

    def mark(self, count: int = 1) -> None:
        now = time.perf_counter_ns()
        self.times.extend([now] * max(1, count))

    @property
    def ttft_ns(self) -> int:
        return self.times[0] - self.t0_ns if self.times else 0

    @property
    def generation_ns(self) -> int:
        return self.times[-1] - self.times[0] if len(self.times) > 1 else 0

    def inter_token(self) -> tuple[int, int]:
        gaps = sorted(b - a for a, b in zip(self.times, self.times[1:], strict=False))
        if not gaps:
            return 0, 0
        return _pct(gaps, 50), _pct(gaps, 99)

    def tokens_per_s(self, completion_tokens: int) -> float:
        """Decode rate: tokens after the first over first token -> last token."""
        gen = self.generation_ns
        if gen <= 0 or completion_tokens <= 1:
            return 0.0
        return (completion_tokens - 1) / (gen / 1e9)

    def genai_attrs(
        self, provider: str, model: str, finish: str, usage: Usage | None, prompt_tokens: int, streamed_tokens: int
    ) -> dict[str, Any]:
        """The generate span's attributes, in the OpenTelemetry GenAI semantic conventions."""
        out_tokens = usage.completion_tokens if usage is not None and usage.completion_tokens else streamed_tokens
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.finish_reasons": [finish or "stop"],
            "gen_ai.usage.input_tokens": usage.prompt_tokens if usage is not None else prompt_tokens,
            "gen_ai.usage.output_tokens": out_tokens,
            "ddnrag.llm.ttft_ns": self.ttft_ns,
            "ddnrag.llm.tokens_per_s": self.tokens_per_s(out_tokens),
        }


def _pct(sorted_values: list[int], p: float) -> int:
    k = round((p / 100) * (len(sorted_values) - 1))
    return sorted_values[min(len(sorted_values) - 1, max(0, k))]
