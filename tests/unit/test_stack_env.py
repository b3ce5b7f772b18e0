"""What `rag up` hands its children from the shell: each service's own `DDNRAG_*` variables and the
shared ones, never another service's secrets; and the gateway runs open only when that is the
explicit, loopback-only choice `rag up` makes when no keys are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.stack_config import load_config
from cli.supervisor import Supervisor

SHELL = {
    "DDNRAG_RETRIEVER_PARSER_MAX_ROWS": "1000",
    "DDNRAG_RETRIEVER_PARSER_MEMORY_MB": "4096",
    "DDNRAG_STORAGE_ENDPOINT_ALLOWLIST": "10.0.0.0/8",
    "DDNRAG_STORAGE_REGISTRY_KEY": "s3cr3t-registry-key",
    "DDNRAG_LLM_GATEWAY_GUARD_DENY_LIST": "zorg",
    "DDNRAG_TLS_SERVER_NAME": "ddnrag.internal",
    "DDNRAG_CLI_SECRET_ACCESS_KEY": "cli-secret",
    "DDNRAG_API_KEY": "my-key",
    "DDNRAG_RETRIEVER_PORT": "1",  # the stack's wiring wins over the shell
}


def children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shell: dict[str, str], **cfg: object) -> Supervisor:
    for k, v in shell.items():
        monkeypatch.setenv(k, v)
    sup = Supervisor(load_config(data_dir=str(tmp_path), retriever_port=50053, **cfg), out=lambda _: None)
    sup.define()
    return sup


def test_children_get_their_own_and_shared_variables_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = {n: c.env for n, c in children(tmp_path, monkeypatch, SHELL).children.items()}
    assert envs["retriever"]["DDNRAG_RETRIEVER_PARSER_MAX_ROWS"] == "1000"
    assert envs["retriever"]["DDNRAG_RETRIEVER_PARSER_MEMORY_MB"] == "4096"
    assert envs["retriever"]["DDNRAG_RETRIEVER_PORT"] == "50053"
    assert envs["storage"]["DDNRAG_STORAGE_ENDPOINT_ALLOWLIST"] == "10.0.0.0/8"
    assert envs["llm_gateway"]["DDNRAG_LLM_GATEWAY_GUARD_DENY_LIST"] == "zorg"
    for name in ("storage", "embedder", "retriever", "llm_gateway", "gateway"):
        assert envs[name]["DDNRAG_TLS_SERVER_NAME"] == "ddnrag.internal"
    # Secrets reach only their owner: the registry key only storage, the CLI's keys no service.
    secrets = ("s3cr3t-registry-key", "cli-secret", "my-key")
    for name, env in envs.items():
        if name != "storage":
            assert not any(k.startswith("DDNRAG_STORAGE_") for k in env), name
        assert not {"cli-secret", "my-key"} & set(env.values()), name
        if name not in ("storage", "seaweedfs"):
            assert not set(secrets) & set(env.values()), name
    assert not any(k.startswith("DDNRAG_") for k in envs["seaweedfs"])


def test_the_gateway_runs_open_only_on_loopback_without_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DDNRAG_GATEWAY_API_KEYS", "DDNRAG_GATEWAY_API_KEYS_FILE", "DDNRAG_GATEWAY_AUTH"):
        monkeypatch.delenv(var, raising=False)
    sup = children(tmp_path, monkeypatch, {})
    assert sup.gateway_open and sup.children["gateway"].env["DDNRAG_GATEWAY_AUTH"] == "open"
    keyed = children(tmp_path, monkeypatch, {"DDNRAG_GATEWAY_API_KEYS_FILE": str(tmp_path / "keys")})
    env = keyed.children["gateway"].env
    assert not keyed.gateway_open and "DDNRAG_GATEWAY_AUTH" not in env
    assert env["DDNRAG_GATEWAY_API_KEYS_FILE"] == str(tmp_path / "keys")
    monkeypatch.delenv("DDNRAG_GATEWAY_API_KEYS_FILE")
    wide = children(tmp_path, monkeypatch, {}, host="0.0.0.0")  # the gateway then refuses to start open
    assert not wide.gateway_open and "DDNRAG_GATEWAY_AUTH" not in wide.children["gateway"].env
