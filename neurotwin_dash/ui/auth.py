"""Password login for ``neurotwin serve --basic-auth`` (a Bokeh/Panel auth module).

``neurotwin serve`` passes this file to ``panel serve --auth-module``; the server process loads it
by path and uses its module-level ``get_user``, ``login_url``, ``LoginHandler``, ``logout_url`` and
``LogoutHandler``. It replaces Panel's built-in basic-auth page because that one

* needs the credentials as a JSON file or on the command line (a plaintext copy in the temp
  folder, or a password visible in ``ps``),
* lets anyone try passwords as fast as the server answers,
* sets its cookies without ``SameSite`` and the form carries no CSRF token.

Here the credentials file is read once, in the server process, from the path in
``$NEUROTWIN_BASIC_AUTH_FILE`` (the user's own file, which must not be readable by other users);
the cookie secret comes from ``$PANEL_COOKIE_SECRET``. Failed logins are throttled per user name
and per client address with an exponentially growing lockout (:class:`Throttle`); while locked,
passwords are not even compared. Login cookies are ``HttpOnly; SameSite=Lax`` and ``Secure`` when
the request came over HTTPS (behind a proxy: ``neurotwin serve --use-xheaders``). The login form
carries a double-submit CSRF token (a random value in a ``SameSite=Strict`` cookie and in the form).
"""
from __future__ import annotations

import hmac
import html
import os
import secrets
import threading
import time
import urllib.parse

from tornado.web import RequestHandler

from neurotwin_dash.ui.serve import AUTH_FILE_ENV, read_credentials

__all__ = ["Throttle", "get_user", "login_url", "LoginHandler", "logout_url", "LogoutHandler"]

login_url = "/login"
logout_url = "/logout"
USER_COOKIE = "user"
CSRF_COOKIE = "neurotwin_csrf"
#: Days a login cookie stays valid.
LOGIN_DAYS = 1.0


class Throttle:
    """Exponential lockout after failed logins, per key (a user name, a client address).

    After ``free`` failures of a key, each further failure locks the key for
    ``base_s * 2**(n - free - 1)`` seconds (``n`` failures so far), at most ``max_s``: a typo costs
    nothing, 50 guesses at a password take hours. A success clears the keys it names. At most
    ``max_keys`` keys are remembered (the oldest are forgotten first), so a flood of random user
    names cannot grow the server's memory.
    """

    def __init__(self, free: int = 3, base_s: float = 1.0, max_s: float = 900.0,
                 max_keys: int = 10_000, clock=time.monotonic):
        self.free, self.base_s, self.max_s, self.max_keys, self.clock = free, base_s, max_s, max_keys, clock
        self._fails: dict[str, tuple[int, float]] = {}   # key -> (failures, locked until)
        self._lock = threading.Lock()

    def wait_s(self, *keys: str) -> float:
        """Seconds until every key in ``keys`` may try again (0 when none is locked)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [self._fails.get(k, (0, 0.0))[1] - now for k in keys])

    def failed(self, *keys: str) -> None:
        """Count one failed attempt for each key."""
        now = self.clock()
        with self._lock:
            for k in keys:
                n = self._fails.pop(k, (0, 0.0))[0] + 1
                delay = 0.0 if n <= self.free else min(self.max_s, self.base_s * 2 ** (n - self.free - 1))
                self._fails[k] = (n, now + delay)     # re-inserted last: dicts keep insertion order
            while len(self._fails) > self.max_keys:
                self._fails.pop(next(iter(self._fails)))

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of ``keys``."""
        with self._lock:
            for k in keys:
                self._fails.pop(k, None)


THROTTLE = Throttle()
_CREDENTIALS: dict[str, str] = {}


def _credentials() -> dict[str, str]:
    """The user -> password mapping, read once from ``$NEUROTWIN_BASIC_AUTH_FILE``."""
    if not _CREDENTIALS:
        path = os.environ.get(AUTH_FILE_ENV)
        if not path:
            raise RuntimeError(f"{AUTH_FILE_ENV} is not set: start the server with neurotwin serve --basic-auth")
        _CREDENTIALS.update(read_credentials(path))
    return _CREDENTIALS


def password_ok(user: str, password: str) -> bool:
    """Constant-time check of ``password`` for ``user`` (unknown users take as long as known ones)."""
    creds = _credentials()
    expected = creds.get(user)
    ok = hmac.compare_digest((expected or secrets.token_hex(16)).encode(), password.encode())
    return expected is not None and ok


