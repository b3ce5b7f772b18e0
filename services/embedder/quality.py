"""Quality measurements for exported variants: cosine against torch and BEIR nDCG@10.

Used by `scripts/export_embedder_openvino.py` (the int8 quality gate) and `bench/embedder.py`.
Everything here is blocking and offline.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding.runtime import Backend, Tokenization

from .batcher import plan_batches


@dataclass
class Beir:
    """A BEIR dataset: corpus (id -> text), queries (id -> text), qrels (qid -> {doc id: grade})."""

    corpus_ids: list[str]
    corpus_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(root: Path, split: str = "train") -> Beir:
    ids, texts = [], []
    with (root / "corpus.jsonl").open() as f:
        for line in f:
            doc = json.loads(line)
            ids.append(str(doc["_id"]))
            title = (doc.get("title") or "").strip()
            texts.append(f"{title} {doc['text']}".strip() if title else doc["text"])
    queries = {}
    with (root / "queries.jsonl").open() as f:
        for line in f:
            q = json.loads(line)
            queries[str(q["_id"])] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / f"{split}.tsv").open() as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        for qid, did, score in reader:
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    return Beir(ids, texts, {q: queries[q] for q in qrels if q in queries}, qrels)


def encode_texts(
    backend: Backend | Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokenization: Tokenization,
    texts: Sequence[str],
    batch_tokens: int = 8192,
) -> np.ndarray:
    """Embeds `texts` (L2-normalised) in length-sorted batches, as the service does."""
    run = backend.run if hasattr(backend, "run") else backend
    encs = tokenization.encode(list(texts))
    ids = [e.ids for e in encs]
    out = np.zeros((len(texts), 0), dtype=np.float32)
    for batch in plan_batches([len(x) for x in ids], batch_tokens, 1024):
        arr_ids, mask = tokenization.pad([ids[i] for i in batch])
        vec = run(arr_ids, mask)
        if out.shape[1] == 0:
            out = np.zeros((len(texts), vec.shape[1]), dtype=np.float32)
        out[batch] = vec
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.clip(norms, 1e-12, None)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two L2-normalised matrices."""
    return np.sum(a * b, axis=1)


def ndcg_at_10(doc_vecs: np.ndarray, doc_ids: list[str], query_vecs: np.ndarray, beir: Beir) -> float:
    """Mean nDCG@10 over the queries of `beir.qrels`, exact cosine search over every document."""
    qids = list(beir.queries)
    scores = query_vecs @ doc_vecs.T
    total = 0.0
    for row, qid in enumerate(qids):
        rel = beir.qrels.get(qid, {})
        top = np.argpartition(-scores[row], 10)[:10]
        top = top[np.argsort(-scores[row][top])]
        dcg = sum((2 ** rel.get(doc_ids[j], 0) - 1) / math.log2(r + 2) for r, j in enumerate(top))
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = sum((2**g - 1) / math.log2(r + 2) for r, g in enumerate(ideal))
        total += dcg / idcg if idcg > 0 else 0.0
    return total / max(1, len(qids))
