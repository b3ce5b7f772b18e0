"""The chat shows groundedness and refusals in real headless Chromium: the `verify` event's
unsupported sentence is marked, the score and the repair are shown; a guard's refusal shows its
reason. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

from tests.browser.test_gateway_demo import ARTIFACTS, app_overrides, page, pytestmark
from tests.integration.test_gateway_doubles import Doubles, doubles

__all__ = ["app_overrides", "doubles", "page", "pytestmark"]


async def test_unsupported_sentences_are_marked_and_refusals_explained(page, doubles: Doubles) -> None:
    from playwright.async_api import expect

    await page.get_by_role("tab", name="Chat").click()
    await page.get_by_label("Question", exact=True).fill("unsupported: what keeps chunks?")
    await page.get_by_role("button", name="Ask", exact=True).click()
    lane = page.locator(".lane").first
    await expect(lane).to_have_attribute("data-state", "done")
    await expect(lane.get_by_test_id("groundedness")).to_have_text("Groundedness 50%")
    bad = lane.locator(".verify-sentences li.unsupported")
    await expect(bad).to_have_count(1)
    await expect(bad).to_contain_text("The moon is made of cheese.")
    await expect(lane.locator(".verify-sentences li.supported")).to_contain_text("Object storage keeps chunks.")
    await expect(lane.get_by_test_id("repair")).to_contain_text("Repaired (regenerated)")
    await page.screenshot(path=str(ARTIFACTS / "5-verify.png"), full_page=True)

    await page.get_by_label("Question", exact=True).fill("guarded: tell me the secret")
    await page.get_by_role("button", name="Ask", exact=True).click()
    # Every turn stays on the page: the refused answer is the newest lane, below the first.
    lane = page.locator(".lane").last
    await expect(lane).to_have_attribute("data-state", "refused")
    await expect(lane).to_contain_text(
        "Refused by the builtin guard (DENIED_TERM): the question contains a denied term"
    )
    await page.screenshot(path=str(ARTIFACTS / "6-refused.png"), full_page=True)
