"""The montage designer served by `neurotwin serve`, driven in Debian's chromium."""
from __future__ import annotations

import pytest

from ui_browser import figure_data, serving, wait_for_figure_change


@pytest.fixture(scope="module")
def server():
    with serving(["montage"]) as s:
        yield s


def text_of(locator) -> str:
    return locator.evaluate("el => (el.shadowRoot ? el.shadowRoot.textContent : '') + el.textContent")


def type_into(page, css: str, text: str, nth: int = 0):
    box = page.locator(f"{css} input").nth(nth)
    box.fill(text)
    box.press("Enter")


def test_place_electrodes_with_limits_checked_inline(new_page, server, artifacts):
    page, log = new_page(height=1700)
    page.goto(server.url("/montage"))
    page.locator(".field-summary", has_text="F3 +2.00, Fp2 -2.00").first.wait_for(timeout=90_000)
    page.locator(".effect-summary", has_text="power in lPFCDL").first.wait_for(timeout=90_000)
    # every effect is shown as mean ± 95 % CI with its verdict and the number of seeds
    effect = text_of(page.locator(".effect-summary").first)
    assert "± " in effect and "5 seeds" in effect and "95 % CI" in effect, effect
    assert "sham" in effect                                     # "above sham" / "indistinguishable from sham"
    before = figure_data(page, "field-map")
    page.screenshot(path=str(artifacts / "montage_initial.png"))

    # over the per-electrode limit: inline error, montage unchanged
    type_into(page, ".number-box", "3")
    err = page.locator(".inline-error", has_text="outside the allowed range [-2, 2] mA").first
    err.wait_for()
    assert "current at electrode = 3 is outside the allowed range [-2, 2] mA" in text_of(err)
    page.screenshot(path=str(artifacts / "montage_over_limit.png"))

    # a valid change: Fp2 returns the current, F3 at 1 mA
    type_into(page, ".number-box", "1")
    return_box = page.get_by_label("return electrode (optional)")
    return_box.fill("Fp2")
    return_box.press("Enter")
    type_into(page, ".electrode-name", "F3")
    page.get_by_role("button", name="Set current").click()
    page.locator(".field-summary", has_text="F3 +1.00, Fp2 -1.00").first.wait_for(timeout=60_000)
    after = wait_for_figure_change(page, "field-map", before)
    assert after != before
    page.locator(".effect-summary", has_text="F3 +1.00, Fp2 -1.00 mA").first.wait_for(timeout=90_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "montage_after_change.png"))
    assert log.errors == []
