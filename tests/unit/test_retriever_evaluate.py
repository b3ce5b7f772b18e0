"""The evaluation: metric arithmetic against hand-computed values, and a whole run on a tiny
BEIR-format directory (with a test-double encoder, so no model is loaded)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from services.retriever.evaluate import EvalParams, Evaluation, load_beir, ndcg_at_k, recall_at_k


def test_ndcg_and_recall_by_hand() -> None:
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    run = {"q1": {"x": 3.0, "a": 2.0, "b": 1.0}, "q2": {"c": 1.0}}
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(run, qrels, 10) == pytest.approx((dcg / idcg + 1.0) / 2)
    assert recall_at_k(run, qrels, 2) == pytest.approx((0.5 + 1.0) / 2)
    assert ndcg_at_k({}, qrels) == 0.0  # queries with no results count as zero


class BagOfWords:
    """Test double: hashed bag-of-words vectors (stands in for the model)."""

    def encode_sync(self, texts, progress=None, use_cache=True):
        out = np.zeros((len(texts), 128), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 128] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def write_beir(root: Path) -> None:
    docs = {
        "d1": ("GPUs", "Graphics processors run many threads and multiply matrices."),
        "d2": ("Storage", "Object storage keeps objects in buckets with keys."),
        "d3": ("Bread", "Bread is made from flour, water, salt and yeast."),
    }
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n" for k, (t, x) in docs.items())
    )
    queries = {"q1": "which processors multiply matrices", "q2": "buckets of objects", "q3": "yeast and flour"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")


def test_evaluation_scores_a_beir_directory(tmp_path: Path) -> None:
    write_beir(tmp_path)
    corpus, queries, qrels = load_beir(tmp_path, "test")
    assert set(queries) == {"q1", "q2"} and corpus["d1"].startswith("GPUs\n\n")
    assert qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    ev = Evaluation(tmp_path, "test", encoder=BagOfWords())
    for mode in ("hybrid", "dense", "bm25"):
        result, run = ev.score(EvalParams(chunk_size=64, chunk_overlap=8, mode=mode))
        assert result["ndcg@10"] == 1.0 and result["recall@100"] == 1.0, mode
        assert next(iter(run["q1"])) == "d1"
    with pytest.raises(FileNotFoundError, match="train"):
        load_beir(tmp_path, "train")


def test_the_same_scores_whether_indexed_in_one_commit_or_many(tmp_path: Path) -> None:
    """`rag eval --commits N` indexes the corpus as N segments, as N ingestion jobs would: every
    run (scores included) is identical to the one-commit index."""
    write_beir(tmp_path)
    runs = {}
    for commits in (1, 3):
        ev = Evaluation(tmp_path, "test", encoder=BagOfWords(), commits=commits)
        runs[commits] = [ev.score(EvalParams(chunk_size=8, chunk_overlap=2, mode=m))[1] for m in ("hybrid", "bm25")]
        assert len(ev.index(8, 2, bm25=(1.2, 0.75)).segments) == commits
    assert runs[1] == runs[3]
