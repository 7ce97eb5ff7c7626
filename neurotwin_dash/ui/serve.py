"""``neurotwin serve``: the dashboards behind ``panel serve``.

This module only turns command-line options into a ``panel serve`` command line and runs it;
authentication, threads and processes are Panel/Bokeh server features (see the README section
"Serving to collaborators").
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["APPS", "apps_dir", "app_paths", "read_credentials", "panel_serve_command", "run"]

#: Served apps (name -> module in neurotwin_dash.ui), in the order of the index page.
APPS = {"explorer": "explorer", "montage": "montage", "fit": "fitmonitor"}

_ENTRY = '"""Thin entry point (written by neurotwin serve)."""\nfrom neurotwin_dash.ui.{mod} import servable\n\nservable()\n'


def apps_dir() -> Path:
    """Folder holding the thin ``panel serve`` entry points.

    The repository's ``apps/`` folder when the package runs from a checkout (editable install);
    otherwise equivalent entry scripts are written once into a per-user cache folder.
    """
    repo_apps = Path(__file__).resolve().parents[2] / "apps"
    if all((repo_apps / f"{a}.py").exists() for a in APPS):
        return repo_apps
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurotwin_dash" / "apps"
    cache.mkdir(parents=True, exist_ok=True)
    for a in APPS:
        (cache / f"{a}.py").write_text(_ENTRY.format(mod=APPS[a]))
    return cache


def app_paths(names=None) -> list[Path]:
    """Entry-point files of the apps ``names`` (all of :data:`APPS` by default)."""
    names = list(names) if names else list(APPS)
    unknown = [n for n in names if n not in APPS]
    if unknown:
        raise ValueError(f"unknown app(s) {unknown}; allowed: {', '.join(APPS)}")
    root = apps_dir()
    return [root / f"{n}.py" for n in names]


#: Login page without external resources (Panel's default pulls its logo from a CDN, which
#: a closed network answers with console errors). Jinja2, rendered by Panel's login handler.
LOGIN_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>neurotwin-dash — login</title>
  <link rel="icon" href="data:,">
  <style>
    body { font-family: system-ui, sans-serif; background: #f3f5f8; margin: 0; }
    .wrap { max-width: 340px; margin: 12vh auto; background: white; padding: 28px 32px;
            border-radius: 8px; box-shadow: 0 2px 12px rgba(0, 0, 0, .12); }
    h1 { font-size: 20px; color: #1f4e79; margin: 0 0 6px; }
    p { color: #444; margin: 0 0 16px; }
    input { width: 100%; box-sizing: border-box; padding: 9px; margin: 6px 0; border: 1px solid #bbb;
            border-radius: 4px; font-size: 15px; }
    button { width: 100%; padding: 10px; margin-top: 10px; background: #1f4e79; color: white;
             border: 0; border-radius: 4px; font-size: 15px; cursor: pointer; }
    .errormessage { color: #b00020; font-weight: bold; min-height: 1em; }
  </style>
</head>
<body>
  <div class="wrap">
    <form class="login-form" action=".{{ login_endpoint }}" method="post">
      <h1>neurotwin-dash</h1>
      <p>Log in to use the dashboards.</p>
      <p class="errormessage">{{ errormessage|escape }}</p>
      <input name="username" type="text" autocapitalize="off" autocorrect="off" placeholder="user name" autofocus>
      <input name="password" type="password" placeholder="password">
      <button type="submit">Log in</button>
    </form>
  </div>
</body>
</html>
"""


def login_template_path() -> str:
    """Write :data:`LOGIN_TEMPLATE` to a private temporary file and return its path."""
    fd, out = tempfile.mkstemp(prefix="neurotwin-login-", suffix=".html")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(LOGIN_TEMPLATE)
    return out


