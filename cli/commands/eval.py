"""`rag eval BEIR_DIR --split test [--answers]`: retrieval quality (nDCG@10, Recall@100) on a BEIR
dataset, and with `--answers` answer quality (citation precision, support recall) from the
llm_gateway's generator: the one at `--llm-gateway-addr`, or one started here in-process with the
built-in generator and the packaged embedding model."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import AsyncIterator


def register(sub: argparse._SubParsersAction) -> None:
    # Every argument, options included (`rag eval --split dev DIR`, `rag eval --help`), belongs to
    # the evaluator's own parser: with no "-" prefix here, argparse hands them all over untouched.
    p = sub.add_parser(
        "eval",
        help="score retrieval (nDCG@10, Recall@100) and answers (--answers) on a BEIR-format dataset",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_eval)


@contextlib.asynccontextmanager
async def local_llm_gateway() -> AsyncIterator[str]:
    """An llm_gateway on 127.0.0.1:0 with the built-in generator, the in-process embedding model,
    no answer cache, no conversations and no groundedness check (citations are what is scored; the
    check would double the CPU work); yields its address."""
    from kernel.config import load_env
    from services.llm_gateway.config import LlmGatewayConfig
    from services.llm_gateway.server import create_server

    with tempfile.TemporaryDirectory(prefix="rag-eval-") as state:
        cfg = load_env(
            LlmGatewayConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=state,
            embedder_addr="local",
            storage_addr="",
            cache_max_bytes=0,
            verify="off",
            # No person waits on an evaluation: a loaded machine may take minutes per answer.
            backends='[{"name": "extractive", "kind": "extractive", "first_token_timeout_s": 900}]',
        )
        app, port = await create_server(cfg)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await app.stop(0)


def cmd_eval(args: argparse.Namespace) -> int:
    from services.retriever.evaluate import main

    return main(list(args.rest), local_llm_gateway=local_llm_gateway)
