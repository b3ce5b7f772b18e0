"""Groundedness-check benchmark: `.venv/bin/python bench/verify.py` -> bench/results/verify.json.

Measures the verifier of services/llm_gateway/verify on pairs no one here wrote, from SciFact:
- positives: each claim with every abstract it cites (qrels);
- hard negatives: each claim with its best-ranked BM25 hit that it does not cite;
- random negatives: each claim with a random abstract it does not cite.
The logistic model is fitted on train claims (a seeded sample of `--train-claims`), the sentence
threshold chosen there (best balanced accuracy), and the test claims are reported once:
`groundedness_auc_hard` and `groundedness_auc_random` (ROC AUC of the score, positives against
each kind of negative), beside the plain-cosine references (whole abstract, best sentence).
`--write-model` stores the fit in services/llm_gateway/verify/model.json (what the service uses).
Latency: the added time per answer (p50, ms) of `Verifier.verify` on answers of 3 cited sentences
over 5 passages, with the packaged MiniLM in process and no embedding cache.

Flags: --scifact DIR  --train-claims N (300)  --latency-answers N (40)  --write-model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import bm25s  # noqa: E402

from embedding.local import DEFAULT_CACHE, LocalEncoder  # noqa: E402
from services.llm_gateway.domain import Passage  # noqa: E402
from services.llm_gateway.extractive import split_sentences  # noqa: E402
from services.llm_gateway.verify.features import NAMES, Evidence, candidate_sentences, features  # noqa: E402
from services.llm_gateway.verify.grounding import EmbeddingScorer, Verifier  # noqa: E402
from services.retriever.evaluate import load_beir  # noqa: E402

OUT = ROOT / "bench" / "results" / "verify.json"
MODEL = ROOT / "services" / "llm_gateway" / "verify" / "model.json"
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U, ties counted half)."""
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r = ranks[: len(pos)].sum()
    return float((r - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method; weights with the bias last."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.eye(xb.shape[1]) * l2
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -40, 40)))
        g = xb.T @ (p - y) + reg @ w
        h = (xb * (p * (1 - p))[:, None]).T @ xb + reg
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def build_pairs(scifact: Path, train_claims: int) -> tuple[dict[str, str], dict[str, tuple[dict, list]]]:
    corpus, _, _ = load_beir(scifact, "train")
    ids = list(corpus)
    bm = bm25s.BM25()
    bm.index(bm25s.tokenize([corpus[i] for i in ids], stopwords="en", show_progress=False), show_progress=False)
    rng = random.Random(13)
    out = {}
    for split in ("train", "test"):
        _, queries, qrels = load_beir(scifact, split)
        qids = sorted(queries)
        keep = set(qids)
        if split == "train":  # a seeded sample; the random negatives are drawn for every claim first
            shuffled = list(qids)
            random.Random(5).shuffle(shuffled)
            keep = set(shuffled[:train_claims])
        res, _ = bm.retrieve(
            bm25s.tokenize([queries[q] for q in qids], stopwords="en", show_progress=False), k=20, show_progress=False
        )
        pairs = []
        for qi, q in enumerate(qids):
            rel = {d for d, s in qrels[q].items() if s > 0}
            pairs += [(q, d, "pos") for d in sorted(rel)]
            pairs += [(q, d, "hard") for d in [ids[j] for j in res[qi] if ids[j] not in rel][:1]]
            while (d := rng.choice(ids)) in rel:
                pass
            pairs.append((q, d, "rand"))
        pairs = [p for p in pairs if p[0] in keep]
        out[split] = ({q: queries[q] for q in sorted(keep)}, pairs)
    return corpus, out


def feature_matrix(corpus: dict[str, str], queries: dict[str, str], pairs: list, enc: LocalEncoder) -> np.ndarray:
    """Features of every pair, with the evidence sentences the product would embed for it
    (verify/features.py `candidate_sentences`); only those are embedded."""
    sents = {d: split_sentences(corpus[d]) or [corpus[d]] for d in {d for _, d, _ in pairs}}
    chosen = [candidate_sentences(queries[q], sents[d]) for q, d, _ in pairs]
    qids = sorted({q for q, _, _ in pairs})
    qv = dict(zip(qids, enc.encode_sync([queries[q] for q in qids]), strict=True))
    unique = sorted({s for ss in chosen for s in ss})
    row = {s: i for i, s in enumerate(unique)}
    vecs = enc.encode_sync(unique)
    return np.stack(
        [
            features(queries[q], qv[q], Evidence.build(corpus[d], ss, vecs[[row[s] for s in ss]]))
            for (q, d, _), ss in zip(pairs, chosen, strict=True)
        ]
    )


