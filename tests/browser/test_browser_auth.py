"""`neurotwin serve --basic-auth`: refused without login, works after logging in through the page."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from ui_browser import serving


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    creds = tmp_path_factory.mktemp("auth") / "users.txt"
    creds.write_text("alice:wonderland\n")
    creds.chmod(0o600)
    with serving(["explorer"], extra=["--basic-auth", str(creds)]) as s:
        yield s


def test_unauthenticated_request_is_redirected_to_the_login_page(server):
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(server.url("/explorer"), timeout=10)
    assert err.value.code == 302
    assert err.value.headers["Location"].lstrip(".").startswith("/login")


def test_login_through_the_page_then_the_app_works(new_page, server, artifacts):
    page, log = new_page(height=1200)
    page.goto(server.url("/explorer?connectome=single%20node&duration_s=1"))
    assert "/login" in page.url
    assert len(page.locator("input[name=csrf_token]").get_attribute("value")) >= 32   # CSRF token
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url("**/login?**error**")
    assert "/login" in page.url
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wonderland")
    page.screenshot(path=str(artifacts / "auth_login_page.png"))
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url("**/explorer**")
    page.locator(".run-summary", has_text="median spectral peak").first.wait_for(timeout=90_000)
    page.screenshot(path=str(artifacts / "auth_logged_in_explorer.png"))
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert "user" in cookies
    # the login cookie as the browser stored it: not readable by scripts, not sent cross-site
    assert cookies["user"]["httpOnly"] and cookies["user"]["sameSite"] == "Lax"
    assert [e for e in log.errors if "/login" not in e] == []
