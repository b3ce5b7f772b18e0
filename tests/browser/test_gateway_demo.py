"""The browser demo in real headless Chromium (Debian's, driven by Playwright), clicking as a person
would: upload a document, watch the ingestion panel reach 100%, ask a question, see the streamed
answer with citations and the TTFT badge, open a citation, then run a short benchmark and see the
chart drawn. The gateway runs for real; the four services are real gRPC test doubles (see
tests/integration/test_gateway_doubles.py), so the page's behaviour is checked exactly. Screenshots
go to test-artifacts/browser/.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.test_gateway_doubles import TOKENS, Doubles, doubles, make_app

__all__ = ["doubles"]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


@pytest.fixture
def app_overrides() -> dict[str, object]:
    """Config overrides for the gateway under test (a test may parametrize this)."""
    return {}


@pytest.fixture
async def page(aiohttp_client, doubles: Doubles, app_overrides: dict[str, object]) -> AsyncIterator:
    from playwright.async_api import async_playwright

    client = await aiohttp_client(make_app(doubles, **app_overrides))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1366, "height": 850})
        pg = await context.new_page()
        outside: list[str] = []
        base = str(client.make_url("/"))
        pg.on(
            "request", lambda r: None if r.url.startswith(base) or r.url.startswith("blob:") else outside.append(r.url)
        )
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        # Console errors too (a Content-Security-Policy violation shows up there), except the
        # browser's own line for an HTTP error status, which the tests provoke on purpose.
        pg.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
        )
        await pg.goto(base)
        pg.base = base  # type: ignore[attr-defined]
        try:
            yield pg
        finally:
            await context.close()
            await browser.close()
        assert outside == [], f"the page fetched from outside the gateway: {outside}"
        assert errors == [], f"JavaScript errors: {errors}"


async def test_upload_ingest_ask_benchmark_flow(page, doubles: Doubles, tmp_path: Path) -> None:
    from playwright.async_api import expect

    await expect(page.locator("#health-pill .txt")).to_have_text("all services serving")

    # Documents: upload through the file chooser the drop zone opens, watch ingestion reach 100%.
    await page.get_by_role("tab", name="Documents").click()
    doc = tmp_path / "storage-notes.md"
    doc.write_text("# Storage\n\nObject storage keeps chunks close to the GPUs.\n")
    async with page.expect_file_chooser() as fc:
        await page.locator("#drop").click()
    await (await fc.value).set_files(str(doc))
    panel = page.locator("#ingest-panel")
    await expect(panel).to_have_attribute("data-state", "done")
    await expect(panel.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    await expect(page.get_by_test_id("chunks-progress")).to_contain_text("4 / 4")
    await expect(page.locator("#upload-msg")).to_contain_text("storage-notes.md")
    assert any(k.endswith("/storage-notes.md") and k.startswith("docs/default/") for k in doubles.storage.objects)
    await expect(page.locator("#docs-table tbody")).to_contain_text("storage-notes.md")
    await page.screenshot(path=str(ARTIFACTS / "1-documents.png"), full_page=True)

    # Chat: ask, see the streamed answer, citations, TTFT and tokens/s badges, the waterfall.
    await page.get_by_role("tab", name="Chat").click()
    await page.get_by_label("Question", exact=True).fill("What keeps chunks?")
    await page.get_by_role("button", name="Ask", exact=True).click()
    lane = page.locator(".lane").first
    await expect(lane).to_have_attribute("data-state", "done")
    await expect(lane.get_by_test_id("answer")).to_have_text("".join(TOKENS))
    await expect(lane.get_by_test_id("ttft-badge")).to_have_text(re.compile(r"TTFT 6\.00 ms"))
    await expect(lane.get_by_test_id("tps-badge")).to_have_text(re.compile(r"tokens/s 2,?500"))
    await expect(lane.get_by_test_id("citations")).to_contain_text("storage.md")
    await expect(lane.get_by_test_id("waterfall").locator("svg rect")).to_have_count(5)  # 4 bars + fetch TTFB
    await page.screenshot(path=str(ARTIFACTS / "2-chat.png"), full_page=True)
    await lane.get_by_role("button", name="Show source 1").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("chunks/default/c1")
    await expect(page.locator("#chunk-text")).to_have_text("passage 1")
    await page.screenshot(path=str(ARTIFACTS / "3-citation.png"))
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()

    # Benchmark: a short custom run; the chart draws a line per backend and series.
    await page.get_by_role("tab", name="Benchmark").click()
    await page.get_by_role("radio", name="Custom").check()
    await page.get_by_label("Custom concurrency levels").fill("1,2,4")
    await page.get_by_role("button", name="Run benchmark").click()
    chart = page.locator("#bench-chart")
    await expect(chart).to_have_attribute("data-state", "done")
    await expect(chart.locator("path.series")).to_have_count(2)  # one backend: latency + TTFB
    await expect(chart.locator("circle")).to_have_count(6)
    await expect(page.locator("#bench-table tbody tr")).to_have_count(3)
    await expect(page.locator("#bench-status")).to_contain_text("Saved run run-1")
    # The operation and the object size as the JSON names them (`object_size_bytes`), not "0 B".
    await expect(page.locator("#bench-table tbody tr").first).to_contain_text("get")
    await expect(page.locator("#bench-table tbody tr").first).to_contain_text("4.0 KiB")
    async with page.expect_download() as dl:
        await page.get_by_role("button", name="Export CSV").click()
    download = await dl.value
    assert download.suggested_filename == "benchmark-run-1.csv"
    csv_path = tmp_path / "export.csv"
    await download.save_as(csv_path)
    csv_text = await asyncio.to_thread(csv_path.read_text)
    assert csv_text.encode() == doubles.storage.objects["bench/run-1.csv"]  # the stored CSV itself
    assert len(csv_text.strip().splitlines()) == 4
    await page.get_by_label("Log scale").check()
    await expect(chart).to_contain_text("ms (log)")
    await page.screenshot(path=str(ARTIFACTS / "4-benchmark.png"), full_page=True)
    req = doubles.storage.runs["run-1"].request
    assert list(req.concurrency_levels) == [1, 2, 4] and list(req.backends) == ["default"]


async def test_backend_config_compare_and_keyboard(page, doubles: Doubles) -> None:
    from playwright.async_api import expect

    # Configuration: add a backend; the secret goes to storage and is never shown.
    await page.get_by_role("tab", name="Configuration").click()
    form = page.locator("#be-form")
    await form.get_by_label("Name").fill("ddn")
    await form.get_by_label("Kind").select_option("ddn_infinia")
    await form.get_by_label("Endpoint").fill("https://infinia.example:8111")
    await form.get_by_label("Bucket").fill("rag")
    await form.get_by_label("Access key id").fill("AKIAEXAMPLE")
    await form.get_by_label("Secret access key").fill("super-secret-value")
    await form.get_by_role("button", name="Save backend").click()
    await expect(page.locator("#be-msg")).to_contain_text("Saved ddn (credentials set)")
    await expect(page.locator("#be-table tbody tr")).to_have_count(2)
    assert "super-secret-value" not in await page.content()
    assert doubles.storage.secrets_seen == ["super-secret-value"]
    row = page.locator("#be-table tbody tr", has_text="ddn_infinia")
    await row.get_by_role("button", name="Test").click()
    await expect(row).to_contain_text("HeadBucket 1.50 ms")

    # Chat in compare mode: two lanes side by side, each with its own badges.
    await page.get_by_role("tab", name="Chat").click()
    await page.get_by_label("Storage backend").select_option("__compare__")
    await page.get_by_label("First backend to compare").select_option("default")
    await page.get_by_label("Second backend to compare").select_option("ddn")
    await page.get_by_label("Question", exact=True).fill("Which is faster?")
    await page.get_by_label("Question", exact=True).press("Enter")
    lanes = page.locator(".lane")
    await expect(lanes).to_have_count(2)
    for i in range(2):
        await expect(lanes.nth(i)).to_have_attribute("data-state", "done")
        await expect(lanes.nth(i).get_by_test_id("ttft-badge")).to_contain_text("TTFT")
    assert sorted(r.storage_backend for r in doubles.llm.requests) == ["ddn", "default"]
    summary = page.get_by_test_id("compare-summary")
    await expect(summary).to_contain_text("answered first: TTFT 6.00 ms (default) vs 6.00 ms (ddn)")
    await expect(summary).to_contain_text("TTFB 1.00 ms")
    await page.screenshot(path=str(ARTIFACTS / "5-compare.png"), full_page=True)

    # Keyboard: arrow keys move between tabs.
    await page.get_by_role("tab", name="Chat").focus()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("tab", name="Documents")).to_have_attribute("aria-selected", "true")
    await expect(page.locator("#panel-documents")).to_be_visible()

    # Metrics: health per service, device, cache hit rates.
    await page.get_by_role("tab", name="Metrics").click()
    await expect(page.get_by_test_id("metrics-health")).to_contain_text("llm_gateway")
    await expect(page.locator("#metrics-out")).to_contain_text("embedding cache75%")
    await expect(page.locator("#metrics-out")).to_contain_text("Answers streamed: 2")
    await expect(page.locator("#metrics-out")).to_contain_text("CPU")
    await page.screenshot(path=str(ARTIFACTS / "6-metrics.png"), full_page=True)


async def test_empty_question_and_upload_errors_show_messages(page, doubles: Doubles, tmp_path: Path) -> None:
    from playwright.async_api import expect

    await page.get_by_role("tab", name="Documents").click()
    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ\x90\x00")
    await page.locator("#file-input").set_input_files(str(bad))
    await expect(page.locator("#upload-msg [role=alert]")).to_contain_text("pdf, docx, pptx, xlsx, csv, html, md, txt")
    assert doubles.storage.objects == {}
    await page.get_by_role("tab", name="Chat").click()
    await page.get_by_label("Question", exact=True).fill("refuse this")
    await page.get_by_role("button", name="Ask", exact=True).click()
    await expect(page.locator(".lane [role=alert]")).to_contain_text("no index yet")


@pytest.mark.parametrize("app_overrides", [{"api_keys": ("k-browser",)}])
async def test_api_key_prompt(page, doubles: Doubles) -> None:
    from playwright.async_api import expect

    # The page loads (it is open), its first API call gets 401, so it asks for the key.
    bar = page.locator("#auth-bar")
    await expect(bar).to_be_visible()
    await page.get_by_label("This gateway needs an API key").fill("k-browser")
    await page.get_by_role("button", name="Use key").click()
    await expect(bar).to_be_hidden()
    # The header says what this key may do (GET /api/whoami): a key without role= reads and asks.
    badge = page.locator("#role-badge")
    await expect(badge).to_have_text("reader")
    await expect(badge).to_have_attribute("title", "this key may: ask, read")
    await page.get_by_label("Question", exact=True).fill("What keeps chunks?")
    await page.get_by_role("button", name="Ask", exact=True).click()
    await expect(page.locator(".lane").first).to_have_attribute("data-state", "done")
    assert "k-browser" not in await page.content()


async def test_continuous_ingestion_and_business_impact(page, doubles: Doubles) -> None:
    from playwright.async_api import expect

    await page.get_by_role("tab", name="Continuous ingestion").click()
    await page.get_by_label("Prefix", exact=True).fill("auto_ingest/")
    await page.get_by_role("button", name="Start watching").click()
    watch = page.locator("#watch-list .card").first
    await expect(watch).to_contain_text("auto_ingest/a.md")
    await expect(watch).to_contain_text("ingested")
    await watch.get_by_role("button", name="Stop").click()
    await expect(watch).to_contain_text("stopped")
    assert [w.active for w in doubles.retriever.watches.values()] == [False]

    # Two backends measured in one GET run: Business impact shows each number with its run id.
    await page.get_by_role("tab", name="Configuration").click()
    form = page.locator("#be-form")
    await form.get_by_label("Name").fill("s3")
    await form.get_by_label("Bucket").fill("b")
    await form.get_by_label("Emulated RTT (ms)").fill("20")
    await form.get_by_role("button", name="Save backend").click()
    await expect(page.locator("#be-msg [role=alert]")).to_contain_text("must say so")  # the service's rule
    await form.get_by_label("Name").fill("s3-emulated")
    await form.get_by_role("button", name="Save backend").click()
    await expect(page.locator("#be-table tbody tr")).to_have_count(2)
    await expect(page.locator("#be-table tbody tr", has_text="s3-emulated")).to_contain_text("emulated")
    assert doubles.storage.backends["s3-emulated"].shaping.rtt_ms == 20
    await page.get_by_role("tab", name="Benchmark").click()
    await page.get_by_role("radio", name="Custom").check()
    await page.get_by_label("Custom concurrency levels").fill("1,5")
    await page.get_by_role("button", name="Run benchmark").click()
    await expect(page.locator("#bench-chart")).to_have_attribute("data-state", "done")
    await expect(page.locator("#bench-chart path.series")).to_have_count(4)
    await page.get_by_role("tab", name="Business impact").click()
    await page.get_by_label("Queries per day").fill("36000")
    await page.get_by_label("GPU count").fill("1")
    card = page.get_by_test_id("impact-default")
    # 36000 queries x GET p50 5 ms (concurrency 5, the nearest to 5 chunks) x 1 GPU / 3600 = 0.05 GPU-h
    await expect(card).to_contain_text("0.05 GPU-h/day")
    await expect(card).to_contain_text("run run-1")
    await expect(card).to_contain_text("get 4.0 KiB at concurrency 5")
    await expect(card).to_contain_text("No PUT measurement")
    await expect(page.get_by_test_id("impact-ttft")).to_contain_text("0.00 ms")
    await page.screenshot(path=str(ARTIFACTS / "7-impact.png"), full_page=True)
