"""Inference runtimes ("backends"): padded token ids in, mean-pooled (not yet normalised) vectors out.

Every backend shares one tokenizer (`Tokenization`), so token counts, truncation and cache keys
do not depend on the backend. A backend only runs the transformer and pools:

- `TorchBackend`: the sentence-transformers model itself (its Transformer and Pooling modules),
  on CUDA in fp16 when present, else CPU fp32.
- `OpenVinoBackend`: an OpenVINO IR exported from the same weights (`export.py`), compiled for the
  CPU; the IR's graph already contains the mean pooling.
- `OnnxRuntimeBackend` (in `ort_variant.py`, apart so that the in-process encoder's users never
  reach ONNX Runtime): the dynamic int8 variant.

All methods are blocking; the batcher calls them from its one inference thread.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .packaged import DEFAULT_MODEL_ID, packaged_model_dir

log = logging.getLogger(__name__)


def resolve_model(model_dir: str, model_id: str) -> tuple[Path, str]:
    """The model directory and the id to report: the packaged model unless `model_dir` is set."""
    if model_dir:
        path = Path(model_dir).expanduser().resolve()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a sentence-transformers model directory (no modules.json)")
        return path, model_id or path.name
    return packaged_model_dir(), model_id or DEFAULT_MODEL_ID


def resolve_device(requested: str, cuda_available: bool) -> str:
    """`auto` picks CUDA when present, else CPU; `cuda` without a GPU falls back to CPU (logged)."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}: use auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda:0"
    if requested == "cuda":
        log.warning("DDNRAG_EMBEDDER_DEVICE=cuda but no CUDA device is visible; falling back to the CPU")
    return "cpu"


def device_name(device: str) -> str:
    """What `device` is, for people: the GPU's name ("NVIDIA H200") or the CPU's model name.
    Blocking (reads /proc/cpuinfo or asks CUDA): call it from a thread."""
    if device.startswith("cuda"):
        try:
            import torch

            return str(torch.cuda.get_device_name(int(device.partition(":")[2] or 0)))
        except Exception:  # noqa: BLE001 - a name is a nicety; the device itself works
            return "CUDA GPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU"
        return False


def cpu_threads(threads: int) -> int:
    if threads > 0:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Encoded:
    """One tokenised text: its ids (special tokens included, cut to the maximum) and whether it
    was cut."""

    ids: tuple[int, ...]
    truncated: bool


class Tokenization:
    """The model's own fast tokenizer (`tokenizer.json`), cutting at the model's maximum length."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def encode(self, texts: list[str]) -> list[Encoded]:
        encs = self.tokenizer.encode_batch(texts)
        return [Encoded(tuple(e.ids), bool(e.overflowing)) for e in encs]

    def pad(self, items: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pads `items` to the longest: (input_ids, attention_mask), both int64 (n, L)."""
        width = max(len(x) for x in items)
        ids = np.full((len(items), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), width), dtype=np.int64)
        for i, x in enumerate(items):
            ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        return ids, mask


def read_max_seq_length(model_dir: Path, default: int = 512) -> int:
    cfg = model_dir / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return default


def read_pooling(model_dir: Path) -> str:
    """The pooling mode of a sentence-transformers directory: "mean" or "cls"."""
    cfg = model_dir / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return "mean"
    data = json.loads(cfg.read_text())
    if data.get("pooling_mode_mean_tokens"):
        return "mean"
    if data.get("pooling_mode_cls_token"):
        return "cls"
    raise ValueError(f"unsupported pooling in {cfg}: only mean and cls pooling are supported")


class Backend(Protocol):
    """Runs the model on one padded batch."""

    name: str
    device: str
    dtype: str
    dimension: int

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(n, L) int64 ids and mask -> (n, dimension) float32 pooled vectors, not normalised."""
        ...


def pool_np(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    if mode == "cls":
        return hidden[:, 0, :].astype(np.float32)
    m = mask[:, :, None].astype(np.float32)
    return ((hidden.astype(np.float32) * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)).astype(np.float32)


class TorchBackend:
    """The sentence-transformers model in torch: CUDA fp16 when the device is CUDA, else fp32."""

    name = "torch"

    def __init__(self, model_dir: Path, device: str, threads: int, *, half: bool | None = None) -> None:
        """`half` (fp16 weights and activations) defaults to on for CUDA and off for the CPU;
        tests turn it on for the CPU to exercise the GPU path's conversion."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self.torch = torch
        if device == "cpu":
            torch.set_num_threads(threads)
        self.device = device
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        if device.startswith("cuda") if half is None else half:
            self.model.half()
            self.dtype = "float16"
        else:
            self.dtype = "float32"
        self.model.eval()
        self.transformer = self.model[0]
        self.pooling = self.model[1]
        dim = self.model.get_embedding_dimension()
        self.dimension = int(dim) if dim else 0

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
            mask = torch.from_numpy(attention_mask).to(self.device, non_blocking=True)
            feats: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
            out = self.pooling(self.transformer(feats))
            return out["sentence_embedding"].float().cpu().numpy()


class OpenVinoBackend:
    """An exported OpenVINO IR (pooling inside the graph), compiled for the CPU.

    `precision` sets the plugin's inference precision for the floating-point parts: "f32" (the
    fp32 variant, also on CPUs whose default would be bf16), "bf16" (native only with
    `avx512_bf16`/AMX; elsewhere the plugin stays in f32, and `dtype` says so), or "" (the
    plugin's default). One inference stream with all the threads: the batcher runs one batch at
    a time, so a second stream would only halve each batch's threads."""

    def __init__(
        self, xml_path: Path, threads: int, *, name: str, dtype: str, dimension: int, precision: str = ""
    ) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(str(xml_path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.name = name
        self.device = "cpu"
        actual = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.dtype = dtype if dtype == "int8" else _ov_precision_name(actual)
        self.dimension = dimension

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        res = self.request.infer({"input_ids": input_ids, "attention_mask": attention_mask}, share_inputs=True)
        return np.array(res[self.compiled.output(0)], dtype=np.float32, copy=True)


def _ov_precision_name(p: str) -> str:
    p = p.lower()
    if "bf16" in p or "bfloat16" in p:
        return "bfloat16"
    if "f16" in p or "float16" in p:
        return "float16"
    return "float32"
