"""The issue's browser flow against the REAL stack (`rag up`: SeaweedFS, the four services and the
gateway as processes), in Debian's headless Chromium: upload a document, watch the ingestion panel
reach 100%, ask a question about it, see the streamed answer citing it with the TTFT badge, then
run a short storage benchmark, see the chart drawn, and see Business impact computed from that
run. Screenshots go to test-artifacts/browser/stack-*.png."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from testkit.stack import RunningStack, start_stack
from tests.browser.test_gateway_demo import ARGS, ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]

DOC = """# Project Heliotrope storage tiering

Project Heliotrope moves cold training shards from the flash tier to the capacity tier after
fourteen days without a read. The Heliotrope mover runs every night at 02:00 and was written by
the platform team in Lisbon. It keeps hot shards on flash so GPU data loaders never wait.
"""


TRACE_URL = "http://traces.example/trace/{trace_id}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # No OTLP endpoint: trace ids are made and shown, nothing is exported; a viewer link is set.
    s = start_stack(tmp_path_factory.mktemp("stack") / "data", extra_env={"DDNRAG_GATEWAY_TRACE_URL": TRACE_URL})
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def page(stack: RunningStack) -> AsyncIterator:  # Playwright's Page
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1366, "height": 850})
        pg = await context.new_page()
        errors: list[str] = []
        outside: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        # Console errors too, except the browser's own line for an HTTP error status (provoked on purpose).
        pg.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None,
        )
        pg.on(
            "request",
            lambda r: None if r.url.startswith((stack.url, "blob:", "data:")) else outside.append(r.url),
        )
        await pg.goto(stack.url + "/")
        try:
            yield pg
        finally:
            await context.close()
            await browser.close()
        assert outside == [], f"the page fetched from outside the gateway: {outside}"
        assert errors == [], f"JavaScript errors: {errors}"


def _bucket_keys(stack: RunningStack, prefix: str) -> list[str]:
    import json

    import boto3
    from botocore.config import Config

    creds = json.loads((stack.data_dir / "secrets" / "s3-credentials.json").read_text())
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}",
        aws_access_key_id=creds["access_key_id"],
        aws_secret_access_key=creds["secret_access_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    return [o["Key"] for o in s3.list_objects_v2(Bucket="ddnrag", Prefix=prefix).get("Contents", [])]


async def test_real_stack_flow(page, stack: RunningStack, tmp_path: Path) -> None:
    from playwright.async_api import expect

    await expect(page.locator("#health-pill .txt")).to_have_text("all services serving", timeout=60_000)

    await page.get_by_role("tab", name="Documents").click()
    doc = tmp_path / "heliotrope-tiering.md"
    doc.write_text(DOC)
    await page.locator("#file-input").set_input_files(str(doc))
    panel = page.locator("#ingest-panel")
    await expect(panel).to_have_attribute("data-state", "done", timeout=120_000)
    await expect(panel.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    await expect(page.locator("#docs-table tbody")).to_contain_text("heliotrope-tiering.md", timeout=30_000)
    await page.screenshot(path=str(ARTIFACTS / "stack-1-documents.png"), full_page=True)
    docs = await asyncio.to_thread(_bucket_keys, stack, "docs/default/")
    assert any(k.endswith("/heliotrope-tiering.md") for k in docs), docs
    # A binary file posing as text is refused; neither its final nor its staging object remains.
    bad = tmp_path / "blob.txt"
    bad.write_bytes(bytes(range(256)) * 64)
    await page.locator("#file-input").set_input_files(str(bad))
    await expect(page.locator("#upload-msg [role=alert]")).to_contain_text("UTF-8")
    await asyncio.sleep(1.5)  # the gateway deletes a staging object twice, the second time after 1 s
    assert await asyncio.to_thread(_bucket_keys, stack, "uploads/staging/") == []
    assert not any(k.endswith("/blob.txt") for k in await asyncio.to_thread(_bucket_keys, stack, "docs/"))

    await page.get_by_role("tab", name="Chat").click()
    await page.get_by_label("Question", exact=True).fill("When does the Heliotrope mover run?")
    await page.get_by_role("button", name="Ask", exact=True).click()
    lane = page.locator(".lane").first
    await expect(lane).to_have_attribute("data-state", "done", timeout=120_000)
    await expect(lane.get_by_test_id("answer")).not_to_be_empty()
    await expect(lane.get_by_test_id("citations")).to_contain_text("heliotrope-tiering.md")
    await expect(lane.get_by_test_id("ttft-badge")).to_have_text(re.compile(r"TTFT [\d.,]+ (ms|s)"))
    await expect(lane.get_by_test_id("waterfall").locator("svg rect").first).to_be_visible()
    # The answer's trace id under the waterfall, linked to the configured trace viewer.
    trace_link = lane.get_by_test_id("trace-id").get_by_role("link")
    await expect(trace_link).to_have_text(re.compile(r"^[0-9a-f]{32}$"))
    trace_id = await trace_link.inner_text()
    assert await trace_link.get_attribute("href") == TRACE_URL.replace("{trace_id}", trace_id)
    await page.screenshot(path=str(ARTIFACTS / "stack-2-chat.png"), full_page=True)

    await page.get_by_role("tab", name="Benchmark").click()
    await page.get_by_role("radio", name="Custom").check()
    await page.get_by_label("Custom concurrency levels").fill("1,2")
    await page.get_by_label("Object size").select_option("4096")
    await page.get_by_label("Ops per level").fill("10")
    await page.locator("#bench-label").fill("browser-test")
    await page.get_by_role("button", name="Run benchmark").click()
    chart = page.locator("#bench-chart")
    await expect(chart).to_have_attribute("data-state", "done", timeout=120_000)
    await expect(chart.locator("path.series").first).to_be_visible()
    await expect(page.locator("#bench-table tbody tr").first).to_be_visible()
    status = await page.locator("#bench-status").inner_text()
    run_id = re.search(r"Saved run (\S+)", status).group(1)  # type: ignore[union-attr]
    await page.screenshot(path=str(ARTIFACTS / "stack-3-benchmark.png"), full_page=True)

    await page.get_by_role("tab", name="Business impact").click()
    await page.locator("#im-run").select_option(run_id)
    out = page.locator("#impact-out")
    await expect(out).to_contain_text("GPU-h/day")
    await expect(out).to_contain_text("run " + run_id)
    await expect(out).to_contain_text("No PUT measurement")  # a GET run says what it did not measure
    await page.screenshot(path=str(ARTIFACTS / "stack-4-impact.png"), full_page=True)


CLEARME = """# Project Kestrel archive tiering

