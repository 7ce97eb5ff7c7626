"""Fixtures of the browser tests (helpers in ui_browser.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ui_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ConsoleLog


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


# Module scope, not session: Playwright's sync API runs an asyncio loop in the main thread
# while it is open, and code under test in later (non-browser) modules that schedules work on
# "the running loop" would queue it on Playwright's idle loop instead.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        # niced: the browsers must not starve the server under test of the machine's cores
        b = p.chromium.launch(executable_path=str(Path(__file__).with_name("chromium-nice")),
                              args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def new_page(browser):
    """``new_page()`` -> (page, ConsoleLog) in a fresh browser context; closed after the test."""
    contexts = []

    def make(width=1400, height=2000):
        ctx = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        return page, ConsoleLog(page)

    yield make
    for ctx in contexts:
        ctx.close()


