"""Reranking against local servers that speak TEI, NIM and Cohere/Jina exactly, including slow,
failing and malformed replies; and a tiny CrossEncoder built from a config in the test."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kernel.config import ConfigError
from services.retriever.rerank import RerankError
from services.retriever.rerank.config import build_stage
from services.retriever.rerank.http import HttpReranker
from services.retriever.rerank.stage import RerankStage
from tests.support.rerank_server import MALFORMED, RerankTestServer

QUERY = "object storage ttfb latency"
TEXTS = [
    "GPUs multiply matrices.",  # 0 words in common
    "Object storage keeps objects.",  # object, storage
    "TTFB is the latency of object storage to its first byte.",  # ttfb, latency, object, storage
    "",  # an unreadable chunk: never sent, kept after the scored ones
    "Latency matters.",  # latency
]


@pytest.fixture
async def server():
    srv = await RerankTestServer().start()
    yield srv
    await srv.stop()


@pytest.mark.parametrize("protocol", ["tei", "nim", "cohere"])
async def test_each_protocol_reorders_by_the_servers_scores(server: RerankTestServer, protocol: str) -> None:
    stage = build_stage(protocol, url=server.url, model="rr-model", top_n=10)
    assert stage is not None
    try:
        out = await stage.run(QUERY, TEXTS)
    finally:
        await stage.close()
    assert out.status == "ok", out.message
    assert out.order == (2, 1, 4, 0, 3)
    assert out.scores[3] is None and out.scored == 4
    assert out.scores[2] > out.scores[1] > out.scores[4] > out.scores[0]  # type: ignore[operator]
    body = server.bodies[-1]
    sent = [t for t in TEXTS if t]
    if protocol == "tei":
        assert body == {"query": QUERY, "texts": sent, "truncate": True, "raw_scores": False}
    elif protocol == "nim":
        assert body == {
            "model": "rr-model",
            "query": {"text": QUERY},
            "passages": [{"text": t} for t in sent],
            "truncate": "END",
        }
    else:
        assert body == {"model": "rr-model", "query": QUERY, "documents": sent, "top_n": 4, "return_documents": False}


async def test_only_the_top_n_are_scored_the_rest_keep_fusion_order(server: RerankTestServer) -> None:
    stage = build_stage("cohere", url=server.url, top_n=2)
    assert stage is not None
    out = await stage.run(QUERY, TEXTS)
    await stage.close()
    assert out.order == (1, 0, 2, 3, 4) and out.scored == 2
    assert server.bodies[-1]["documents"] == TEXTS[:2]


async def test_tei_batches_past_its_client_batch_limit(server: RerankTestServer) -> None:
    server.max_client_batch = 3
    rr = HttpReranker("tei", server.url, max_batch=3)
    texts = [f"object {'storage ' * (i % 4)}{i}" for i in range(8)]
    scores = await rr.score("object storage", texts)
    await rr.close()
    assert [len(b["texts"]) for b in server.bodies] == [3, 3, 2]
    assert scores == [1.0 + (i % 4 > 0) for i in range(8)]
    # Without batching the real TEI refuses the request: that is a failure, not a silent cut.
    server.max_client_batch = 2
    rr = HttpReranker("tei", server.url, max_batch=64)
    with pytest.raises(RerankError, match=r"HTTP 413.*batch size 8 > maximum allowed batch size 2"):
        await rr.score("object storage", texts)
    await rr.close()


@pytest.mark.parametrize("protocol", ["tei", "nim", "cohere"])
@pytest.mark.parametrize("mode", ["slow", "status", *MALFORMED])
async def test_failures_fall_back_to_fusion_order_and_say_why(
    server: RerankTestServer, protocol: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    if mode == "slow":
        server.delay_s = 1.0
    elif mode == "status":
        server.status = 503
    else:
        server.malformed = mode
    stage = build_stage(protocol, url=server.url, timeout_s=0.3)
    assert stage is not None
    with caplog.at_level(logging.WARNING, logger="services.retriever.rerank.stage"):
        out = await stage.run(QUERY, TEXTS)
    await stage.close()
    assert out.status == "fallback"
    assert out.order == tuple(range(len(TEXTS))) and set(out.scores) == {None}
    assert "kept fusion order (fail mode fallback)" in out.message
    expected = {
        "slow": "did not answer within 0.3 s",
        "status": "HTTP 503",
        "not_json": "not JSON",
        "wrong_shape": "malformed",
        "missing_index": "got no score",
        "duplicate_index": "appears twice",
        "nan_score": "not a finite number",
        "index_out_of_range": "is not one of the 4 texts sent",
    }[mode]
    assert expected in out.message
    assert any(r.getMessage() == "rerank failed" and r.outcome == "fallback" for r in caplog.records)


async def test_fail_mode_error_reports_error(server: RerankTestServer) -> None:
    server.status = 500
    stage = build_stage("tei", url=server.url, fail_mode="error")
    assert stage is not None
    out = await stage.run(QUERY, TEXTS)
    await stage.close()
    assert out.status == "error" and "search failed (fail mode error)" in out.message


async def test_a_server_that_is_down_falls_back() -> None:
    srv = await RerankTestServer().start()
    url = srv.url
    await srv.stop()
    stage = build_stage("nim", url=url, timeout_s=2)
    assert stage is not None
    out = await stage.run(QUERY, TEXTS)
    await stage.close()
    assert out.status == "fallback" and "could not be reached" in out.message


async def test_the_api_key_is_sent_and_never_shown(server: RerankTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.api_key = "sk-rerank-secret"
    monkeypatch.setenv("RR_KEY", "sk-rerank-secret")
    stage = build_stage("cohere", url=server.url, api_key_env="RR_KEY")
    assert stage is not None
    assert (await stage.run(QUERY, TEXTS)).status == "ok"
    server.status = 401
    out = await stage.run(QUERY, TEXTS)
    await stage.close()
    assert out.status == "fallback" and "sk-rerank-secret" not in out.message


def test_bad_settings_fail_at_start_naming_the_variable(tmp_path: Path) -> None:
    assert build_stage("") is None and build_stage("none") is None
    with pytest.raises(ConfigError, match="DDNRAG_RETRIEVER_RERANK must be one of"):
        build_stage("bge")
    with pytest.raises(ConfigError, match="DDNRAG_RETRIEVER_RERANK_URL"):
        build_stage("tei", url="tei:8080")
    with pytest.raises(ConfigError, match="DDNRAG_RETRIEVER_RERANK_FAIL_MODE"):
        build_stage("tei", url="http://x", fail_mode="open")
    with pytest.raises(ConfigError, match="DDNRAG_RETRIEVER_RERANK_MODEL"):
        build_stage("local", model=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="RR_MISSING"):
        build_stage("nim", url="http://x", api_key_env="RR_MISSING")


def _tiny_cross_encoder(path: Path) -> None:
    """A 1-layer BERT cross-encoder with random weights and a 40-word vocabulary: real model code,
    no download."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = "object storage ttfb latency gpus multiply matrices keeps objects is the of to its first byte matters"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words.split())), "."]
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(7)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=1,
    )
    BertForSequenceClassification(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)


async def test_local_cross_encoder_from_a_config(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = tmp_path / "tiny-ce"
    _tiny_cross_encoder(model_dir)
    stage = build_stage("local", model=str(model_dir), top_n=10, timeout_s=60)
    assert isinstance(stage, RerankStage)
    out = await stage.run(QUERY, TEXTS)
    await stage.close()
    assert out.status == "ok", out.message
    # The scores are the model's own outputs (CrossEncoder applies a sigmoid to one logit).
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    sent = [t for t in TEXTS if t]
    with torch.no_grad():
        logits = model(**tok([QUERY] * len(sent), sent, padding=True, return_tensors="pt")).logits[:, 0].sigmoid()
    got = [s for s in out.scores if s is not None]
    assert got == pytest.approx([float(x) for x in logits], abs=1e-4)
    assert list(out.order[:4]) == sorted([0, 1, 2, 4], key=lambda i: -out.scores[i])  # type: ignore[operator]
