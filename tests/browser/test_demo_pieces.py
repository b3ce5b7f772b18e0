"""The demo's smaller pieces in real headless Chromium against the real gateway and gRPC test
doubles (fast; the real-stack flow is in test_gateway_demo_stack.py): the device badge, the
collection picker, the Storage tab (collections and the bucket browser, with the confirmation
that names what a clear deletes), the About diagram drawn from the health check, the offline API
reference, and several object sizes in one benchmark request. No console errors, no outside fetch.
"""

from __future__ import annotations

import shutil

import pytest

from tests.browser.test_gateway_demo import ARTIFACTS, CHROMIUM, app_overrides, page
from tests.integration.test_gateway_doubles import Doubles, doubles

__all__ = ["app_overrides", "doubles", "page"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


async def test_badge_picker_storage_about_and_api_docs(page, doubles: Doubles) -> None:
    from playwright.async_api import expect

    doubles.storage.objects.update({"auto_ingest/a.txt": b"hello", "auto_ingest/sub/b.txt": b"bb", "other.txt": b"o"})
    await expect(page.get_by_test_id("device-badge")).to_contain_text("CPU")
    await expect(page.get_by_test_id("device-badge")).to_contain_text("double")
    await expect(page.locator("#chat-collection option[value=default]")).to_have_text("default (0 docs)")

    await page.get_by_role("tab", name="Storage").click()
    await expect(page.locator("#cols-table tbody")).to_contain_text("default")
    await page.get_by_label("Object key prefix").fill("auto_ingest/")
    await page.get_by_role("button", name="List", exact=True).click()
    table = page.locator("#obj-table")
    await expect(table).to_have_attribute("data-state", "done")
    await expect(table.locator("tbody tr")).to_have_count(3)  # the sub/ folder, a.txt and sub/b.txt (a flat listing)
    await expect(table).to_contain_text("sub/")
    async with page.expect_download() as got:
        await page.get_by_role("button", name="Download auto_ingest/a.txt").click()
    dl = await got.value
    assert dl.suggested_filename == "a.txt"
    # Clearing a prefix asks first, naming the count; Cancel deletes nothing.
    await page.get_by_role("button", name="Clear this prefix").click()
    dialog = page.get_by_role("alertdialog")
    await expect(dialog).to_contain_text("2 object(s)")
    await dialog.get_by_role("button", name="Cancel").click()
    assert "auto_ingest/a.txt" in doubles.storage.objects
    await page.get_by_role("button", name="Clear this prefix").click()
    await dialog.get_by_role("button", name="Delete 2 object(s)").click()
    await expect(page.locator("#obj-msg")).to_contain_text("Deleted 2 object(s)")
    assert sorted(doubles.storage.objects) == ["other.txt"]
    await page.screenshot(path=str(ARTIFACTS / "pieces-storage.png"), full_page=True)

    await page.get_by_role("tab", name="About").click()
    diagram = page.get_by_test_id("architecture-svg")
    for name in ("gateway", "retriever", "embedder", "storage", "llm_gateway", "default"):
        await expect(diagram.locator(f'[data-node="{name}"]')).to_have_count(1)
    await expect(diagram.locator(".node.bad")).to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "pieces-about.png"), full_page=True)

    await page.goto(page.base + "api/docs")  # type: ignore[attr-defined]
    ops = page.get_by_test_id("api-ops")
    await expect(ops.locator('[data-op="DELETE /api/collections/{name}"]')).to_contain_text("role: writer")
    await page.get_by_label("Filter").fill("bucket")
    await expect(ops.locator('[data-op="GET /api/objects"]')).to_be_visible()
    await expect(ops.locator('[data-op="POST /api/rag/query"]')).to_have_count(0)


async def test_several_object_sizes_in_one_benchmark_run(page, doubles: Doubles) -> None:
    from playwright.async_api import expect

    await page.get_by_role("tab", name="Benchmark").click()
    await page.get_by_label("Object size").select_option(["4096", "1048576"])
    async with page.expect_request(lambda r: "/api/benchmarks/stream" in r.url) as req:
        await page.get_by_role("button", name="Run benchmark").click()
    assert "sizes=4096%2C1048576" in (await req.value).url
    await expect(page.locator("#bench-chart")).to_have_attribute("data-state", "done")


async def test_theme_follows_the_system_setting(page) -> None:
    bg = "getComputedStyle(document.body).backgroundColor"
    await page.emulate_media(color_scheme="light")
    assert await page.evaluate(bg) == "rgb(244, 246, 249)"
    await page.emulate_media(color_scheme="dark")
    assert await page.evaluate(bg) == "rgb(15, 20, 26)"
    await page.screenshot(path=str(ARTIFACTS / "pieces-dark.png"))
