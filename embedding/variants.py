"""Which CPU variant of the model to serve: the CPU's ISA flags, the quality gate's thresholds,
its cached verdicts and the serving order.

Variants, fastest first where the CPU runs them natively:
- `int8`: NNCF static int8 of the OpenVINO IR (integer kernels: VNNI/AMX where present, AVX2
  `vpmaddubsw` otherwise);
- `bf16`: the fp32 IR run by the OpenVINO CPU plugin in bfloat16, only on CPUs with native
  bf16 (`avx512_bf16` or AMX): elsewhere it would be emulated and slower than fp32;
- `fp32`: the IR in fp32: the reference's own arithmetic, never gated, always the fallback.

The gate (`GATE_*`, the issue's thresholds) protects retrieval quality: a variant passes when its
SciFact TRAIN nDCG@10 is at most 0.005 below torch fp32's, and its vectors' cosine to torch fp32's
on the same texts has mean >= 0.995 and min >= 0.98. A variant that passed is served only if
the gate also measured it faster than fp32 on this CPU (`servable`): on an AVX2-only EPYC the
OpenVINO CPU plugin runs int8 matrix products with its generic `jit_gemm_I8` kernel and fp32 ones
with MLAS, and int8 was no faster there. Verdicts are stored per *gate key*: the
model's files, the CPU's relevant ISA flags and the versions of every library that shapes the
vectors (OpenVINO, NNCF, torch, sentence-transformers, transformers, tokenizers). A different CPU
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
LIBRARIES = ("openvino", "nncf", "torch", "sentence-transformers", "transformers", "tokenizers", "numpy")

GATE_MAX_NDCG_DROP = 0.005
GATE_MIN_COSINE_MEAN = 0.995
GATE_MIN_COSINE_MIN = 0.98

# Serving order, fastest first; fp32 is always allowed.
ORDER = ("int8", "bf16", "fp32")
GATED = ("int8", "bf16")


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
    """The variants worth gating on this CPU, fastest first (fp32 last, never gated)."""
    flags = set(flags)
    out = ["int8"]
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


def gate_key(model_fingerprint: str, flags: Iterable[str], versions: Mapping[str, str]) -> str:
    blob = json.dumps({"model": model_fingerprint, "flags": sorted(flags), "versions": dict(versions)}, sort_keys=True)
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
        under this key makes it `servable` (and, for int8, its IR is present)."""
        if variant == "fp32":
            return True
        record = self.read()
        ok = servable((record or {}).get("variants", {}).get(variant))
        if ok and variant == "int8":
            return self.int8_xml.is_file() and self.int8_xml.with_suffix(".bin").is_file()
        return ok

    def chosen(self) -> str:
        """The variant `auto` serves: the fastest that passed on this CPU, in `ORDER`; fp32 when
        nothing was gated under this key."""
        return next(v for v in candidates(self.flags) if self.allows(v))
