"""`rag eval BEIR_DIR --split test`: retrieval quality (nDCG@10, Recall@100) on a BEIR dataset."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    # Every argument, options included (`rag eval --split dev DIR`, `rag eval --help`), belongs to
    # the evaluator's own parser: with no "-" prefix here, argparse hands them all over untouched.
    p = sub.add_parser(
        "eval",
        help="score retrieval on a BEIR-format dataset (nDCG@10, Recall@100)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from services.retriever.evaluate import main

    return main(list(args.rest))