Project Kestrel archives sensor logs to the capacity tier every Sunday at 04:00.
"""


async def test_clear_a_collection_and_browse_the_bucket(page, stack: RunningStack, tmp_path: Path) -> None:
    """Upload into a new collection, read the job's summary, browse and download its raw object in
    the bucket browser, then clear the collection after a confirmation that names what goes; the
    bucket no longer holds any of it. Bad input on the same real stack gets plain 4xx answers."""
    import json
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from playwright.async_api import expect

    await expect(page.locator("#health-pill .txt")).to_have_text("all services serving", timeout=60_000)
    await expect(page.get_by_test_id("device-badge")).to_contain_text("all-MiniLM-L6-v2", timeout=30_000)

    await page.get_by_role("tab", name="Documents").click()
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept("kestrel")))  # "New collection..." asks a name
    await page.locator("#doc-collection").select_option(label="New collection\u2026")
    await expect(page.locator("#doc-collection")).to_have_value("kestrel")
    doc = tmp_path / "kestrel.md"
    doc.write_text(CLEARME)
    await page.locator("#file-input").set_input_files(str(doc))
    panel = page.locator("#ingest-panel")
    await expect(panel).to_have_attribute("data-state", "done", timeout=120_000)
    summary = panel.get_by_test_id("job-summary")
    await expect(summary.get_by_test_id("job-files")).to_contain_text("kestrel.md")
    await expect(summary.get_by_test_id("job-device")).to_contain_text("cpu")
    await expect(summary.locator('[data-stage="embed"]')).to_be_visible()
    await page.screenshot(path=str(ARTIFACTS / "stack-5-job-summary.png"), full_page=True)
    job_id = re.search(r"Job (\w+)", await panel.inner_text()).group(1)  # type: ignore[union-attr]

    env = {**stack.env, "PYTHONPATH": ""}
    rag = str(Path(sys.executable).parent / "rag")
    shown = await asyncio.to_thread(
        subprocess.run, [rag, "jobs", "show", job_id], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert "time per stage" in shown.stdout and "kestrel.md" in shown.stdout, shown.stdout

    await page.get_by_role("tab", name="Storage").click()
    await page.get_by_label("Object key prefix").fill("docs/kestrel/")
    await page.get_by_role("button", name="List", exact=True).click()
    table = page.locator("#obj-table")
    await expect(table).to_have_attribute("data-state", "done")
    key = next(k for k in await asyncio.to_thread(_bucket_keys, stack, "docs/kestrel/") if k.endswith("kestrel.md"))
    async with page.expect_download() as got:
        await page.get_by_role("button", name="Download " + key).click()
    saved = tmp_path / "downloaded.md"
    await (await got.value).save_as(saved)
    assert saved.read_text() == CLEARME
    await page.screenshot(path=str(ARTIFACTS / "stack-6-bucket.png"), full_page=True)

    row = page.locator('#cols-table tr[data-collection="kestrel"]')
    await expect(row).to_contain_text("1")
    await row.get_by_role("button", name="Clear collection kestrel").click()
    dialog = page.get_by_role("alertdialog")
    await expect(dialog).to_contain_text("1 document(s)")
    await dialog.get_by_role("button", name="Clear kestrel").click()
    await expect(page.get_by_test_id("cleared")).to_contain_text("Cleared kestrel: 1 document(s)")
    await expect(row).to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "stack-7-cleared.png"), full_page=True)
    for prefix in ("docs/kestrel/", "chunks/kestrel/", "index/kestrel/", "collections/kestrel", f"jobs/{job_id}/"):
        assert await asyncio.to_thread(_bucket_keys, stack, prefix) == [], prefix

    def call(method: str, path: str) -> tuple[int, dict]:
        req = urllib.request.Request(stack.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    status, body = await asyncio.to_thread(call, "DELETE", "/api/collections/kestrel")
    assert (status, body["error"]["reason"]) == (404, "COLLECTION_NOT_FOUND"), body
    assert "does not exist" in body["error"]["message"]
    status, body = await asyncio.to_thread(call, "GET", "/api/objects?prefix=docs/../leases/")
    assert status == 400 and "'..'" in body["error"]["message"], body
    status, body = await asyncio.to_thread(call, "DELETE", "/api/objects?prefix=index/")
    assert status == 409 and body["error"]["reason"] == "MANAGED_PREFIX", body
    gone = await asyncio.to_thread(
        subprocess.run,
        [rag, "collections", "delete", "kestrel", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gone.returncode == 1 and "does not exist" in gone.stdout + gone.stderr, (gone.stdout, gone.stderr)


AB_DOC = """# Object storage latency notes

