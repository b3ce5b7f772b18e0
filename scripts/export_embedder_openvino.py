"""Exports the embedder's model for OpenVINO, quantises it to static int8 with NNCF, and runs the
quality gate that decides whether the service may use the int8 variant.

    .venv/bin/python scripts/export_embedder_openvino.py [--state-dir DIR] [--scifact DIR]

- the fp IR (`openvino/`) is exported if missing (the service also does this at first start);
- int8: NNCF post-training static quantisation (transformer preset), calibrated on
  `--calibration-size` SciFact corpus abstracts (a fixed random sample);
- the gate: cosine of int8 vs torch fp32 over the whole SciFact corpus (min >= 0.99) and SciFact
  TRAIN nDCG@10 (int8 may drop at most 0.005 below torch). `gate.json` beside the int8 model
  records every number and `passed`; the service's `auto` backend uses int8 only when it passed.

Takes a few minutes on 2 CPU cores (torch embeds the 5,183 abstracts once; the result is cached
under the state directory for later runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from embedding import export
from embedding.runtime import (
    OpenVinoBackend,
    Tokenization,
    TorchBackend,
    cpu_threads,
    read_max_seq_length,
    read_pooling,
    resolve_model,
)
from kernel.config import load_env
from services.embedder import quality
from services.embedder.config import EmbedderConfig

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("export_embedder")


def _timed_encode(backend: object, tok: Tokenization, texts: list[str]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    vecs = quality.encode_texts(backend, tok, texts)  # type: ignore[arg-type]
    return vecs, len(texts) / (time.perf_counter() - t0)


def run(state_dir: Path, scifact: Path, calibration_size: int, threads: int, model_dir_cfg: str) -> dict:
    t_start = time.perf_counter()
    model_dir, model_id = resolve_model(model_dir_cfg, "")
    tok = Tokenization(model_dir, read_max_seq_length(model_dir))
    art = export.Artifacts(state_dir, model_dir)
    dim = export.dimension_of(model_dir)
    if not art.fp_ready():
        export.export_openvino(model_dir, art.fp_xml, pooling=read_pooling(model_dir))

    beir = quality.load_beir(scifact, "train")
    texts = beir.corpus_texts
    queries = list(beir.queries.values())
    rng = random.Random(1234)
    calib_texts = rng.sample(texts, min(calibration_size, len(texts)))
    calib = []
    for enc in tok.encode(calib_texts):
        ids, mask = tok.pad([enc.ids])
        calib.append((ids, mask))
    t0 = time.perf_counter()
    export.quantize_int8(art.fp_xml, art.int8_xml, calib)
    quantize_s = time.perf_counter() - t0

    ref_path = art.root / "reference" / "scifact_torch_fp32.npz"
    if ref_path.is_file():
        ref = np.load(ref_path)
        ref_docs, ref_q, torch_dps = ref["docs"], ref["queries"], float(ref["docs_per_s"])
    else:
        torch_be = TorchBackend(model_dir, "cpu", threads)
        ref_docs, torch_dps = _timed_encode(torch_be, tok, texts)
        ref_q = quality.encode_texts(torch_be, tok, queries)
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(ref_path, docs=ref_docs, queries=ref_q, docs_per_s=torch_dps)
        del torch_be
    ndcg_torch = quality.ndcg_at_10(ref_docs, beir.corpus_ids, ref_q, beir)

    report: dict = {
        "model_id": model_id,
        "dataset": "SciFact (BEIR), corpus 5,183 abstracts, train qrels",
        "threads": threads,
        "calibration_texts": len(calib_texts),
        "quantize_s": round(quantize_s, 1),
        "torch_fp32": {"docs_per_s": round(torch_dps, 1), "ndcg_at_10": round(ndcg_torch, 4)},
    }
    for name, xml, dtype in (("openvino", art.fp_xml, ""), ("openvino-int8", art.int8_xml, "int8")):
        be = OpenVinoBackend(xml, threads, name=name, dtype=dtype, dimension=dim)
        docs, dps = _timed_encode(be, tok, texts)
        q = quality.encode_texts(be, tok, queries)
        cos = quality.cosine_rows(docs, ref_docs)
        ndcg = quality.ndcg_at_10(docs, beir.corpus_ids, q, beir)
        report[name.replace("-", "_")] = {
            "dtype": be.dtype,
            "docs_per_s": round(dps, 1),
            "cosine_vs_torch_mean": round(float(cos.mean()), 5),
            "cosine_vs_torch_min": round(float(cos.min()), 5),
            "ndcg_at_10": round(ndcg, 4),
            "ndcg_drop": round(ndcg_torch - ndcg, 4),
        }
    int8 = report["openvino_int8"]
    export.write_gate(
        art,
        {
            **report,
            "cosine_min": int8["cosine_vs_torch_min"],
            "ndcg_drop": int8["ndcg_drop"],
            "gate_s": round(time.perf_counter() - t_start, 1),
        },
    )
    gate = art.gate() or {}
    report["int8_gate_passed"] = bool(gate.get("passed"))
    report["gate_path"] = str(art.gate_path)
    return report


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_env(EmbedderConfig)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", default=cfg.state_dir, help="the embedder's state dir (DDNRAG_EMBEDDER_STATE_DIR)")
    ap.add_argument("--scifact", default=str(ROOT.parent / "shared" / "data" / "scifact"), help="BEIR SciFact dir")
    ap.add_argument("--calibration-size", type=int, default=300)
    ap.add_argument("--threads", type=int, default=cfg.threads)
    args = ap.parse_args()
    report = run(
        Path(args.state_dir), Path(args.scifact), args.calibration_size, cpu_threads(args.threads), cfg.model_dir
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