def get_user(request_handler):
    """The logged-in user name from the signed cookie, or None (Bokeh then redirects to the login)."""
    user = request_handler.get_secure_cookie(USER_COOKIE, max_age_days=LOGIN_DAYS)
    return user.decode("utf-8") if user else None


def _safe_next(url: str | None) -> str:
    """Only local absolute paths as the page to return to after login (no open redirect)."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


_MESSAGES = {"invalid": "Invalid user name or password.",
             "csrf": "The login form expired; please try again.",
             "locked": "Too many failed attempts: wait {wait} s before trying again."}

LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>neurotwin-dash — login</title>
  <link rel="icon" href="data:,">
  <style>
    body {{ font-family: system-ui, sans-serif; background: #f3f5f8; margin: 0; }}
    .wrap {{ max-width: 340px; margin: 12vh auto; background: white; padding: 28px 32px;
            border-radius: 8px; box-shadow: 0 2px 12px rgba(0, 0, 0, .12); }}
    h1 {{ font-size: 20px; color: #1f4e79; margin: 0 0 6px; }}
    p {{ color: #444; margin: 0 0 16px; }}
    input {{ width: 100%; box-sizing: border-box; padding: 9px; margin: 6px 0; border: 1px solid #bbb;
            border-radius: 4px; font-size: 15px; }}
    button {{ width: 100%; padding: 10px; margin-top: 10px; background: #1f4e79; color: white;
             border: 0; border-radius: 4px; font-size: 15px; cursor: pointer; }}
    .errormessage {{ color: #b00020; font-weight: bold; min-height: 1em; }}
  </style>
</head>
<body>
  <div class="wrap">
    <form class="login-form" action="{action}" method="post">
      <h1>neurotwin-dash</h1>
      <p>Log in to use the dashboards.</p>
      <p class="errormessage">{error}</p>
      <input type="hidden" name="csrf_token" value="{csrf}">
      <input type="hidden" name="next" value="{next}">
      <input name="username" type="text" autocapitalize="off" autocorrect="off" placeholder="user name" autofocus>
      <input name="password" type="password" placeholder="password">
      <button type="submit">Log in</button>
    </form>
  </div>
</body>
</html>
"""


def _https(handler) -> bool:
    return handler.request.protocol == "https"


class LoginHandler(RequestHandler):
    """GET: the login form (with a fresh CSRF token); POST: check it, the throttle, the password."""

    def get(self):
        token = secrets.token_urlsafe(32)
        # path: the login page's own (with any --prefix), so the form's POST carries it back
        self.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=_https(self),
                        path=self.request.path)
        code = self.get_argument("error", "")
        wait = THROTTLE.wait_s(f"ip:{self.request.remote_ip}")
        if wait > 0:
            code = "locked"
        message = _MESSAGES.get(code, "").format(wait=int(wait) + 1)
        self.set_header("Cache-Control", "no-store")
        self.write(LOGIN_PAGE.format(action=html.escape("." + login_url), error=html.escape(message),
                                     csrf=html.escape(token),
                                     next=html.escape(_safe_next(self.get_argument("next", "/")))))

    def post(self):
        back = urllib.parse.quote(_safe_next(self.get_argument("next", "/")), safe="/")
        retry = f".{login_url}?next={back}&error="
        sent, cookie = self.get_argument("csrf_token", ""), self.get_cookie(CSRF_COOKIE, "")
        if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
            self.redirect(retry + "csrf", status=303)
            return
        user = self.get_argument("username", "")
        keys = (f"user:{user}", f"ip:{self.request.remote_ip}")
        if THROTTLE.wait_s(*keys) > 0:       # locked: the password is not even compared
            self.redirect(retry + "locked", status=303)
            return
        if not password_ok(user, self.get_argument("password", "")):
            THROTTLE.failed(*keys)
            self.redirect(retry + "invalid", status=303)
            return
        THROTTLE.succeeded(*keys)
        self.clear_cookie(CSRF_COOKIE, path=self.request.path)
        self.set_secure_cookie(USER_COOKIE, user, expires_days=LOGIN_DAYS, httponly=True,
                               samesite="Lax", secure=_https(self), path="/")
        self.redirect(_safe_next(self.get_argument("next", "/")), status=303)


class LogoutHandler(RequestHandler):
    """Clear the login cookie and go back to the login page."""

    def get(self):
        self.clear_cookie(USER_COOKIE, path="/")
        self.redirect("." + login_url)