def read_credentials(path) -> dict[str, str]:
    """Read a basic-auth credentials file.

    Either JSON (``{"alice": "secret", ...}``, the format Panel reads) or plain text with one
    ``user:password`` per line (``#`` starts a comment).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--basic-auth: credentials file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if ":" not in line:
                raise ValueError(f"--basic-auth: {p} line {n}: expected user:password") from None
            user, pw = line.split(":", 1)
            data[user.strip()] = pw.strip()
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()):
        raise ValueError(f"--basic-auth: {p} must map user names to non-empty passwords")
    return data


def _credentials_json(path) -> str:
    """Path of a JSON credentials file Panel can read (converted, mode 0600, when needed)."""
    creds = read_credentials(path)
    try:
        json.loads(Path(path).read_text(encoding="utf-8"))
        return str(Path(path).resolve())
    except json.JSONDecodeError:
        fd, out = tempfile.mkstemp(prefix="neurotwin-auth-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(creds, fh)
        os.chmod(out, stat.S_IRUSR | stat.S_IWUSR)
        return out


def panel_serve_command(apps=None, port: int = 5006, address: str | None = None,
                     basic_auth: str | None = None, cookie_secret: str | None = None,
                     num_threads: int | None = None, num_procs: int = 1,
                     allow_websocket_origin=None, prefix: str | None = None,
                     show: bool = False, dask_scheduler: str | None = None, oauth_provider: str | None = None,
                     extra=()) -> tuple[list[str], dict[str, str]]:
    """Command line and extra environment of ``panel serve`` for the given options.

    Secrets travel in the environment (``PANEL_COOKIE_SECRET``), not on the command line,
    so they do not show up in ``ps``.

    Parameters
    ----------
    apps : list of str, optional
        App names from :data:`APPS`; all by default.
    port : int
        TCP port (0 picks a free one).
    address : str, optional
        Interface to listen on (``127.0.0.1`` for local only, ``0.0.0.0`` for all).
    basic_auth : path, optional
        Credentials file; switches the login page on.
    cookie_secret : str, optional
        Secret signing the login cookie; a random one is made when auth is on and none is given
        (logins then do not survive a restart).
    num_threads : int, optional
        Threads per server process for Panel callbacks.
    num_procs : int
        Server processes (``0`` = one per core).
    oauth_provider : str, optional
        Panel OAuth provider (``github``, ``google``, ``azure``, ``okta``, ``generic``...); its key
        and secret come from ``PANEL_OAUTH_KEY`` / ``PANEL_OAUTH_SECRET`` (and
        ``PANEL_OAUTH_ENCRYPTION``, ``PANEL_COOKIE_SECRET``) in the environment, never the command line.
    dask_scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) the dashboards submit to;
        a local cluster per server process otherwise (``NEUROTWIN_DASK_SCHEDULER``).

    Returns
    -------
    argv : list of str
    env : dict
        Variables to add to the server's environment.
    allow_websocket_origin : list of str, optional
        ``host[:port]`` origins allowed to open the websocket (needed behind proxies).
    prefix : str, optional
        URL prefix (e.g. behind jupyter-server-proxy).
    """
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    if num_procs is not None and int(num_procs) < 0:
        raise ValueError(f"--num-procs must be ≥ 0 (0 = one per core), got {num_procs}")
    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"--num-threads must be ≥ 1, got {num_threads}")
    env: dict[str, str] = {}
    argv = [sys.executable, "-m", "panel", "serve", *map(str, app_paths(apps)), "--port", str(int(port)),
            "--liveness"]  # GET /liveness: a cheap health check that answers from the event loop
    if address:
        argv += ["--address", address]
    for origin in allow_websocket_origin or ():
        argv += ["--allow-websocket-origin", origin]
    if basic_auth:
        argv += ["--basic-auth", _credentials_json(basic_auth),
                 "--basic-login-template", login_template_path()]
        if not cookie_secret and not os.environ.get("PANEL_COOKIE_SECRET"):
            cookie_secret = secrets.token_urlsafe(32)
    if oauth_provider:
        if basic_auth:
            raise ValueError("--oauth-provider and --basic-auth exclude each other; choose one")
        argv += ["--oauth-provider", oauth_provider]
        if not cookie_secret and not os.environ.get("PANEL_COOKIE_SECRET"):
            cookie_secret = secrets.token_urlsafe(32)
    if cookie_secret:
        env["PANEL_COOKIE_SECRET"] = cookie_secret
    if num_threads:
        argv += ["--num-threads", str(int(num_threads))]
    if num_procs is not None and int(num_procs) != 1:
        argv += ["--num-procs", str(int(num_procs))]
    if prefix:
        argv += ["--prefix", prefix]
    if show:
        argv += ["--show"]
    if dask_scheduler:
        env["NEUROTWIN_DASK_SCHEDULER"] = dask_scheduler
    argv += list(extra)
    return argv, env


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``panel serve`` in the foreground with ``env`` added; returns its exit code."""
    import signal
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})})

    def forward(signum, frame):       # stopping `neurotwin serve` stops the server it started
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