Time to first byte is the delay before the first body byte of an object arrives. Small chunk
objects make TTFB the cost that decides how soon a retrieval-augmented answer can start.
An emulated backend adds a fixed round-trip time to every request on purpose.
"""


async def _ab_setup(stack: RunningStack) -> str:
    """An emulated backend in front of the stack's own bucket, and a small collection `abtest`;
    returns the default backend's name."""
    import json

    from clients.retriever import RetrieverClient
    from clients.storage import StorageClient
    from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
    from ddnrag.storage.v1 import storage_service_pb2 as spb

    creds = json.loads((stack.data_dir / "secrets" / "s3-credentials.json").read_text())
    async with StorageClient(stack.addr("DDNRAG_STORAGE_PORT")) as storage:
        await storage.put_backend(
            spb.Backend(
                name="remote-emulated",
                kind=spb.BACKEND_KIND_S3_COMPATIBLE,
                endpoint=f"http://127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}",
                bucket="ddnrag",
                access_key_id=creds["access_key_id"],
                secret_access_key=creds["secret_access_key"],
                shaping=spb.Shaping(rtt_ms=5),
            )
        )
        await storage.put("docs/abtest/notes/latency.md", AB_DOC.encode())
        default = (await storage.list_backends()).default_backend
    async with RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"), timeout_s=120) as retriever:
        events = [e async for e in retriever.ingest("abtest", ["docs/abtest/notes/latency.md"])]
    assert events[-1].job.state == rpb.JOB_STATE_SUCCEEDED, events[-1].job
    return default


