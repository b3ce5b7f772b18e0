"""`rag up --monitoring` against the real stack: a real Prometheus (Debian's package) scrapes every
service, and after one ingestion and one question PromQL over its HTTP API returns the standard
series; every metric the dashboards and alerts name is exported by the live services; the demo's
Metrics page draws its figures from them in headless Chromium.

Everything polls with a deadline (scrapes run every second); nothing asserts a timing.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests

from testkit.sse import iter_sse
from testkit.stack import RunningStack, start_stack
from tests.browser.test_gateway_demo import ARGS, ARTIFACTS, CHROMIUM
from tests.unit.test_monitoring_dashboards import exported_names, referenced_metrics

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is absent (make monitoring-deps)"),
]

DOC = b"""# Kestrel cooling notes

The Kestrel cluster keeps its GPU racks below 27 degrees with a rear-door heat exchanger.
Its chillers are serviced every March by the facilities team in Oslo.
"""
QUESTION = "What keeps the Kestrel GPU racks cool?"
GRPC_JOBS = {"embedder", "storage", "retriever", "llm_gateway"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # The one ingestion: `rag up` ingests its sample corpus, here a single document, once the
    # stack (and Prometheus) are up.
    root = tmp_path_factory.mktemp("monitoring")
    (root / "corpus").mkdir()
    (root / "corpus" / "kestrel.md").write_bytes(DOC)
    s = start_stack(
        root / "data",
        extra_env={
            "DDNRAG_STACK_MONITORING": "1",
            "DDNRAG_STACK_SCRAPE_INTERVAL_S": "1",
            "DDNRAG_STACK_SAMPLE_CORPUS": str(root / "corpus"),
        },
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def traffic(stack: RunningStack) -> dict[str, Any]:
    """One question and one prefix watch (the stack ran the ingestion)."""
    return asyncio.run(_traffic(stack))


async def _traffic(stack: RunningStack) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/api/rag/stream", params={"q": QUESTION, "no_cache": "true"}) as sse:
            got = [ev async for ev in iter_sse(sse)]
        assert got[-1].event == "done", got[-1].data
        watch = await session.post(
            f"{stack.url}/api/watches", json={"prefix": "monitoring_watch/", "collection": "default", "interval_s": 1}
        )
        assert watch.status == 201, await watch.text()
        return {"watch_id": (await watch.json())["watch"]["watch_id"]}


def _prometheus(stack: RunningStack) -> str:
    return f"http://127.0.0.1:{stack.ports['DDNRAG_PROMETHEUS_PORT']}"


def query(stack: RunningStack, promql: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{_prometheus(stack)}/api/v1/query", params={"query": promql}, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def eventually(stack: RunningStack, promql: str, check: Any, timeout_s: float = 90) -> list[dict[str, Any]]:
    """Polls `promql` until `check(result)` holds (scrapes land every second), else fails with
    the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = query(stack, promql)
        if check(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{promql} never satisfied the check; last result: {result}")
        time.sleep(0.5)


def _labels(result: list[dict[str, Any]], label: str) -> set[str]:
    return {r["metric"].get(label, "") for r in result if float(r["value"][1]) > 0}


def test_prometheus_scrapes_every_service_and_answers_promql(stack: RunningStack, traffic: dict[str, Any]) -> None:
    every = GRPC_JOBS | {"gateway"}
    assert _labels(eventually(stack, "up == 1", lambda r: _labels(r, "job") >= every), "job") >= every
    # gRPC semantic conventions: server side in every service, client side in their callers.
    eventually(
        stack,
        "sum by (job) (grpc_server_call_duration_seconds_count)",
        lambda r: _labels(r, "job") >= GRPC_JOBS,
    )
    answer = 'grpc_method="ddnrag.llm.v1.LlmService/Answer"'
    eventually(stack, f"grpc_server_call_duration_seconds_count{{job='llm_gateway',{answer},grpc_status='OK'}}", bool)
    # The gateway stops reading at the `done` event: OK when the call had ended, else CANCELLED.
    eventually(
        stack,
        f"sum by (grpc_status) (grpc_client_attempt_duration_seconds_count{{job='gateway',{answer}}})",
        lambda r: bool(_labels(r, "grpc_status")) and _labels(r, "grpc_status") <= {"OK", "CANCELLED"},
    )
    eventually(
        stack,
        'sum by (job) (grpc_client_attempt_duration_seconds_count{grpc_method="ddnrag.retriever.v1.RetrieverService/Search"})',
        lambda r: "llm_gateway" in _labels(r, "job"),
    )
    # GenAI conventions, measured by the llm_gateway for the question.
    for name in ("gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds"):
        eventually(stack, f"sum({name}_count)", lambda r: bool(r) and float(r[0]["value"][1]) >= 1)
    ttft = eventually(
        stack,
        "histogram_quantile(0.5, sum by (le) (gen_ai_server_time_to_first_token_seconds_bucket))",
        lambda r: bool(r) and r[0]["value"][1] not in ("NaN", "+Inf"),
    )
    assert float(ttft[0]["value"][1]) > 0
    # Retrieval stages of the Search the question made.
    eventually(
        stack,
        "sum by (stage) (retriever_stage_duration_seconds_count)",
        lambda r: _labels(r, "stage") >= {"embed", "bm25", "dense", "fusion", "fetch"},
    )
    # Storage per backend and operation: the chunk GETs with their TTFB, the upload's PUTs.
    eventually(
        stack, 'sum by (backend) (storage_backend_ttfb_seconds_count{operation="get"})', lambda r: _labels(r, "backend")
    )
    eventually(stack, 'sum(storage_backend_request_duration_seconds_count{operation="put"})', bool)
    # The embedder: queue time, batch sizes, texts embedded.
    for promql in (
        "sum(embedder_texts_total)",
        "sum(embedder_batch_size_count)",
        "sum(embedder_queue_time_seconds_count)",
    ):
        eventually(stack, promql, lambda r: bool(r) and float(r[0]["value"][1]) > 0)
    # Ingestion: the upload's document and chunks, and the prefix watch's last good poll.
    eventually(stack, 'retriever_ingest_documents_total{collection="default",outcome="done"}', bool)
    eventually(stack, 'retriever_ingest_chunks_total{collection="default"}', bool)
    eventually(stack, 'retriever_ingest_jobs_total{state="succeeded"}', bool)
    watched = eventually(
        stack, f'retriever_watch_last_success_timestamp_seconds{{watch_id="{traffic["watch_id"]}"}}', bool
    )
    assert abs(float(watched[0]["value"][1]) - time.time()) < 3600  # a Unix time, not a duration


def test_dashboards_and_rules_name_only_exported_metrics(stack: RunningStack) -> None:
    """The live services export (at least as HELP/TYPE lines) every metric the dashboards and the
    alert rules use; the unit test checks the same against the registries."""
    exported: set[str] = set()
    jobs = eventually(stack, "up == 1", lambda r: _labels(r, "job") >= GRPC_JOBS | {"gateway"})
    for r in jobs:
        target = r["metric"]["instance"]
        path = "/metrics"
        text = requests.get(f"http://{target}{path}", timeout=10).text
        exported |= exported_names(text)
    missing = sorted(referenced_metrics() - exported)
    assert not missing, f"dashboards or rules use metrics no service exports: {missing}"


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is absent (apt-get install chromium)")
async def test_metrics_page_draws_live_figures(stack: RunningStack, traffic: dict[str, Any]) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = stack.url + "/"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1366, "height": 900})
        page = await context.new_page()
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            await page.goto(base)
            await page.get_by_role("tab", name="Metrics").click()
            live = page.get_by_test_id("metrics-live")
            await expect(live).to_be_visible()
            await page.get_by_label("Window").select_option("15")
            await expect(live).to_have_attribute("data-window", "900")  # the 15-minute answer is drawn
            # TTFT and retrieval p50/p99 from the histograms (the question above made one each).
            for figure in ("ttft-rag", "ttft-model", "ttft-gateway", "retrieval-search"):
                cell = live.get_by_test_id(figure)
                await expect(cell.locator(".p50")).to_have_text(_MS, timeout=60_000)
                await expect(cell.locator(".p99")).to_have_text(_MS)
            rates = live.get_by_test_id("rates")
            for job in ("gateway", "llm_gateway", "retriever", "storage", "embedder"):
                await expect(rates.locator(f"tr[data-job='{job}'] .rate")).to_have_text(_RATE, timeout=30_000)
            # The per-backend storage TTFB chart: one line per backend with GETs in the window.
            chart = live.get_by_test_id("ttfb-chart")
            await expect(chart.locator("path.series").first).to_be_attached(timeout=60_000)
            await expect(chart.locator(".legend")).to_contain_text("local")
            await page.screenshot(path=str(ARTIFACTS / "metrics-live.png"), full_page=True)
        finally:
            await context.close()
            await browser.close()
    assert outside == [], f"the page fetched from outside the gateway: {outside}"
    assert errors == [], f"JavaScript errors: {errors}"


_MS = re.compile(r"^\d[\d,.]* (ms|s)$")
_RATE = re.compile(r"^\d[\d,.]*/s$")
