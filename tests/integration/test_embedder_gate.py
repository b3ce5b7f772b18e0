"""The quality gate end to end on a tiny BEIR set it writes itself: real OpenVINO and ONNX exports,
real ONNX Runtime dynamic int8 (and NNCF static int8 on CPUs with VNNI/AMX), torch fp32 as the
reference, verdicts recorded for this CPU and reused, and the
held-out check of the served variant. Slow (NNCF and two model loads): `make test-slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedding import export, variants
from embedding.packaged import packaged_model_dir
from services.embedder.gate import run_gate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TOPICS = [
    ("storage", "Object storage keeps data as objects in a flat namespace addressed by keys."),
    ("gpu", "GPUs accelerate dense linear algebra for training neural networks."),
    ("fs", "Parallel file systems stripe files across many servers for bandwidth."),
    ("net", "RDMA networks move data between hosts without involving the remote CPU."),
    ("bio", "Proteins fold into three-dimensional structures that determine their function."),
    ("med", "Vaccines train the immune system to recognise a pathogen before infection."),
]


def _beir(root: Path, split: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for i, (topic, text) in enumerate(TOPICS):
            for k in range(3):
                f.write(json.dumps({"_id": f"{topic}{k}", "title": topic, "text": f"{text} Note {i}.{k}."}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for topic, text in TOPICS:
            f.write(json.dumps({"_id": f"q-{topic}", "text": text.split(" ", 3)[-1]}) + "\n")
    with (root / "qrels" / f"{split}.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for topic, _ in TOPICS:
            f.write(f"q-{topic}\t{topic}0\t1\n")
    return root


def test_gate_records_verdicts_for_this_cpu_and_reuses_them(tmp_path: Path) -> None:
    scifact, nfcorpus = _beir(tmp_path / "scifact", "train"), _beir(tmp_path / "nfcorpus", "test")
    state = tmp_path / "state"
    record = run_gate(state, scifact, nfcorpus, threads=1, calibration_size=4)
    assert record["cached"] is False
    gates = export.Artifacts(state, packaged_model_dir()).gates()
    assert set(record["variants"]) == set(variants.candidates(gates.flags)) - {"fp32"}
    for name, verdict in record["variants"].items():
        assert verdict["speedup_over_fp32"] > 0
        if "skipped" in verdict:  # no faster than fp32 here, or slower than one that passed
            assert verdict["passed"] is False
            continue
        assert verdict["dtype"] in ("int8", "bfloat16") and 0.9 < verdict["cosine_vs_torch_mean"] <= 1.0, name
        assert verdict["passed"] is variants.judge(verdict)["passed"]
        assert f"{name}_s" in record["timings_s"]
    assert record["key"] == gates.key and record["cpu_flags"] == list(variants.cpu_flags())
    assert gates.int8_dyn_onnx.is_file() and gates.int8_xml.is_file() is ("int8" in record["variants"])
    assert record["served"] == gates.chosen()
    assert record["heldout"]["variant"] == record["served"] and 0.0 <= record["heldout"]["ndcg_at_10"] <= 1.0
    assert {"export_s", "make_int8-dyn_s", "speed_s", "torch_reference_s", "gate_s"} <= set(record["timings_s"])
    again = run_gate(state, scifact, nfcorpus, threads=1, calibration_size=4)
    assert again["cached"] is True and again["variants"] == record["variants"]
