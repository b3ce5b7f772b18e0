"""Makes the embedder's CPU variants and runs the quality gate that decides which one the
service's `auto` backend serves on this CPU (`services/embedder/gate.py` says how).

    .venv/bin/python scripts/export_embedder_openvino.py [--state-dir DIR] [--scifact DIR]
        [--nfcorpus DIR] [--calibration-size N] [--force]

Exports the fp32 OpenVINO IR (if missing), makes the candidate variants for this CPU (ONNX
Runtime dynamic int8; NNCF static int8 where VNNI/AMX exist), measures each against fp32, embeds
SciFact (corpus and TRAIN queries) with torch fp32 and with the fastest candidates until one
passes, and records the verdicts
under `<state dir>/models/<model>/variants/<gate key>/gate.json`, keyed by the model, this CPU's
ISA flags and the library versions. Prints the record (JSON). A recorded verdict is reused
unless `--force`. `make embedder-int8` runs it; `bench/embedder.py` runs it when it is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from embedding.runtime import cpu_threads
from kernel.config import load_env
from services.embedder.config import EmbedderConfig
from services.embedder.gate import run_gate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_env(EmbedderConfig)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", default=cfg.state_dir, help="the embedder's state dir (DDNRAG_EMBEDDER_STATE_DIR)")
    ap.add_argument("--scifact", default=str(DATA / "scifact"), help="BEIR SciFact dir (corpus, TRAIN qrels)")
    ap.add_argument("--nfcorpus", default=str(DATA / "nfcorpus"), help="BEIR NFCorpus dir (held-out TEST check)")
    ap.add_argument("--calibration-size", type=int, default=300, help="SciFact abstracts NNCF calibrates on")
    ap.add_argument("--threads", type=int, default=cfg.threads, help="CPU threads (0: all this process may use)")
    ap.add_argument("--force", action="store_true", help="run again even if a verdict is recorded for this CPU")
    args = ap.parse_args()
    record = run_gate(
        Path(args.state_dir),
        Path(args.scifact),
        Path(args.nfcorpus),
        threads=cpu_threads(args.threads),
        model_dir_cfg=cfg.model_dir,
        calibration_size=args.calibration_size,
        force=args.force,
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
