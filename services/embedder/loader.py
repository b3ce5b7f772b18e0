"""Choosing and loading the backend: device, backend variant, cached exports.

`auto` on CUDA is torch fp16. `auto` on the CPU is decided at start from the CPU's ISA flags and
the quality gate's verdicts cached for this CPU and these library versions
(`embedding/variants.py`): the fastest variant that passed, int8, then bf16 (CPUs with native
bf16 only), then fp32. With no verdict cached (`scripts/export_embedder_openvino.py`, or
`make embedder-int8`, never ran here) it is fp32: the OpenVINO IR exported here at first start (a
few seconds, then cached under the state directory), or torch when OpenVINO is unusable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding import export, ort_variant
from embedding.runtime import (
    Backend,
    OpenVinoBackend,
    Tokenization,
    TorchBackend,
    cpu_threads,
    cuda_available,
    read_max_seq_length,
    read_pooling,
    resolve_device,
    resolve_model,
)

from .config import BACKENDS, EmbedderConfig

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A ready backend plus what callers and cache keys need to know about it."""

    backend: Backend
    tokenization: Tokenization
    model_id: str
    model_dir: Path
    max_seq_length: int
    load_time_s: float

    @property
    def model_key(self) -> str:
        """Identifies the vectors this model produces (cache keys use it)."""
        return f"{self.model_id}|{self.backend.name}|{self.backend.dtype}"

    def run_batch(self, items: list[tuple[int, ...]]) -> np.ndarray:
        ids, mask = self.tokenization.pad(items)
        return self.backend.run(ids, mask)


# The backend name of each CPU variant.
VARIANT_BACKENDS = {
    "int8-dyn": "onnxruntime-int8",
    "int8": "openvino-int8",
    "bf16": "openvino-bf16",
    "fp32": "openvino",
}


def choose_backend(requested: str, device: str, variant: str) -> str:
    """The backend to load for `requested` on `device`, where `variant` is the CPU variant the
    gate allows (`GateStore.chosen()`). Pure; unit-tested."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}: use one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "torch"
    return VARIANT_BACKENDS[variant]


def load_model(cfg: EmbedderConfig) -> LoadedModel:
    """Loads the configured model and backend (blocking; seconds)."""
    t0 = time.perf_counter()
    model_dir, model_id = resolve_model(cfg.model_dir, cfg.model_id)
    max_len = read_max_seq_length(model_dir)
    tokenization = Tokenization(model_dir, max_len)
    device = resolve_device(cfg.device, cuda_available())
    threads = cpu_threads(cfg.threads)
    artifacts = export.Artifacts(Path(cfg.state_dir), model_dir)
    gates = artifacts.gates() if not device.startswith("cuda") and cfg.backend == "auto" else None
    choice = choose_backend(cfg.backend, device, gates.chosen() if gates else "fp32")
    backend: Backend
    if choice == "torch":
        backend = TorchBackend(model_dir, device, threads)
    elif choice in OPENVINO_PRECISION or choice == "onnxruntime-int8":
        try:
            backend = _load_cpu_variant(artifacts, model_dir, choice, threads)
        except Exception as err:
            if cfg.backend != "auto":
                raise
            log.warning("the %s backend is unusable (%s); falling back to torch", choice, err)
            backend = TorchBackend(model_dir, "cpu", threads)
    else:  # pragma: no cover - choose_backend validated it
        raise ValueError(choice)
    model = LoadedModel(backend, tokenization, model_id, model_dir, max_len, 0.0)
    model.load_time_s = time.perf_counter() - t0
    extra = {
        "model_id": model_id,
        "backend": backend.name,
        "device": backend.device,
        "dtype": backend.dtype,
        "load_s": round(model.load_time_s, 2),
    }
    if gates is not None:
        extra.update(cpu_flags=" ".join(gates.flags), gate_key=gates.key, gate_recorded=gates.read() is not None)
    log.info("model loaded", extra=extra)
    return model


# The OpenVINO backends and the inference precision each asks the CPU plugin for.
OPENVINO_PRECISION = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": ""}


def _load_cpu_variant(artifacts: export.Artifacts, model_dir: Path, choice: str, threads: int) -> Backend:
    dim = export.dimension_of(model_dir)
    if choice in ("openvino-int8", "onnxruntime-int8"):
        gates = artifacts.gates()
        variant = "int8" if choice == "openvino-int8" else "int8-dyn"
        if not gates.allows(variant):
            raise FileNotFoundError(
                f"no {variant} model that passed the quality gate on this CPU under {gates.dir}; "
                "run `make embedder-int8` (scripts/export_embedder_openvino.py) first"
            )
        if variant == "int8-dyn":
            return ort_variant.OnnxRuntimeBackend(
                gates.int8_dyn_onnx, threads, name=choice, dtype="int8", dimension=dim
            )
        return OpenVinoBackend(gates.int8_xml, threads, name=choice, dtype="int8", dimension=dim)
    if not artifacts.fp_ready():
        export.export_openvino(model_dir, artifacts.fp_xml, pooling=read_pooling(model_dir))
    precision = OPENVINO_PRECISION[choice]
    return OpenVinoBackend(artifacts.fp_xml, threads, name=choice, dtype="", dimension=dim, precision=precision)
