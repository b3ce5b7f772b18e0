"""Tunes the built-in extractive generator's selection on a BEIR split (SciFact *train*): runs the
retriever's ranking once, then composes answers over each query's top-k documents with every
setting of a small grid (the generator's own `compose`, in-process, embeddings memoised) and
scores citation precision and support recall as `rag eval --answers` does.

    .venv/bin/python scripts/tune_answers.py /work/shared/data/scifact --split train

Pick on train, then report test with `rag eval BEIR_DIR --split test --answers`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedding.local import LocalEncoder  # noqa: E402
from services.llm_gateway.extractive import ExtractiveBackend  # noqa: E402
from services.llm_gateway.tokens import default_counter  # noqa: E402
from services.retriever.evaluate import Evaluation, default_params  # noqa: E402
from services.retriever.evaluate_answers import answer_scores  # noqa: E402


class MemoEncoder:
    """Embeds each distinct text once."""

    def __init__(self) -> None:
        self.inner = LocalEncoder()
        self.memo: dict[str, np.ndarray] = {}

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            for t, v in zip(todo, await self.inner.encode(todo), strict=True):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("beir_dir", type=Path)
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit", type=int, default=0, help="only the first N queries")
    args = ap.parse_args()
    ev = Evaluation(args.beir_dir, args.split)
    if args.limit:  # before scoring, so only these queries are embedded and ranked
        ev.queries = dict(list(ev.queries.items())[: args.limit])
        ev.qrels = {q: ev.qrels[q] for q in ev.queries}
    _, run = ev.score(default_params())
    queries, qrels = ev.queries, ev.qrels
    enc = MemoEncoder()
    counter = default_counter()
    grid = {
        "top_k": [5],
        "min_score": [0.3, 0.35, 0.45],
        "margin": [0.05, 0.1, 0.15],
        "max_sentences": [3, 4],
        "rank_penalty": [0.0, 0.05],
    }
    rows = []
    for values in itertools.product(*grid.values()):
        cfg = dict(zip(grid, values, strict=True))
        top_k = cfg.pop("top_k")
        backend = ExtractiveBackend(enc, counter, **cfg)
        cited: dict[str, list[str]] = {}
        for qid, q in queries.items():
            docs = [d for d, _ in sorted(run[qid].items(), key=lambda x: -x[1])[:top_k]]
            text = await backend.compose(q, [ev.corpus[d] for d in docs])
            cited[qid] = [docs[int(n) - 1] for n in dict.fromkeys(_numbers(text))]
        s = answer_scores(cited, qrels)
        f1 = 2 * s.citation_precision * s.support_recall / max(1e-9, s.citation_precision + s.support_recall)
        rows.append({"top_k": top_k, **cfg, **s.as_dict(), "f1": round(f1, 4)})
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["f1"])
    print("BEST", json.dumps(best))


def _numbers(text: str) -> list[str]:
    import re

    return [n for m in re.finditer(r"\[(\d+(?:\s*,\s*\d+)*)\]", text) for n in re.split(r"\s*,\s*", m.group(1))]


if __name__ == "__main__":
    asyncio.run(main())
