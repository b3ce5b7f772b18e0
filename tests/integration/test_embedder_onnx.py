"""The ONNX Runtime dynamic int8 variant: a real export of the packaged model (fused graph), a real
quantization, vectors close to torch fp32's, and the service serving it under `auto` only with a
passing verdict for this CPU. Slow (a torch export and a quantization, about a minute on a loaded
2-core machine): `make test-slow`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from embedding import export, ort_variant, variants
from embedding.packaged import packaged_model_dir
from embedding.runtime import Tokenization

from .test_embedder_openvino import TEXTS, start_and_embed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DOCS = [
    "Object storage keeps data as objects in a flat namespace addressed by keys.",
    "GPUs accelerate dense linear algebra for training neural networks.",
    "Proteins fold into three-dimensional structures that determine their function, and misfolded "
    "proteins aggregate into fibrils that are associated with neurodegenerative disease.",
    "Vaccines train the immune system to recognise a pathogen before infection.",
]


async def test_int8_dyn_is_fused_quantized_close_to_torch_and_served_when_gated(tmp_path: Path) -> None:
    import onnx
    from sentence_transformers import SentenceTransformer

    model_dir = packaged_model_dir()
    art = export.Artifacts(tmp_path, model_dir)
    gates = art.gates()
    fp = art.root / "onnx" / "model.onnx"
    await asyncio.to_thread(ort_variant.export_onnx, model_dir, fp)
    await asyncio.to_thread(ort_variant.quantize_dynamic_int8, fp, gates.int8_dyn_onnx)

    ops = [n.op_type for n in onnx.load(str(gates.int8_dyn_onnx)).graph.node]
    assert ops.count("Attention") == 6 and "QAttention" not in ops  # one fused attention per layer, fp32
    # FFN down-projections and the last layer's other two MatMuls kept fp32; the rest int8.
    assert ops.count("MatMulInteger") == 10 and ops.count("MatMul") == 8
    assert not list(gates.int8_dyn_onnx.parent.parent.glob(".int8-dyn-*"))  # no temporary left behind

    tok = Tokenization(model_dir, 256)
    backend = ort_variant.OnnxRuntimeBackend(
        gates.int8_dyn_onnx, 2, name="onnxruntime-int8", dtype="int8", dimension=384
    )
    opts = backend.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # idle threads sleep
    ids, mask = tok.pad([e.ids for e in tok.encode(DOCS)])
    vec = backend.run(ids, mask)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    ref = st.encode(DOCS, normalize_embeddings=True)
    cos = np.sum(vec * ref, axis=1)
    assert float(cos.min()) > variants.GATE_MIN_COSINE_MIN, cos
    # Each text's nearest reference vector is its own.
    assert list(np.argmax(vec @ ref.T, axis=1)) == list(range(len(DOCS)))

    # Without a verdict `auto` serves fp32; with a pass recorded under this CPU's key, int8-dyn.
    _, info, _ = await start_and_embed(tmp_path)
    assert info.backend == "openvino"
    good = {"ndcg_drop": 0.0, "cosine_vs_torch_mean": 0.998, "cosine_vs_torch_min": 0.99, "speedup_over_fp32": 2.0}
    gates.write({"variants": {"int8-dyn": {**good, **variants.judge(good)}}})
    _, info, arr = await start_and_embed(tmp_path)
    assert (info.backend, info.dtype) == ("onnxruntime-int8", "int8")
    assert arr.shape == (len(TEXTS), 384)
