"""The default CPU path: `auto` exports the model for OpenVINO at first start into the state
directory, serves from it, and reuses the export on the next start; it serves the int8 variant
only when the quality gate recorded a pass for this very CPU and these library versions."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from clients.embedder import EmbedderClient
from embedding import export, variants
from embedding.packaged import packaged_model_dir
from kernel.config import load_env
from services.embedder.config import EmbedderConfig
from services.embedder.server import create_server

from .test_embedder_service import wait_serving

TEXTS = ["Parallel file systems feed GPUs.", "S3 is an object storage API.", ""]


async def start_and_embed(state_dir: Path) -> tuple[float, object, np.ndarray]:
    cfg = load_env(
        EmbedderConfig, environ={}, port=0, metrics_port=0, backend="auto", device="cpu", state_dir=str(state_dir)
    )
    t0 = time.perf_counter()
    app, port = await create_server(cfg)
    try:
        await wait_serving(port)
        ready_s = time.perf_counter() - t0
        async with EmbedderClient(f"127.0.0.1:{port}") as c:
            info = await c.info()
            arr = await c.embed_array(TEXTS)
        return ready_s, info, arr
    finally:
        await app.stop(0)


async def test_auto_exports_once_and_matches_torch(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    _, info, arr = await start_and_embed(tmp_path)
    assert info.backend == "openvino" and info.device == "cpu"
    assert info.dtype == "float32"  # no gate recorded here: fp32, never the plugin's bf16 default
    xmls = await asyncio.to_thread(lambda: list(tmp_path.glob("models/*/openvino/model.xml")))
    assert len(xmls) == 1
    mtime = xmls[0].stat().st_mtime_ns
    st = SentenceTransformer(str(packaged_model_dir()), device="cpu", local_files_only=True)
    ref = st.encode(TEXTS, normalize_embeddings=True)
    cos = np.sum(arr * ref, axis=1)
    assert float(cos.min()) > 0.999, cos
    # The second start reuses the cached export (no new files, same model).
    _, info2, arr2 = await start_and_embed(tmp_path)
    assert info2.backend == "openvino" and xmls[0].stat().st_mtime_ns == mtime
    assert np.allclose(arr, arr2, atol=1e-6)


@pytest.mark.parametrize("backend", ["openvino-int8"])
async def test_int8_without_gate_fails_to_load_and_stays_not_serving(tmp_path: Path, backend: str) -> None:
    failed: list[BaseException] = []
    cfg = load_env(EmbedderConfig, environ={}, port=0, metrics_port=0, backend=backend, state_dir=str(tmp_path))
    app, port = await create_server(cfg, on_load_failed=failed.append)
    try:
        for _ in range(300):
            if failed:
                break
            await asyncio.sleep(0.1)
        assert failed and "quality gate" in str(failed[0])
        with pytest.raises(TimeoutError):
            await wait_serving(port, timeout_s=0.5)
    finally:
        await app.stop(0)


async def test_auto_serves_int8_only_with_a_passing_verdict_for_this_cpu(tmp_path: Path) -> None:
    """The choice at start reads the verdict cached under this CPU's gate key; a pass recorded
    for another CPU does not count. (The IR placed under `int8/` is the fp32 one: this checks
    the choice; the slow gate test checks the quantisation.)"""
    art = export.Artifacts(tmp_path, packaged_model_dir())
    await asyncio.to_thread(export.export_openvino, packaged_model_dir(), art.fp_xml)
    here = art.gates()
    await asyncio.to_thread(shutil.copytree, art.fp_xml.parent, here.int8_xml.parent)
    good = {"ndcg_drop": 0.0, "cosine_vs_torch_mean": 0.999, "cosine_vs_torch_min": 0.99, "speedup_over_fp32": 1.5}
    art.gates(flags=("avx2", "avx512_vnni", "fma")).write({"variants": {"int8": {**good, **variants.judge(good)}}})
    assert here.chosen() == "fp32"
    here.write({"variants": {"int8": {**good, **variants.judge(good)}}})
    _, info, arr = await start_and_embed(tmp_path)
    assert arr.shape == (len(TEXTS), 384)
    if "int8" in variants.candidates(here.flags):
        assert (info.backend, info.dtype) == ("openvino-int8", "int8")
    else:
        # NNCF static int8 is a candidate only with VNNI or AMX (measured no faster than fp32 on
        # AVX2 alone): a pass recorded here is not served. The ONNX Runtime variant that is a
        # candidate here is served from its verdict in test_embedder_onnx.py.
        assert (info.backend, info.dtype) == ("openvino", "float32")
