"""The CPU variant choice: ISA flags, the gate's thresholds, and verdicts cached per CPU and
library versions (a different CPU or library decides again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedding import variants
from embedding.variants import GateStore

AVX2 = "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni vaes\n"
SAPPHIRE = "flags\t\t: sse avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8\n"
PASS = {"ndcg_drop": -0.002, "cosine_vs_torch_mean": 0.9969, "cosine_vs_torch_min": 0.9863}


def test_cpu_flags_keep_the_isa_that_decides_kernels() -> None:
    assert variants.cpu_flags(f"processor\t: 0\n{AVX2}") == ("avx", "avx2", "f16c", "fma")
    assert variants.cpu_flags("no flags line") == ()
    amx = variants.cpu_flags(SAPPHIRE)
    assert variants.bf16_native(amx) and variants.int8_native(amx)
    assert not variants.bf16_native(variants.cpu_flags(AVX2))
    assert not variants.int8_native(variants.cpu_flags(AVX2))


def test_candidates_follow_the_cpu() -> None:
    # AVX2 only: no static int8 (the plugin's generic int8 kernel is no faster there), no bf16
    # (it would be emulated); ONNX Runtime's dynamic int8 everywhere.
    assert variants.candidates(variants.cpu_flags(AVX2)) == ["int8-dyn", "fp32"]
    assert variants.candidates(variants.cpu_flags(SAPPHIRE)) == ["int8-dyn", "int8", "bf16", "fp32"]


@pytest.mark.parametrize(
    ("metrics", "passed", "reason"),
    [
        (PASS, True, ""),
        ({**PASS, "ndcg_drop": 0.0051}, False, "nDCG@10 drop"),
        ({**PASS, "ndcg_drop": 0.005}, True, ""),
        ({**PASS, "cosine_vs_torch_mean": 0.9949}, False, "mean cosine"),
        ({**PASS, "cosine_vs_torch_min": 0.9799}, False, "min cosine"),
    ],
)
def test_judge_applies_the_three_thresholds(metrics: dict, passed: bool, reason: str) -> None:
    verdict = variants.judge(metrics)
    assert verdict["passed"] is passed
    assert (reason in " ".join(verdict["failed"])) if reason else verdict["failed"] == []


def _int8_files(store: GateStore) -> None:
    store.int8_xml.parent.mkdir(parents=True, exist_ok=True)
    store.int8_xml.write_text("<net/>")
    store.int8_xml.with_suffix(".bin").write_bytes(b"\0")
    store.int8_dyn_onnx.parent.mkdir(parents=True, exist_ok=True)
    store.int8_dyn_onnx.write_bytes(b"\0")


def test_store_serves_the_fastest_passing_variant(tmp_path: Path) -> None:
    flags = variants.cpu_flags(SAPPHIRE)
    store = GateStore(tmp_path, "model-a", flags)
    assert store.read() is None and store.chosen() == "fp32"  # never gated here: fp32
    fail = {**PASS, **variants.judge({**PASS, "cosine_vs_torch_min": 0.9}), "speedup_over_fp32": 3.0}
    ok = {**PASS, **variants.judge(PASS), "speedup_over_fp32": 1.5}
    store.write({"variants": {"int8": fail, "bf16": ok}})
    assert store.chosen() == "bf16" and not store.allows("int8")
    store.write({"variants": {"int8": {**ok, "speedup_over_fp32": 2.0}, "bf16": ok}})
    assert store.chosen() == "bf16"  # int8 passed, but its IR is missing
    _int8_files(store)
    assert store.chosen() == "int8" and store.allows("int8")
    # The fastest that passed wins, whatever its place in ORDER.
    store.write({"variants": {"int8-dyn": {**ok, "speedup_over_fp32": 1.2}, "int8": {**ok, "speedup_over_fp32": 2.0}}})
    assert store.chosen() == "int8"
    store.write({"variants": {"int8-dyn": {**ok, "speedup_over_fp32": 2.5}, "int8": {**ok, "speedup_over_fp32": 2.0}}})
    assert store.chosen() == "int8-dyn"
    skipped = {"speedup_over_fp32": 3.0, "passed": False, "skipped": "slower than int8, which passed", "failed": []}
    store.write({"variants": {"int8-dyn": skipped, "int8": {**ok, "speedup_over_fp32": 2.0}}})
    assert store.chosen() == "int8"
    # Passing the gate is not enough: a variant no faster than fp32 here is not served.
    store.write({"variants": {"int8": {**ok, "speedup_over_fp32": 0.9}, "bf16": {**ok, "speedup_over_fp32": 1.0}}})
    assert store.chosen() == "fp32"
    store.path.write_text("{not json")
    assert store.chosen() == "fp32"


def test_verdicts_are_per_cpu_and_library_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    avx2 = GateStore(tmp_path, "model-a", variants.cpu_flags(AVX2))
    _int8_files(avx2)
    avx2.write({"variants": {"int8-dyn": {**PASS, **variants.judge(PASS), "speedup_over_fp32": 1.5}}})
    assert avx2.chosen() == "int8-dyn"
    record = avx2.read()
    assert record and record["cpu_flags"] == ["avx", "avx2", "f16c", "fma"]
    assert {"openvino", "onnxruntime", "onnx"} <= set(record["versions"])
    # Another CPU, another model or another library version never reuses that verdict.
    assert GateStore(tmp_path, "model-a", variants.cpu_flags(SAPPHIRE)).chosen() == "fp32"
    assert GateStore(tmp_path, "model-b", variants.cpu_flags(AVX2)).chosen() == "fp32"
    real = variants.library_versions()
    monkeypatch.setattr(variants, "library_versions", lambda: {**real, "onnxruntime": "0.0.1"})
    upgraded = GateStore(tmp_path, "model-a", variants.cpu_flags(AVX2))
    assert upgraded.key != avx2.key and upgraded.chosen() == "fp32"
