"""Which CPU variant of the model to serve: the CPU's ISA flags, the quality gate's thresholds,
its cached verdicts and the serving order.

Variants:
- `int8-dyn`: ONNX Runtime dynamic int8 (`embedding/onnx_export.py`): the graph's attention,
  GELU and layer norms fused, int8 weights (per channel, 7-bit: `reduce_range`, so AVX2's
  `vpmaddubsw` cannot saturate) and activations quantized per batch at run time. The FFN
  down-projections stay fp32 (they carry the post-GELU outliers). Gated on every CPU;
- `int8`: NNCF static int8 of the OpenVINO IR, gated only where int8 dot products are native
  (VNNI/AMX): on an AVX2-only EPYC the OpenVINO CPU plugin runs it with its generic
  `jit_gemm_I8` kernel, measured no faster than fp32 (and NNCF's calibration costs minutes);
- `bf16`: the fp32 IR run by the OpenVINO CPU plugin in bfloat16, only on CPUs with native
  bf16 (`avx512_bf16` or AMX): elsewhere it would be emulated and slower than fp32;
- `fp32`: the IR in fp32: the reference's own arithmetic, never gated, always the fallback.

The service serves the variant the gate measured fastest among those that passed (`chosen`).
The gate (`GATE_*`, the issue's thresholds) protects retrieval quality: a variant passes when its
SciFact TRAIN nDCG@10 is at most 0.005 below torch fp32's, and its vectors' cosine to torch fp32's
on the same texts has mean >= 0.995 and min >= 0.98. A variant that passed is served only if
the gate also measured it faster than fp32 on this CPU (`servable`). Verdicts are stored per *gate key*: the
model's files, the CPU's relevant ISA flags and the versions of every library that shapes the
vectors (OpenVINO, NNCF, ONNX Runtime, onnx, torch, sentence-transformers, transformers, tokenizers). A different CPU
or an upgraded library has another key, so it decides again instead of trusting a verdict made
elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

# The flags that decide which kernels the runtimes use (and so the variants' speed and numbers).
ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
# The libraries whose versions change the vectors a variant produces (or its reference's).
LIBRARIES = (
    "openvino",
    "nncf",
    "onnxruntime",
    "onnx",
    "torch",
    "sentence-transformers",
    "transformers",
    "tokenizers",
    "numpy",
)

GATE_MAX_NDCG_DROP = 0.005
GATE_MIN_COSINE_MEAN = 0.995
GATE_MIN_COSINE_MIN = 0.98

# Every variant; fp32 is always allowed and never gated.
ORDER = ("int8-dyn", "int8", "bf16", "fp32")
GATED = ("int8-dyn", "int8", "bf16")


def cpu_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The ISA flags of `ISA_FLAGS` this CPU has (sorted), from /proc/cpuinfo (or `cpuinfo`)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:  # not Linux: no flags known, so only fp32 is tried
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            have = set(line.partition(":")[2].split())
            return tuple(sorted(f for f in ISA_FLAGS if f in have))
    return ()


def bf16_native(flags: Iterable[str]) -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def int8_native(flags: Iterable[str]) -> bool:
    """Whether int8 dot products have their own instructions (VNNI or AMX); without them AVX2's
    `vpmaddubsw` still runs int8, at a smaller gain."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def candidates(flags: Iterable[str]) -> list[str]:
    """The variants worth gating on this CPU (fp32 last, never gated)."""
    flags = set(flags)
    out = ["int8-dyn"]
    if int8_native(flags):
        out.append("int8")
    if bf16_native(flags):
        out.append("bf16")
    return [*out, "fp32"]


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


# The int8-dyn recipe (embedding/ort_variant.py applies it). It is part of the gate key, so a
# verdict never outlives the recipe it judged.
INT8_DYN_RECIPE: dict[str, Any] = {
    "per_channel": True,
    "reduce_range": True,
    "weight_type": "QInt8",
    "op_types": ["MatMul"],
    "kept_fp32": "ffn output.dense, and every MatMul of the last layer",
}


