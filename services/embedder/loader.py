"""Choosing and loading the backend: device, backend variant, cached exports.

`auto` on CUDA is torch fp16. `auto` on the CPU is the fastest cached OpenVINO variant that
passed its quality gate: int8 when `scripts/export_embedder_openvino.py` (or the bench) built it
and recorded a passing gate, else the OpenVINO IR exported here at first start (a few seconds,
then cached under the state directory), else torch when OpenVINO is unusable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding import export
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


def choose_backend(requested: str, device: str, int8_ready: bool) -> str:
    """The backend to load for `requested` on `device` (pure; unit-tested)."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}: use one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "torch"
    return "openvino-int8" if int8_ready else "openvino"


def load_model(cfg: EmbedderConfig) -> LoadedModel:
    """Loads the configured model and backend (blocking; seconds)."""
    t0 = time.perf_counter()
    model_dir, model_id = resolve_model(cfg.model_dir, cfg.model_id)
    max_len = read_max_seq_length(model_dir)
    tokenization = Tokenization(model_dir, max_len)
    device = resolve_device(cfg.device, cuda_available())
    threads = cpu_threads(cfg.threads)
    artifacts = export.Artifacts(Path(cfg.state_dir), model_dir)
    choice = choose_backend(cfg.backend, device, artifacts.int8_ready())
    backend: Backend
    if choice == "torch":
        backend = TorchBackend(model_dir, device, threads)
    elif choice in ("openvino", "openvino-int8"):
        try:
            backend = _load_openvino(artifacts, model_dir, choice, threads)
        except Exception as err:
            if cfg.backend != "auto":
                raise
            log.warning("OpenVINO is unusable (%s); falling back to torch", err)
            backend = TorchBackend(model_dir, "cpu", threads)
    else:  # pragma: no cover - choose_backend validated it
        raise ValueError(choice)
    model = LoadedModel(backend, tokenization, model_id, model_dir, max_len, 0.0)
    model.load_time_s = time.perf_counter() - t0
    log.info(
        "model loaded",
        extra={
            "model_id": model_id,
            "backend": backend.name,
            "device": backend.device,
            "dtype": backend.dtype,
            "load_s": round(model.load_time_s, 2),
        },
    )
    return model


def _load_openvino(artifacts: export.Artifacts, model_dir: Path, choice: str, threads: int) -> OpenVinoBackend:
    dim = export.dimension_of(model_dir)
    if choice == "openvino-int8":
        if not artifacts.int8_ready():
            raise FileNotFoundError(
                f"no int8 model that passed the quality gate under {artifacts.root}; "
                "run scripts/export_embedder_openvino.py first"
            )
        return OpenVinoBackend(artifacts.int8_xml, threads, name="openvino-int8", dtype="int8", dimension=dim)
    if not artifacts.fp_ready():
        export.export_openvino(model_dir, artifacts.fp_xml, pooling=read_pooling(model_dir))
    return OpenVinoBackend(artifacts.fp_xml, threads, name="openvino", dtype="", dimension=dim)
