"""Device and backend choice (the GPU path's fallbacks), tokenisation, and the torch backend's
fp16 path run on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedding import export
from embedding.packaged import DEFAULT_MODEL_ID, packaged_model_dir
from embedding.runtime import (
    Tokenization,
    TorchBackend,
    read_max_seq_length,
    read_pooling,
    resolve_device,
    resolve_model,
)
from services.embedder.core import default_batch_tokens, l2_normalize
from services.embedder.loader import choose_backend


def test_device_auto_prefers_cuda_and_falls_back_to_cpu() -> None:
    assert resolve_device("auto", cuda_available=True) == "cuda:0"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("cuda", cuda_available=False) == "cpu"  # asked for a GPU, none there
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu", cuda_available=False)


def test_backend_choice() -> None:
    assert choose_backend("auto", "cuda:0", "int8") == "torch"  # GPU: torch fp16
    assert choose_backend("auto", "cpu", "int8") == "openvino-int8"
    assert choose_backend("auto", "cpu", "int8-dyn") == "onnxruntime-int8"
    assert choose_backend("auto", "cuda:0", "int8-dyn") == "torch"
    assert choose_backend("auto", "cpu", "bf16") == "openvino-bf16"
    assert choose_backend("auto", "cpu", "fp32") == "openvino"
    assert choose_backend("torch", "cpu", "int8") == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        choose_backend("tensorrt", "cpu", "fp32")


def test_batch_budget_is_larger_on_gpu() -> None:
    assert default_batch_tokens("cuda:0") > default_batch_tokens("cpu")


def test_packaged_model_resolves_offline(tmp_path: Path) -> None:
    path, model_id = resolve_model("", "")
    assert path == packaged_model_dir() and model_id == DEFAULT_MODEL_ID
    assert read_max_seq_length(path) == 256 and read_pooling(path) == "mean"
    assert export.dimension_of(path) == 384
    with pytest.raises(FileNotFoundError, match="not a sentence-transformers model"):
        resolve_model(str(tmp_path), "")


def test_tokenization_truncates_and_flags() -> None:
    tok = Tokenization(packaged_model_dir(), 256)
    short, empty, long = tok.encode(["hello world", "", "word " * 1000])
    assert len(short.ids) == 4 and not short.truncated
    assert len(empty.ids) == 2 and not empty.truncated  # [CLS] [SEP]
    assert len(long.ids) == 256 and long.truncated
    assert long.ids[-1] == short.ids[-1]  # still ends with [SEP]
    ids, mask = tok.pad([short.ids, empty.ids])
    assert ids.shape == mask.shape == (2, 4) and ids.dtype == np.int64
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert ids[1, 2:].tolist() == [tok.pad_id, tok.pad_id]


def test_l2_normalize_handles_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_torch_fp16_path_runs_on_cpu_close_to_fp32() -> None:
    model_dir = packaged_model_dir()
    tok = Tokenization(model_dir, 256)
    ids, mask = tok.pad([e.ids for e in tok.encode(["GPUs speed up embedding.", "Object storage at scale."])])
    fp32 = TorchBackend(model_dir, "cpu", 1)
    fp16 = TorchBackend(model_dir, "cpu", 1, half=True)
    assert (fp32.dtype, fp16.dtype) == ("float32", "float16")
    a, b = l2_normalize(fp32.run(ids, mask)), l2_normalize(fp16.run(ids, mask))
    assert a.dtype == b.dtype == np.float32 and a.shape == (2, 384)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999
