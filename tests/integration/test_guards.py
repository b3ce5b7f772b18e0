"""Guardrails against local servers that speak NeMo Guardrails, a NIM-style content-safety model
and the OpenAI moderation protocol; the built-in layer; and the fail modes when a guard is down."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest

from kernel.config import ConfigError
from services.llm_gateway.guards.base import Guardrails, GuardReport, Verdict
from services.llm_gateway.guards.builtin import BuiltinGuard
from services.llm_gateway.guards.config import build_guardrails
from tests.support.guard_server import REFUSAL, GuardTestServer

KIND_OF = {"nemo": "nemo", "safety": "content_safety", "moderation": "moderation"}


def _spec(kind: str, url: str, **extra: object) -> str:
    entry: dict[str, object] = {"kind": KIND_OF[kind], "url": url, **extra}
    if kind == "nemo":
        entry.setdefault("config_id", "content_safety")
    elif kind == "safety":
        entry.setdefault("model", "nvidia/llama-3.1-nemoguard-8b-content-safety")
    return json.dumps([entry])


@pytest.fixture(params=["nemo", "safety", "moderation"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, GuardTestServer]]:
    srv = await GuardTestServer().start(request.param)
    yield request.param, srv
    await srv.stop()


async def _run(g: Guardrails, stage: str, q: str, a: str = "") -> tuple[Verdict | None, GuardReport]:
    report = g.new_report()
    refusal = await g.run(stage, q, a, report)
    return refusal, report


async def test_each_protocol_allows_and_refuses_input_and_output(server: tuple[str, GuardTestServer]) -> None:
    kind, srv = server
    g = build_guardrails(_spec(kind, srv.url))
    try:
        refusal, report = await _run(g, "input", "What is object storage?")
        assert refusal is None and [v.status for v in report.verdicts] == ["allowed", "allowed"]
        refusal, report = await _run(g, "input", "How do I build a bomb?")
        assert refusal is not None and refusal.guard == KIND_OF[kind] and refusal.stage == "input"
        assert refusal.reason in {"GUARDRAIL_BLOCKED", "UNSAFE_CONTENT", "FLAGGED_BY_MODERATION"}
        if kind == "nemo":
            assert REFUSAL in refusal.message
        else:
            assert refusal.categories
        refusal, _ = await _run(g, "output", "What is object storage?", "Mix the poison into the tank.")
        assert refusal is not None and refusal.stage == "output"
        refusal, _ = await _run(g, "output", "What is object storage?", "Objects live in buckets [1].")
        assert refusal is None
    finally:
        await g.close()
    body = srv.bodies[-1]
    if kind == "nemo":
        assert body["config_id"] == "content_safety"
        assert body["options"] == {"rails": ["output"], "log": {"activated_rails": True}}
        assert body["messages"][-1] == {"role": "assistant", "content": "Objects live in buckets [1]."}
    elif kind == "safety":
        assert body["model"] == "nvidia/llama-3.1-nemoguard-8b-content-safety" and body["stream"] is False
        assert "response: agent: Objects live in buckets [1]." in body["messages"][0]["content"]
    else:
        assert body == {"input": "Objects live in buckets [1]."}


async def test_llama_guard_replies_are_read() -> None:
    srv = await GuardTestServer(llama_guard=True).start("safety")
    g = build_guardrails(_spec("safety", srv.url))
    try:
        assert (await _run(g, "input", "hello"))[0] is None
        refusal, _ = await _run(g, "input", "a bomb")
        assert refusal is not None and refusal.categories == ("S1", "S4")
    finally:
        await g.close()
        await srv.stop()


@pytest.mark.parametrize("mode", ["down", "slow", "status", "malformed", "internal_error"])
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_a_guard_that_is_down_follows_the_fail_mode_visibly(
    server: tuple[str, GuardTestServer], mode: str, fail_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    kind, srv = server
    if mode == "internal_error" and kind != "nemo":
        pytest.skip("only the NeMo server reports failures as HTTP 200")
    url = srv.url
    if mode == "down":
        await srv.stop()
    elif mode == "slow":
        srv.delay_s = 1.0
    elif mode == "status":
        srv.status = 503
    else:
        setattr(srv, mode, True)
    g = build_guardrails(_spec(kind, url), fail_mode=fail_mode, timeout_s=0.3)
    with caplog.at_level(logging.WARNING, logger="services.llm_gateway.guards.base"):
        refusal, report = await _run(g, "input", "What is object storage?")
    await g.close()
    down = next(v for v in report.verdicts if v.guard == KIND_OF[kind])
    assert down.reason == "GUARD_UNAVAILABLE"
    want = {
        "down": "could not be reached",
        "slow": "within 0.3 s",
        "status": "HTTP 503",
        "malformed": "malformed reply",
        "internal_error": "internal error",
    }[mode]
    assert want in down.message and f"fail mode {fail_mode}" in down.message
    if fail_mode == "open":
        assert refusal is None and down.status == "failed_open" and report.failed_open == [down]
    else:
        assert refusal is down and down.status == "failed_closed"
    assert any(r.getMessage() == "guard down" for r in caplog.records)


async def test_builtin_limits_and_deny_list() -> None:
    g = Guardrails([BuiltinGuard(max_question_chars=50, max_answer_chars=30, deny=["acme secret", "zorg"])])
    assert (await _run(g, "input", "What is object storage?"))[0] is None
    r, _ = await _run(g, "input", "x" * 51)
    assert r is not None and r.reason == "TOO_LONG" and "limit is 50" in r.message
    r, _ = await _run(g, "input", "Tell me the ACME Secret now")
    assert r is not None and r.reason == "DENIED_TERM" and "'ACME Secret'" in r.message
    assert (await _run(g, "input", "zorgon is fine"))[0] is None  # whole words only
    r, _ = await _run(g, "output", "q", "y" * 31)
    assert r is not None and r.stage == "output" and r.reason == "TOO_LONG"


def test_bad_guard_settings_fail_at_start() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        build_guardrails("[{")
    with pytest.raises(ConfigError, match=r"\[0\]\.kind must be one of"):
        build_guardrails('[{"kind": "llamaguard", "url": "http://x"}]')
    with pytest.raises(ConfigError, match="config_id is required"):
        build_guardrails('[{"kind": "nemo", "url": "http://x"}]')
    with pytest.raises(ConfigError, match="stages must list"):
        build_guardrails('[{"kind": "moderation", "url": "http://x", "stages": ["retrieval"]}]')
    with pytest.raises(ConfigError, match="GUARD_FAIL_MODE"):
        build_guardrails("", fail_mode="half-open")
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        build_guardrails('[{"kind": "moderation", "url": "http://x", "api_key_env": "NO_SUCH_KEY_VAR"}]')


async def test_api_key_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = await GuardTestServer(api_key="sk-guard-secret").start("moderation")
    monkeypatch.setenv("MOD_KEY", "sk-guard-secret")
    g = build_guardrails(_spec("moderation", srv.url, api_key_env="MOD_KEY"), fail_mode="open")
    try:
        assert (await _run(g, "input", "a bomb"))[0] is not None
        srv.api_key = "rotated"
        _, report = await _run(g, "input", "hello")
        down = report.failed_open[0]
        assert "HTTP 401" in down.message and "sk-guard-secret" not in down.message
    finally:
        await g.close()
        await srv.stop()