async def latency(corpus: dict[str, str], queries: dict[str, str], pairs: list, n: int) -> dict:
    """Verifier.verify on answers of 3 cited claims over 5 passages; no embedding cache."""
    enc = LocalEncoder(backend="auto", batch_size=32)
    verifier = Verifier(EmbeddingScorer(enc))
    pos = [(q, d) for q, d, k in pairs if k == "pos"]
    rng = random.Random(3)
    times = []
    for i in range(n + 3):
        picks = rng.sample(pos, 3)
        passages = [corpus[d] for _, d in picks] + [corpus[rng.choice(list(corpus))] for _ in range(2)]
        cmap = {j + 1: Passage(text=t, chunk_id=str(j)) for j, t in enumerate(passages)}
        answer = " ".join(f"{queries[q].rstrip('.')} [{j + 1}]." for j, (q, _) in enumerate(picks))
        t0 = time.perf_counter()
        await verifier.verify(answer, cmap)
        if i >= 3:  # the first calls load the model
            times.append((time.perf_counter() - t0) * 1000)
    return {
        "answers": n,
        "sentences_per_answer": 3,
        "passages_per_answer": 5,
        "added_ms_p50": round(statistics.median(times), 1),
        "added_ms_p90": round(sorted(times)[int(0.9 * len(times)) - 1], 1),
        "encoder": "packaged all-MiniLM-L6-v2 in process (OpenVINO when available), no cache",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scifact", type=Path, default=SCIFACT)
    ap.add_argument("--train-claims", type=int, default=300)
    ap.add_argument("--latency-answers", type=int, default=40)
    ap.add_argument("--write-model", action="store_true")
    args = ap.parse_args(argv)
    t_start = time.time()
    corpus, splits = build_pairs(args.scifact, args.train_claims)
    enc = LocalEncoder(backend="auto", cache_path=DEFAULT_CACHE, batch_size=32)
    mats = {s: feature_matrix(corpus, q, p, enc) for s, (q, p) in splits.items()}
    labels = {s: np.array([k for _, _, k in splits[s][1]]) for s in splits}

    xt, lt = mats["train"], labels["train"]
    mean, scale = xt.mean(axis=0), xt.std(axis=0) + 1e-9
    w = fit_logistic((xt - mean) / scale, (lt == "pos").astype(float))

    def prob(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-np.clip(((x - mean) / scale) @ w[:-1] + w[-1], -40, 40)))

    ptr = prob(xt)
    grid = np.linspace(0.05, 0.95, 91)
    bal = [((ptr[lt == "pos"] >= t).mean() + (ptr[lt != "pos"] < t).mean()) / 2 for t in grid]
    threshold = float(grid[int(np.argmax(bal))])

    def aucs(score: np.ndarray, lab: np.ndarray) -> dict[str, float]:
        return {
            "hard": round(auc(score[lab == "pos"], score[lab == "hard"]), 4),
            "random": round(auc(score[lab == "pos"], score[lab == "rand"]), 4),
        }

    xs, ls = mats["test"], labels["test"]
    ps = prob(xs)
    col = {n: i for i, n in enumerate(NAMES)}
    test = {
        "model": aucs(ps, ls),
        "reference_cosine_whole_passage": aucs(xs[:, col["cos_centroid"]], ls),
        "reference_cosine_best_sentence": aucs(xs[:, col["cos_max"]], ls),
        "per_feature": {n: aucs(xs[:, i], ls) for n, i in col.items()},
        "at_threshold": {
            "threshold": threshold,
            "positives_supported": round(float((ps[ls == "pos"] >= threshold).mean()), 4),
            "hard_negatives_rejected": round(float((ps[ls == "hard"] < threshold).mean()), 4),
            "random_negatives_rejected": round(float((ps[ls == "rand"] < threshold).mean()), 4),
        },
    }
    fit = {
        "features": list(NAMES),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [round(float(v), 6) for v in w],
        "sentence_threshold": round(threshold, 4),
        "fitted_on": f"SciFact train, {len(splits['train'][0])} claims (seeded sample), bench/verify.py",
    }
    if args.write_model:
        MODEL.write_text(json.dumps(fit, indent=1) + "\n")
    lat = asyncio.run(latency(corpus, splits["test"][0], splits["test"][1], args.latency_answers))
    count = {s: {k: int((labels[s] == k).sum()) for k in ("pos", "hard", "rand")} for s in splits}
    result = {
        "dataset": "SciFact (BEIR): claims and the abstracts they cite",
        "command": ".venv/bin/python bench/verify.py",
        "pairs": count,
        "groundedness_auc_hard": test["model"]["hard"],
        "groundedness_auc_random": test["model"]["random"],
        "goal": {"groundedness_auc_hard": 0.80, "groundedness_auc_random": 0.98},
        "test": test,
        "latency": lat,
        "fit": fit,
        "shipped_model_matches_this_fit": json.loads(MODEL.read_text())["weights"] == fit["weights"],
        "platform": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 1),
        },
        "wall_s": round(time.time() - t_start, 1),
        "unix_time": int(time.time()),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("groundedness_auc_hard", "groundedness_auc_random", "latency")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
