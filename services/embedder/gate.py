"""The quality gate: makes the CPU variants, judges them by retrieval against torch fp32, and
records the verdicts the service's `auto` backend reads at start.

For the CPU at hand (`embedding/variants.py` says which variants are candidates):
1. the fp32 OpenVINO IR is exported if missing (the fp32 variant, and the speed baseline);
2. each candidate is made: `int8-dyn` (ONNX export, fusion, dynamic int8: no calibration),
   `int8` (NNCF static, calibrated on a fixed random sample of SciFact corpus abstracts, never
   on a held-out set), `bf16` (the fp32 IR run in bf16);
3. speed first: each candidate and fp32 alternate over the same SPEED_TEXTS abstracts in
   SPEED_ROUNDS rounds; a candidate no faster than fp32 could never be served, so its quality is
   not measured (recorded as `skipped`);
4. torch fp32 (sentence-transformers itself) embeds the SciFact corpus and its TRAIN queries:
   the reference;
5. the remaining candidates, fastest first, embed the same texts; one passes when its SciFact
   TRAIN nDCG@10 is at most 0.005 below torch's and its cosine to torch's vectors has mean >=
   0.995 and min >= 0.98. The first that passes is the one served, so the slower ones are not
   measured (`skipped`): that keeps the gate to one full pass over SciFact beyond the reference;
6. the served variant (else fp32) embeds NFCorpus and reports its TEST nDCG@10: a held-out check
   only, never used to decide anything.

Blocking and offline; minutes on 2 cores. `scripts/export_embedder_openvino.py` (`make
embedder-int8`) is its command line; `bench/embedder.py` runs it first, timed apart, when no
verdict is recorded for this CPU.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedding import export, ort_variant, variants
from embedding.runtime import (
    OpenVinoBackend,
    Tokenization,
    TorchBackend,
    read_max_seq_length,
    read_pooling,
    resolve_model,
)

from . import quality

log = logging.getLogger(__name__)

CALIBRATION_SEED = 1234
# Abstracts each gated variant and fp32 embed, alternating in SPEED_ROUNDS rounds, for the speed check.
SPEED_TEXTS = 96
SPEED_ROUNDS = 2
# The MTEB figure for all-MiniLM-L6-v2 on NFCorpus test (torch fp32), for the held-out check.
NFCORPUS_MTEB_NDCG_AT_10 = 0.31594


def _encode_timed(backend: Any, tok: Tokenization, texts: list[str]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    vecs = quality.encode_texts(backend, tok, texts)
    return vecs, time.perf_counter() - t0


def _calibration(tok: Tokenization, texts: list[str], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    sample = random.Random(CALIBRATION_SEED).sample(texts, min(size, len(texts)))
    return [tok.pad([enc.ids]) for enc in tok.encode(sample)]


def _variant_backend(variant: str, art: export.Artifacts, gates: variants.GateStore, threads: int, dim: int) -> Any:
    if variant == "int8-dyn":
        return ort_variant.OnnxRuntimeBackend(
            gates.int8_dyn_onnx, threads, name="onnxruntime-int8", dtype="int8", dimension=dim
        )
    if variant == "int8":
        return OpenVinoBackend(gates.int8_xml, threads, name="openvino-int8", dtype="int8", dimension=dim)
    precision = {"bf16": "bf16", "fp32": "f32"}[variant]
    return OpenVinoBackend(art.fp_xml, threads, name="openvino", dtype="", dimension=dim, precision=precision)


def _make_variant(variant: str, art: export.Artifacts, gates: variants.GateStore, calibration: Any) -> None:
    """Writes the files `variant` runs from (nothing for bf16: it runs the fp32 IR)."""
    if variant == "int8-dyn":
        onnx_fp = art.root / "onnx" / "model.onnx"
        if not onnx_fp.is_file():
            ort_variant.export_onnx(art.model_dir, onnx_fp, pooling=read_pooling(art.model_dir))
        ort_variant.quantize_dynamic_int8(onnx_fp, gates.int8_dyn_onnx)
    elif variant == "int8":
        export.quantize_int8(art.fp_xml, gates.int8_xml, calibration())


def run_gate(
    state_dir: Path,
    scifact: Path,
    nfcorpus: Path | None,
    *,
    threads: int,
    model_dir_cfg: str = "",
    calibration_size: int = 300,
    force: bool = False,
) -> dict[str, Any]:
    """Runs the gate for this CPU (or returns the verdicts already recorded, unless `force`)."""
    t_start = time.perf_counter()
    model_dir, model_id = resolve_model(model_dir_cfg, "")
    tok = Tokenization(model_dir, read_max_seq_length(model_dir))
    art = export.Artifacts(state_dir, model_dir)
    gates = art.gates()
    if not force and (recorded := gates.read()) is not None:
        return {**recorded, "cached": True}
    dim = export.dimension_of(model_dir)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    if not art.fp_ready():
        export.export_openvino(model_dir, art.fp_xml, pooling=read_pooling(model_dir))
    timings["export_s"] = time.perf_counter() - t0

    beir = quality.load_beir(scifact, "train")
    queries = list(beir.queries.values())
    gated = [v for v in variants.candidates(gates.flags) if v in variants.GATED]
    backends: dict[str, Any] = {}
    for variant in gated:
        t0 = time.perf_counter()
        _make_variant(variant, art, gates, lambda: _calibration(tok, beir.corpus_texts, calibration_size))
        backends[variant] = _variant_backend(variant, art, gates, threads, dim)
        timings[f"make_{variant}_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fp32 = _variant_backend("fp32", art, gates, threads, dim)
    speed_texts = beir.corpus_texts[:SPEED_TEXTS]
    speedups = {v: _speedup_over(be, fp32, tok, speed_texts) for v, be in backends.items()}
    del fp32
    timings["speed_s"] = time.perf_counter() - t0

    log.info("gate: torch fp32 reference over %d SciFact texts", len(beir.corpus_texts) + len(queries))
    torch_be = TorchBackend(model_dir, "cpu", threads)
    ref_docs, torch_docs_s = _encode_timed(torch_be, tok, beir.corpus_texts)
    ref_q, q_s = _encode_timed(torch_be, tok, queries)
    del torch_be
    timings["torch_reference_s"] = torch_docs_s + q_s
    ndcg_torch = quality.ndcg_at_10(ref_docs, beir.corpus_ids, ref_q, beir)

    verdicts: dict[str, dict[str, Any]] = {}
    served = "fp32"
    for variant in sorted(gated, key=lambda v: -speedups[v]):
        speed = {"speedup_over_fp32": round(speedups[variant], 2)}
        if speedups[variant] <= 1.0 or served != "fp32":
            why = "no faster than fp32 here" if speedups[variant] <= 1.0 else f"slower than {served}, which passed"
            verdicts[variant] = {**speed, "passed": False, "skipped": why, "failed": []}
            continue
        backend = backends[variant]
        docs, docs_s = _encode_timed(backend, tok, beir.corpus_texts)
        q, q_s = _encode_timed(backend, tok, queries)
        timings[f"{variant}_s"] = docs_s + q_s
        cos = quality.cosine_rows(docs, ref_docs)
        ndcg = quality.ndcg_at_10(docs, beir.corpus_ids, q, beir)
        metrics = {
            "dtype": backend.dtype,
            "backend": backend.name,
            "docs_per_s": round(len(docs) / docs_s, 1),
            "cosine_vs_torch_mean": round(float(cos.mean()), 5),
            "cosine_vs_torch_min": round(float(cos.min()), 5),
            "ndcg_at_10": round(ndcg, 4),
            "ndcg_drop": round(ndcg_torch - ndcg, 4),
        }
        verdicts[variant] = {**metrics, **variants.judge(metrics), **speed}
        if variants.servable(verdicts[variant]):
            served = variant
        log.info("gate: %s %s", variant, verdicts[variant])
    backends.clear()

    record: dict[str, Any] = {
        "model_id": model_id,
        "dataset": f"SciFact (BEIR) corpus ({len(beir.corpus_texts)} abstracts) and TRAIN qrels ({len(queries)} queries)",
        "threads": threads,
        "calibration_texts": calibration_size if "int8" in gated else 0,
        "int8_dyn_recipe": ort_variant.QUANT_RECIPE if "int8-dyn" in gated else None,
        "thresholds": variants.thresholds(),
        "torch_fp32": {
            "docs_per_s": round(len(ref_docs) / torch_docs_s, 1),
            "ndcg_at_10": round(ndcg_torch, 4),
        },
        "variants": verdicts,
        "served": served,
    }
    if nfcorpus is not None and (nfcorpus / "corpus.jsonl").is_file():
        t0 = time.perf_counter()
        record["heldout"] = heldout_check(served, nfcorpus, art, gates, tok, threads, dim)
        timings["heldout_s"] = time.perf_counter() - t0
    timings["gate_s"] = time.perf_counter() - t_start
    record["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    return {**gates.write(record), "cached": False}


def _speedup_over(backend: Any, fp32: Any, tok: Tokenization, texts: list[str]) -> float:
    """fp32's time over `backend`'s on the same texts, alternating in SPEED_ROUNDS rounds so a
    swing in load hits both (after one untimed warm-up batch each)."""
    for be in (backend, fp32):
        _encode_timed(be, tok, texts[:8])
    spent = [0.0, 0.0]
    for _ in range(SPEED_ROUNDS):
        for k, be in enumerate((backend, fp32)):
            spent[k] += _encode_timed(be, tok, texts)[1]
    return spent[1] / max(spent[0], 1e-9)


def heldout_check(
    variant: str,
    nfcorpus: Path,
    art: export.Artifacts,
    gates: variants.GateStore,
    tok: Tokenization,
    threads: int,
    dim: int,
) -> dict[str, Any]:
    """NFCorpus TEST nDCG@10 of `variant` (title + text documents, exact cosine search)."""
    beir = quality.load_beir(nfcorpus, "test")
    backend = _variant_backend(variant, art, gates, threads, dim)
    docs = quality.encode_texts(backend, tok, beir.corpus_texts)
    q = quality.encode_texts(backend, tok, list(beir.queries.values()))
    return {
        "dataset": f"NFCorpus (BEIR) TEST: {len(beir.corpus_texts)} docs, {len(beir.queries)} queries",
        "variant": variant,
        "ndcg_at_10": round(quality.ndcg_at_10(docs, beir.corpus_ids, q, beir), 4),
        "mteb_torch_fp32_ndcg_at_10": NFCORPUS_MTEB_NDCG_AT_10,
    }
