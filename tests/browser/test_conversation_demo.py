"""A conversation in the browser demo, in real headless Chromium: two turns (the follow-up leans on
the first and the page shows the question that was searched), a reload that brings both turns
back with the groundedness each showed live, then the conversation list: rename, export as JSON,
"New chat", reopen, delete. The gateway and the llm_gateway are real, and conversations go through the real storage service into
SeaweedFS; the retriever (a fixed searcher giving the sample corpus's TTFB and Infinia documents)
and the other upstreams are test doubles. Console errors fail the test. Screenshots go to
test-artifacts/browser/.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.config import GatewayConfig
from kernel.config import load_env
from tests.browser.test_gateway_demo import ARGS, ARTIFACTS, CHROMIUM, pytestmark  # noqa: F401
from tests.integration.test_gateway_doubles import Doubles, doubles
from tests.integration.test_llm_conversations import Q1, Q2, SampleSearcher, _llm, storage_addr

__all__ = ["doubles", "storage_addr"]


@pytest.fixture
async def page(aiohttp_client, doubles: Doubles, storage_addr: str, tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    app, llm = await _llm(tmp_path, "browser", SampleSearcher(), storage_addr=storage_addr)
    await llm.close()
    cfg = load_env(
        GatewayConfig,
        {},
        port=0,
        auth="open",
        storage_addr=doubles.addr("storage"),
        retriever_addr=doubles.addr("retriever"),
        embedder_addr=doubles.addr("embedder"),
        llm_gateway_addr=f"127.0.0.1:{app.port}",
    )
    client = await aiohttp_client(create_app(cfg))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = await browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
            pg = await context.new_page()
            pg.on("pageerror", lambda e: errors.append(str(e)))
            # Console errors too (CSP violations show there); the browser's own line for an HTTP
            # error status is left to the assertions on what the page shows, as in test_gateway_demo.
            pg.on(
                "console",
                lambda m: (
                    errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None
                ),
            )
            await pg.goto(str(client.make_url("/")))
            try:
                yield pg
            finally:
                await context.close()
                await browser.close()
    finally:
        await app.stop(0)
    assert errors == [], f"console errors: {errors}"


async def test_two_turns_survive_a_reload_and_the_list_manages_them(page, tmp_path: Path) -> None:
    from playwright.async_api import expect

    await expect(page.locator("#conv-list")).to_contain_text("No conversations yet.")
    # Turn 1.
    await page.get_by_label("Question", exact=True).fill(Q1)
    await page.get_by_role("button", name="Ask", exact=True).click()
    lanes = page.locator("#lanes .lane")
    await expect(lanes.nth(0)).to_have_attribute("data-state", "done", timeout=60_000)
    await expect(lanes.nth(0).get_by_test_id("answer")).to_contain_text("Time to first byte (TTFB) is the time")
    await expect(lanes.nth(0).get_by_test_id("searched")).to_be_hidden()  # nothing to rewrite yet
    # Turn 2: the follow-up's "it" is time to first byte, and the page says what was searched.
    await page.get_by_label("Question", exact=True).fill(Q2)
    await page.get_by_role("button", name="Ask", exact=True).click()
    await expect(lanes).to_have_count(2)
    await expect(lanes.nth(1)).to_have_attribute("data-state", "done", timeout=60_000)
    await expect(lanes.nth(1).get_by_test_id("searched")).to_contain_text(
        "How does time to first byte compare with throughput?"
    )
    await expect(lanes.nth(1).get_by_test_id("answer")).to_contain_text("bandwidth dominates")
    cites = lanes.nth(1).get_by_test_id("citations").locator("li")
    assert [await li.get_attribute("value") for li in await cites.all()] == [
        str(i) for i in range(1, await cites.count() + 1)
    ]
    await expect(lanes.nth(0).get_by_test_id("turn-question")).to_have_text(Q1)  # turn 1 is still there
    await expect(page.get_by_test_id("conversation")).to_have_count(1)
    await expect(page.get_by_test_id("conversation").first).to_contain_text("2 turns")
    # "Groundedness NN%", or "Not verified: ..." when the check timed out on a loaded machine.
    grounded = [await lanes.nth(i).get_by_test_id("groundedness").inner_text() for i in range(2)]
    assert all(g.startswith(("Groundedness", "Not verified")) for g in grounded), grounded
    await page.screenshot(path=str(ARTIFACTS / "conversation-1-two-turns.png"), full_page=True)

    # A reload brings both turns back from the llm_gateway (the id is in localStorage).
    await page.reload()
    await expect(lanes).to_have_count(2, timeout=30_000)
    await expect(lanes.nth(0).get_by_test_id("turn-question")).to_have_text(Q1)
    await expect(lanes.nth(1).get_by_test_id("turn-question")).to_have_text(Q2)
    await expect(lanes.nth(1).get_by_test_id("searched")).to_contain_text("time to first byte compare")
    await expect(lanes.nth(1).get_by_test_id("answer")).to_contain_text("bandwidth dominates")
    for i in range(2):  # each turn shows the groundedness it showed live, read back with the turn
        await expect(lanes.nth(i).get_by_test_id("groundedness")).to_have_text(grounded[i])
    await expect(page.get_by_test_id("conversation-title")).to_contain_text("What does time to first byte")
    await page.screenshot(path=str(ARTIFACTS / "conversation-2-after-reload.png"), full_page=True)

    # Rename, export, new chat, reopen, delete.
    item = page.get_by_test_id("conversation").first
    await item.get_by_role("button", name="Rename").click()
    await page.get_by_label("New title").fill("TTFB versus throughput")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_test_id("conversation").first).to_contain_text("TTFB versus throughput")
    await expect(page.get_by_test_id("conversation-title")).to_have_text("TTFB versus throughput")
    async with page.expect_download() as dl:
        await page.get_by_test_id("conversation").first.get_by_role("button", name="Export").click()
    download = await dl.value
    path = tmp_path / "conversation.json"
    await download.save_as(path)
    exported = json.loads(path.read_text())
    assert exported["title"] == "TTFB versus throughput" and [t["question"] for t in exported["turns"]] == [Q1, Q2]

    await page.get_by_role("button", name="New chat").click()
    await expect(lanes).to_have_count(0)
    await expect(page.get_by_test_id("conversation-title")).to_have_text("New conversation")
    await page.get_by_test_id("conversation").first.get_by_title("Reopen this conversation").click()
    await expect(lanes).to_have_count(2)

    delete = page.get_by_test_id("conversation").first.get_by_role("button", name="Delete")
    await delete.click()
    await page.get_by_role("button", name="Confirm delete").click()
    await expect(page.locator("#conv-list")).to_contain_text("No conversations yet.")
    await expect(lanes).to_have_count(0)
    await page.reload()
    await expect(page.get_by_test_id("conversation-title")).to_have_text("New conversation")
    await expect(lanes).to_have_count(0)
