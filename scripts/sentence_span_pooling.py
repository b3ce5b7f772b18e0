"""Why sentence vectors are a second embedding pass, not pooled from the chunk's own forward pass.

    .venv/bin/python scripts/sentence_span_pooling.py [N]   -> bench/results/sentence_span_pooling.json

For the first N (25) SciFact *train* claims and their BM25 top-5 abstracts, the extractive
generator answers three times: with each sentence embedded on its own (what it did per answer),
with those vectors stored as float16 (what ingestion stores), and with vectors mean-pooled over
each sentence's token span of the abstract's own forward pass (torch, the abstract cut at 256
tokens; sentences past the cut are embedded on their own, `fallback_embeds`). Reports citation
precision / support recall / F1 of each, the share of answers identical to the first, and the
cosine between span-pooled and independent vectors. SciFact: SCIFACT_DIR or ../shared/data/scifact.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bm25s  # noqa: E402

from embedding.local import LocalEncoder  # noqa: E402
from embedding.packaged import packaged_model_dir  # noqa: E402
from kernel.sentences import split_sentences  # noqa: E402
from services.llm_gateway.extractive import ExtractiveBackend  # noqa: E402
from services.llm_gateway.tokens import default_counter  # noqa: E402
from services.retriever.evaluate import load_beir  # noqa: E402
from services.retriever.evaluate_answers import answer_scores  # noqa: E402

SCIFACT = Path(os.environ.get("SCIFACT_DIR", ROOT.parent / "shared" / "data" / "scifact"))
OUT = ROOT / "bench" / "results" / "sentence_span_pooling.json"


class SpanPooler:
    """Token embeddings of one forward pass, mean-pooled over each sentence's span."""

    def __init__(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(packaged_model_dir()), device="cpu", local_files_only=True)
        self.torch, self.tok, self.hf = torch, st.tokenizer, st[0].auto_model.eval()

    def vectors(self, text: str) -> dict[str, np.ndarray]:
        b = self.tok(text, return_offsets_mapping=True, truncation=True, max_length=256, return_tensors="pt")
        off = b.pop("offset_mapping")[0].tolist()
        with self.torch.inference_mode():
            h = self.hf(**b).last_hidden_state[0].numpy()
        out = {}
        for s in split_sentences(text):
            m = re.search(r"\s+".join(re.escape(w) for w in s.split()), text)
            if not m:
                continue
            a, z = m.span()
            rows = [i for i, (x, y) in enumerate(off) if y > x and x >= a and y <= z]
            if rows and off[rows[-1]][1] >= z - 1:  # not cut by the 256-token window
                v = h[rows].mean(0)
                out[s] = v / np.linalg.norm(v)
        return out


class Lookup:
    """An encoder answering from `known`, embedding (and counting) the rest."""

    def __init__(self, known: dict[str, np.ndarray], enc: LocalEncoder) -> None:
        self.known, self.enc, self.misses = dict(known), enc, 0

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        miss = [t for t in texts if t not in self.known]
        self.misses += max(0, len(miss) - 1)  # the question is always embedded
        if miss:
            self.known.update(zip(miss, self.enc.encode_sync(miss), strict=True))
        return np.stack([self.known[t] for t in texts])


async def main(n: int) -> dict[str, Any]:
    corpus, queries, qrels = load_beir(SCIFACT, "train")
    qids, ids = list(queries)[:n], list(corpus)
    bm = bm25s.BM25()
    bm.index(bm25s.tokenize([corpus[i] for i in ids], stopwords="en", show_progress=False), show_progress=False)
    toks = bm25s.tokenize([queries[q] for q in qids], stopwords="en", show_progress=False)
    res, _ = bm.retrieve(toks, k=5, show_progress=False)
    top = {q: [ids[j] for j in res[i]] for i, q in enumerate(qids)}
    docs = sorted({d for q in qids for d in top[q]})
    enc = LocalEncoder(backend="auto")
    sents = sorted({s for d in docs for s in split_sentences(corpus[d])})
    indep = dict(zip(sents, enc.encode_sync(sents), strict=True))
    pooler = SpanPooler()
    span: dict[str, np.ndarray] = {}
    for d in docs:
        span.update(pooler.vectors(corpus[d]))
    f16 = {k: v.astype(np.float16).astype(np.float32) for k, v in indep.items()}
    out: dict[str, Any] = {"queries": n, "docs": len(docs), "sentences": len(sents), "span_covered": len(span)}
    counter, answers = default_counter(), {}
    for name, known in (("independent", indep), ("stored_f16", f16), ("span", span)):
        lk = Lookup(known, enc)
        backend = ExtractiveBackend(lk, counter)
        cited, texts = {}, {}
        for q in qids:
            texts[q] = await backend.compose(queries[q], [corpus[d] for d in top[q]])
            cited[q] = [top[q][int(x) - 1] for x in dict.fromkeys(re.findall(r"\[(\d+)\]", texts[q]))]
        s = answer_scores(cited, {q: qrels[q] for q in qids})
        f1 = 2 * s.citation_precision * s.support_recall / max(1e-9, s.citation_precision + s.support_recall)
        out[name] = {**s.as_dict(), "f1": round(f1, 4), "fallback_embeds": lk.misses}
        answers[name] = texts
    for name in ("stored_f16", "span"):
        out[f"same_answer_share_{name}"] = sum(answers["independent"][q] == answers[name][q] for q in qids) / n
    cos = [float(indep[s] @ span[s]) for s in span if s in indep]
    out["cos_span_vs_independent_mean"] = round(float(np.mean(cos)), 4)
    out["cos_min"] = round(float(np.min(cos)), 4)
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    before = os.getloadavg()[0]
    result = asyncio.run(main(n))
    doc = {
        "command": "python scripts/sentence_span_pooling.py " + " ".join(sys.argv[1:]),
        "load_avg_1m": {"before": round(before, 2), "after": round(os.getloadavg()[0], 2)},
        **result,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))
