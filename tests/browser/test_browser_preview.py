"""Under load the explorer shows a labelled preview (a short run of the same settings) that the
full run replaces. ``NEUROTWIN_PREVIEW=always`` makes the server behave as under load."""
from __future__ import annotations

import pytest

from ui_browser import serving

# 20 s analysed: the full run takes a few seconds, the 1-s preview a fraction of that
QUERY = "?connectome=tvb76&duration_s=20"

# every distinct title of the region-spectra plot, in order, sampled every 20 ms in the page
TITLES_JS = """
window.__titles = [];
setInterval(() => {
  try {
    const t = Bokeh.documents[0].get_model_by_name('region-spectra').title.text;
    if (window.__titles[window.__titles.length - 1] !== t) window.__titles.push(t);
  } catch (e) {}
}, 20);
"""


@pytest.fixture(scope="module")
def server():
    with serving(["explorer"], env={"NEUROTWIN_PREVIEW": "always"}) as s:
        yield s


def _wait_for_preview_then_full(page):
    """Wait until the region-spectra title has shown a preview and then a full run (last)."""
    page.wait_for_function("""() => {
      const t = window.__titles || [];
      const i = t.findIndex(x => x.endsWith('— preview: 1 s'));
      return i >= 0 && t.slice(i + 1).some(x => x.includes('regions)') && !x.includes('preview'))
             && !t[t.length - 1].includes('preview');
    }""", timeout=120_000)
    page.locator(".run-summary", has_text="median spectral peak").first.wait_for()


def _titles(page) -> list[str]:
    return page.evaluate("() => window.__titles.slice()")


def test_preview_label_appears_and_the_full_run_replaces_it(new_page, server, artifacts):
    page, log = new_page()
    page.add_init_script(TITLES_JS)
    page.goto(server.url("/explorer" + QUERY))
    page.locator(".run-summary", has_text="preview: 1 s").first.wait_for(timeout=120_000)
    page.screenshot(path=str(artifacts / "explorer_preview.png"))
    _wait_for_preview_then_full(page)
    titles = [t for t in _titles(page) if "regions)" in t]
    assert titles[0].endswith("— preview: 1 s") and "preview" not in titles[-1], titles
    assert "preview" not in page.locator(".run-summary").first.inner_text()
    # a change: again the preview of the new settings first, then the full run
    page.evaluate("() => { window.__titles = []; }")
    handle = page.locator(".param-p .noUi-handle").first
    handle.focus()
    handle.press("End")
    _wait_for_preview_then_full(page)
    page.locator(".run-summary", has_text="p = 350").first.wait_for()
    assert "preview" not in page.locator(".run-summary").first.inner_text()
    page.screenshot(path=str(artifacts / "explorer_preview_replaced.png"))
    assert log.errors == []
