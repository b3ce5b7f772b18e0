"""`python -m gateway.server` as a real process: it serves, and SIGTERM ends an open stream with a
terminal event, cancels the upstream call and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiohttp

from tests.integration.test_gateway_doubles import Doubles, doubles

__all__ = ["doubles"]


async def test_sigterm_closes_open_streams_and_exits(doubles: Doubles) -> None:
    env = {
        **os.environ,
        "DDNRAG_GATEWAY_PORT": "0",
        "DDNRAG_GATEWAY_STORAGE_ADDR": doubles.addr("storage"),
        "DDNRAG_GATEWAY_RETRIEVER_ADDR": doubles.addr("retriever"),
        "DDNRAG_GATEWAY_LLM_GATEWAY_ADDR": doubles.addr("llm_gateway"),
        "DDNRAG_GATEWAY_EMBEDDER_ADDR": doubles.addr("embedder"),
        "DDNRAG_GATEWAY_SHUTDOWN_GRACE_S": "5",
        "DDNRAG_GATEWAY_AUTH": "open",
        "PYTHONPATH": os.getcwd(),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.server", env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        port = None
        while port is None:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the gateway exited before listening"
            rec = json.loads(line)
            port = rec["fields"].get("port")
        async with aiohttp.ClientSession() as session:
            health = await session.get(f"http://127.0.0.1:{port}/api/health")
            assert health.status == 200
            resp = await session.get(f"http://127.0.0.1:{port}/api/rag/stream", params={"q": "slow question"})
            assert resp.status == 200
            await resp.content.readuntil(b"\r\n\r\n")
            proc.send_signal(signal.SIGTERM)
            rest = (await asyncio.wait_for(resp.read(), 10)).decode()
        assert rest.endswith(
            'event: error\r\ndata: {"status":503,"reason":"SHUTTING_DOWN",'
            '"message":"the gateway is shutting down"}\r\n\r\n'
        )
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        await asyncio.wait_for(doubles.llm.answer_cancelled.wait(), 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_without_keys_or_an_explicit_open_setting_it_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDNRAG_GATEWAY_")}
    env.update({"DDNRAG_GATEWAY_PORT": "0", "PYTHONPATH": os.getcwd()})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.server",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"DDNRAG_GATEWAY_AUTH=open" in out and b"Traceback" not in out
