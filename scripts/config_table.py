"""Prints the configuration variables of every component as Markdown tables (for the README).

`tests/unit/test_readme_config.py` fails when the README lacks a variable a config dataclass reads.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.stack_config import StackConfig
from gateway.config import GatewayConfig
from kernel.authz import GrpcExposureConfig
from kernel.tls import TlsConfig
from services.embedder.config import EmbedderConfig
from services.llm_gateway.config import LlmGatewayConfig
from services.retriever.config import RetrieverConfig
from services.retriever.sandbox import ParserLimits
from services.storage.config import StorageConfig

COMPONENTS: list[tuple[str, type]] = [
    ("local stack (`rag up`)", StackConfig),
    ("embedder", EmbedderConfig),
    ("storage", StorageConfig),
    ("retriever", RetrieverConfig),
    ("retriever: parser workers", ParserLimits),
    ("llm_gateway", LlmGatewayConfig),
    ("gateway", GatewayConfig),
    ("every gRPC service: mutual TLS", TlsConfig),
    ("every gRPC service: exposure", GrpcExposureConfig),
]


def rows(cls: type) -> list[tuple[str, str, str]]:
    out = []
    for f in dataclasses.fields(cls):
        if "env" not in f.metadata:
            continue
        default = (
            f.default if f.default is not dataclasses.MISSING else "(required)" if f.metadata.get("required") else ""
        )
        if isinstance(default, str) and "/" in default and Path(default).is_absolute():
            default = "…/" + Path(default).name
        out.append((f.metadata["env"], repr(default) if default != "" else "`''`", f.metadata["help"]))
    return out


def markdown() -> str:
    parts = []
    for title, cls in COMPONENTS:
        parts.append(f"#### {title}\n\n| variable | default | meaning |\n|---|---|---|")
        for env, default, help_ in rows(cls):
            parts.append(f"| `{env}` | {default.replace('|', '/')} | {help_.replace('|', '/')} |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown())
