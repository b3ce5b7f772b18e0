"""Tunes the retriever's defaults on a BEIR train split (never the test split).

`python -m services.retriever.tune ../shared/data/scifact` scores a grid of chunk sizes, fusion
methods and weights on `qrels/train.tsv` and writes bench/results/scifact_train_tuning.json. The
chosen values become `RetrieverConfig`'s defaults; `rag eval --split test` then reports test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .evaluate import EvalParams, Evaluation

OUT = Path(__file__).resolve().parents[2] / "bench" / "results" / "scifact_train_tuning.json"


def main(argv: list[str]) -> int:
    beir = Path(argv[0]) if argv else Path("../shared/data/scifact")
    sizes = [tuple(map(int, s.split("/"))) for s in (argv[1].split(",") if len(argv) > 1 else ["256/32", "128/16"])]
    ev = Evaluation(beir, "train")
    rows = []
    for size, overlap in sizes:
        grid = []
        for k1, b in ((1.2, 0.75), (0.9, 0.4)):
            grid += [EvalParams(size, overlap, "bm25", bm25_k1=k1, bm25_b=b)]
            grid += [
                EvalParams(size, overlap, "hybrid", "weighted", dense_weight=w, candidates=300, bm25_k1=k1, bm25_b=b)
                for w in (0.5, 0.6, 0.7)
            ]
        grid += [EvalParams(size, overlap, "dense"), EvalParams(size, overlap, "hybrid", "rrf", 60, candidates=300)]
        for p in grid:
            res, _ = ev.score(p)
            rows.append(res)
            print(json.dumps({k: res[k] for k in ("ndcg@10", "recall@100", "chunks")} | res["params"]), flush=True)
            OUT.write_text(json.dumps({"split": "train", "dataset": beir.name, "results": rows}, indent=1))
    best = max(rows, key=lambda r: r["ndcg@10"])
    print("best", json.dumps(best), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
