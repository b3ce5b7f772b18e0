"""`rag up --replicas N` without starting anything: which children the supervisor defines, their
ports and state directories, the address lists their peers get, and how a list becomes one
round-robin gRPC target. tests/e2e/test_stack_e2e.py runs it for real."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cli.stack_config import load_config
from cli.supervisor import Supervisor
from kernel.targets import grpc_target


def children(tmp_path: Path, replicas: int) -> dict[str, dict[str, str]]:
    cfg = load_config(data_dir=str(tmp_path), replicas=replicas, storage_port=50052, retriever_port=50053)
    sup = Supervisor(cfg, out=lambda _: None)
    sup.define()
    return {name: c.env for name, c in sup.children.items()}


def test_default_is_one_process_per_service(tmp_path: Path) -> None:
    envs = children(tmp_path, 1)
    assert list(envs) == ["seaweedfs", "storage", "embedder", "retriever", "llm_gateway", "gateway"]
    assert envs["gateway"]["DDNRAG_GATEWAY_STORAGE_ADDR"] == "127.0.0.1:50052"
    assert envs["retriever"]["DDNRAG_RETRIEVER_STORAGE_ADDR"] == "127.0.0.1:50052"


def test_replicas_get_their_own_ports_and_peers_get_every_address(tmp_path: Path) -> None:
    envs = children(tmp_path, 3)
    assert [n for n in envs if n.startswith(("storage", "retriever"))] == [
        "storage",
        "storage-1",
        "storage-2",
        "retriever",
        "retriever-1",
        "retriever-2",
    ]
    assert [envs[n]["DDNRAG_STORAGE_PORT"] for n in ("storage", "storage-1", "storage-2")] == [
        "50052",
        "51052",
        "52052",
    ]
    assert envs["retriever-2"]["DDNRAG_RETRIEVER_METRICS_PORT"] == "11103"
    # Storage replicas share the directory of the registry's data key; retrievers keep their own caches.
    assert envs["storage"]["DDNRAG_STORAGE_STATE_DIR"] == envs["storage-2"]["DDNRAG_STORAGE_STATE_DIR"]
    assert envs["retriever"]["DDNRAG_RETRIEVER_STATE_DIR"] != envs["retriever-1"]["DDNRAG_RETRIEVER_STATE_DIR"]
    storages = "127.0.0.1:50052,127.0.0.1:51052,127.0.0.1:52052"
    assert envs["gateway"]["DDNRAG_GATEWAY_STORAGE_ADDR"] == storages
    assert envs["retriever-1"]["DDNRAG_RETRIEVER_STORAGE_ADDR"] == storages
    assert envs["llm_gateway"]["DDNRAG_LLM_GATEWAY_RETRIEVER_ADDR"].count(",") == 2
    assert envs["embedder"]["DDNRAG_EMBEDDER_PORT"] == "50051"  # not scaled


def test_replica_ports_are_checked_with_their_variable(tmp_path: Path) -> None:
    cfg = load_config(data_dir=str(tmp_path), replicas=2, storage_port=50052)
    named = dict(cfg.ports_with_variables())
    assert "DDNRAG_STORAGE_PORT (replica 1" in named[51052]


def test_address_lists_become_one_round_robin_target() -> None:
    assert grpc_target("127.0.0.1:50052") == "127.0.0.1:50052"
    assert grpc_target("dns:///storage-headless:50052") == "dns:///storage-headless:50052"
    assert grpc_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert grpc_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    for bad, words in (
        ("localhost:1,localhost:2", "IP literals"),
        ("127.0.0.1:1,[::1]:2", "mixes"),
        ("a,b", "host:port"),
    ):
        with pytest.raises(ValueError, match=words):
            grpc_target(bad)


async def test_a_list_target_balances_calls_over_every_server() -> None:
    """Two real servers behind one channel: round robin reaches both."""
    from clients.base import channel_options
    from kernel.tls import aio_channel

    hits: list[int] = []

    def handler(i: int) -> grpc.GenericRpcHandler:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            hits.append(i)
            return request

        method = grpc.unary_unary_rpc_method_handler(echo)
        return grpc.method_handlers_generic_handler("t.Echo", {"Call": method})

    servers, ports = [], []
    for i in range(2):
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler(i),))
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    channel = aio_channel(",".join(f"127.0.0.1:{p}" for p in ports), channel_options())
    try:
        call = channel.unary_unary("/t.Echo/Call")
        for _ in range(20):
            assert await call(b"x", timeout=10) == b"x"
        assert set(hits) == {0, 1}, hits
    finally:
        await channel.close()
        for s in servers:
            await s.stop(0)
