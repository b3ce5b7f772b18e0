"""`rag eval BEIR_DIR --split test`: retrieval quality (nDCG@10, Recall@100) on a BEIR dataset."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score retrieval on a BEIR-format dataset (nDCG@10, Recall@100)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from services.retriever.evaluate import main

    return main(list(args.rest))