async def test_ab_run_from_the_browser_with_report_and_dashboard(page, stack: RunningStack, tmp_path: Path) -> None:
    """Run an A/B from the A/B tab, see the verdicts and tables, open the self-contained report,
    and see the comparison dashboard list the run; no console error, nothing fetched from outside."""
    from playwright.async_api import expect

    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.context.on(
        "request",
        lambda r: None if r.url.startswith((stack.url, "blob:", "data:")) else outside.append(r.url),
    )
    default = await _ab_setup(stack)
    await page.reload()
    await page.get_by_role("tab", name="A/B").click()
    await expect(page.locator("#ab-b option[value=remote-emulated]")).to_have_count(1, timeout=30_000)
    await page.locator("#ab-a").select_option(default)
    await page.locator("#ab-b").select_option("remote-emulated")
    await expect(page.locator("#ab-b")).to_contain_text("remote-emulated (emulated)")
    collection = page.locator("#ab-collection")
    if await collection.evaluate("el => el.tagName") == "SELECT":  # a collection picker
        await collection.select_option("abtest")
    else:
        await collection.fill("abtest")
    qfile = tmp_path / "questions.txt"
    qfile.write_text(
        "What is time to first byte?\nWhy do small chunk objects matter?\nWhat does an emulated backend add?\n"
    )
    await page.locator("#ab-file").set_input_files(str(qfile))
    await expect(page.locator("#ab-questions")).to_have_value(re.compile("emulated backend add"))
    await page.get_by_label("Passes").fill("2")
    await page.get_by_role("button", name="Run A/B").click()
    result = page.locator("#ab-result")
    await expect(page.get_by_test_id("ab-table-warm")).to_be_visible(timeout=120_000)
    await expect(page.get_by_test_id("ab-verdict-cold-fetch_ttfb")).to_contain_text("95% CI")
    await expect(result).to_contain_text("remote-emulated (emulated)")
    title = await page.locator("#ab-result-title").inner_text()
    run_id = re.search(r"Run (\S+):", title).group(1)  # type: ignore[union-attr]
    await page.screenshot(path=str(ARTIFACTS / "stack-5-ab.png"), full_page=True)

    async with page.context.expect_page() as popup_info:
        await page.get_by_role("button", name="Open report").click()
    report = await popup_info.value
    await report.wait_for_load_state()
    await expect(report.locator("h1")).to_contain_text(run_id)
    assert await report.locator("svg").count() >= 4
    await expect(report.locator("body")).to_contain_text("remote-emulated (emulated)")
    await report.screenshot(path=str(ARTIFACTS / "stack-6-ab-report.png"), full_page=True)
    await report.close()

    # The pair's own page, at its own address (#compare/A/B), from the run's link.
    await page.locator("#ab-status a.pair-link").click()
    await expect(page).to_have_url(re.compile(rf"#compare/{re.escape(default)}/remote-emulated$"))
    await expect(page.locator("#pair-title")).to_have_text(f"{default} vs remote-emulated (emulated)")
    await expect(page.locator("#dash-runs tbody tr", has_text=run_id)).to_have_count(1)
    verdict = page.get_by_test_id("dash-verdict")
    await expect(verdict).to_contain_text(run_id)
    # "X faster than Y ... by N% (95% CI ...)" only when the interval excludes zero.
    said = re.compile(r"faster than .* by [\d.]+% \(95% CI [-\d.]+\.\.[-\d.]+%\)|no significant difference")
    for phase in ("cold", "warm"):
        await expect(page.get_by_test_id(f"pair-verdict-{phase}-fetch_ttfb")).to_contain_text(said)
    await expect(page.locator("#dash-trend svg")).to_be_visible()
    await expect(page.locator("#dash-live div[data-backend=remote-emulated]")).to_have_count(1)
    await expect(page.locator("#dash-live")).to_contain_text(re.compile(r"GET TTFB p50 .* reads|no reads"))
    await page.screenshot(path=str(ARTIFACTS / "stack-7-ab-dashboard.png"), full_page=True)
    # Opened by its address alone (either order of the pair), and the picker moves to another pair.
    await page.goto(f"{stack.url}/#compare/remote-emulated/{default}")
    await expect(page.locator("#pair-title")).to_have_text(f"remote-emulated (emulated) vs {default}")
    await expect(page.locator("#dash-runs tbody tr", has_text=run_id)).to_have_count(1)
    await expect(page.get_by_test_id("pair-links").locator("a[aria-current=page]")).to_have_count(1)
    await page.locator("#dash-a").select_option(default)
    await page.locator("#dash-b").select_option("remote-emulated")
    await expect(page).to_have_url(re.compile(rf"#compare/{re.escape(default)}/remote-emulated$"))
    await expect(page.locator("#pair-title")).to_have_text(f"{default} vs remote-emulated (emulated)")

    # Business impact from the A/B run: each figure names it.
    await page.get_by_role("tab", name="Business impact").click()
    await expect(page.locator(f"#im-run option[value='ab:{run_id}']")).to_have_count(1, timeout=30_000)
    await page.locator("#im-run").select_option(f"ab:{run_id}")
    out = page.locator("#impact-out")
    await expect(out).to_contain_text("A/B run " + run_id)
    await expect(out).to_contain_text("GPU-h/day")
    await expect(out).to_contain_text("an A/B run measures reads only")
    assert outside == [], f"the page fetched from outside the gateway: {outside}"
    assert errors == [], f"console errors: {errors}"