def gate_key(model_fingerprint: str, flags: Iterable[str], versions: Mapping[str, str]) -> str:
    blob = json.dumps(
        {
            "model": model_fingerprint,
            "flags": sorted(flags),
            "versions": dict(versions),
            "recipes": {"int8-dyn": INT8_DYN_RECIPE},
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def judge(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's verdict on one variant's measurements (`ndcg_drop`, `cosine_vs_torch_mean`,
    `cosine_vs_torch_min`), with the reason for a refusal."""
    drop = float(metrics["ndcg_drop"])
    mean = float(metrics["cosine_vs_torch_mean"])
    low = float(metrics["cosine_vs_torch_min"])
    failed = []
    if drop > GATE_MAX_NDCG_DROP:
        failed.append(f"nDCG@10 drop {drop:.4f} > {GATE_MAX_NDCG_DROP}")
    if mean < GATE_MIN_COSINE_MEAN:
        failed.append(f"mean cosine {mean:.5f} < {GATE_MIN_COSINE_MEAN}")
    if low < GATE_MIN_COSINE_MIN:
        failed.append(f"min cosine {low:.5f} < {GATE_MIN_COSINE_MIN}")
    return {"passed": not failed, "failed": failed}


def servable(verdict: Mapping[str, Any] | None) -> bool:
    """A gated variant is served when it passed the gate and ran faster than fp32 on this CPU
    (int8 without VNNI or AMX may not: the gate measures it)."""
    return bool(verdict and verdict.get("passed") and float(verdict.get("speedup_over_fp32", 0.0)) > 1.0)


def thresholds() -> dict[str, float]:
    return {
        "max_ndcg_drop": GATE_MAX_NDCG_DROP,
        "min_cosine_mean": GATE_MIN_COSINE_MEAN,
        "min_cosine_min": GATE_MIN_COSINE_MIN,
    }


class GateStore:
    """The variants made and judged under one gate key: `<models root>/variants/<key>/` holds the
    int8 IR (`int8/model.xml`) and the verdicts (`gate.json`, written last and atomically), so a
    verdict always names the very files it judged."""

    def __init__(self, root: Path, model_fingerprint: str, flags: Iterable[str] | None = None) -> None:
        self.flags = tuple(sorted(cpu_flags() if flags is None else flags))
        self.versions = library_versions()
        self.key = gate_key(model_fingerprint, self.flags, self.versions)
        self.dir = root / "variants" / self.key
        self.path = self.dir / "gate.json"

    @property
    def int8_xml(self) -> Path:
        return self.dir / "int8" / "model.xml"

    @property
    def int8_dyn_onnx(self) -> Path:
        return self.dir / "int8-dyn" / "model.onnx"

    def files_present(self, variant: str) -> bool:
        """Whether the files `variant` runs from were made under this key (bf16 and fp32 run the
        shared fp32 IR)."""
        if variant == "int8":
            return self.int8_xml.is_file() and self.int8_xml.with_suffix(".bin").is_file()
        if variant == "int8-dyn":
            return self.int8_dyn_onnx.is_file()
        return True

    def read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("key") == self.key else None

    def write(self, record: Mapping[str, Any]) -> dict[str, Any]:
        full = {**record, "key": self.key, "cpu_flags": list(self.flags), "versions": self.versions}
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(full, indent=2))
        os.replace(tmp, self.path)
        return full

    def allows(self, variant: str) -> bool:
        """Whether `variant` may be served here: fp32 always; a gated variant when its verdict
        under this key makes it `servable` and its files are present."""
        if variant == "fp32":
            return True
        record = self.read()
        return servable((record or {}).get("variants", {}).get(variant)) and self.files_present(variant)

    def chosen(self) -> str:
        """The variant `auto` serves: of those that passed on this CPU, the one the gate measured
        fastest (ties in `ORDER`); fp32 when none passed or nothing was gated under this key."""
        verdicts = (self.read() or {}).get("variants", {})
        return fastest([v for v in candidates(self.flags) if v != "fp32" and self.allows(v)], verdicts)


def fastest(passed: Iterable[str], verdicts: Mapping[str, Mapping[str, Any]]) -> str:
    """The variant of `passed` with the highest measured `speedup_over_fp32`, else fp32."""
    best = sorted(passed, key=lambda v: (-float(verdicts[v].get("speedup_over_fp32", 0.0)), ORDER.index(v)))
    return best[0] if best else "fp32"
