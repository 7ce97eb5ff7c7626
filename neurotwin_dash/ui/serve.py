"""``neurotwin serve``: the dashboards behind ``panel serve``.

This module turns command-line options into a ``panel serve`` command line and replaces itself by
it (``exec``). Threads and processes are Panel/Bokeh server features; the password login is
:mod:`neurotwin_dash.ui.auth` (throttled, CSRF-protected, read from a private file). Secrets never
appear on a command line or in a file written here (see the README section "Serving to
collaborators").
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import sys
from pathlib import Path

__all__ = ["APPS", "INDEX_APP", "SERVED_APPS_ENV", "AUTH_FILE_ENV", "apps_dir", "app_paths", "check_private_file", "read_credentials",
           "read_cookie_secret", "auth_module_path", "panel_serve_command", "run"]

#: Served apps (name -> module in neurotwin_dash.ui), in the order of the index page.
APPS = {"home": "landing", "explorer": "explorer", "montage": "montage", "fit": "fitmonitor", "infer": "infer"}

#: The app shown at ``/`` (the landing page lists the others).
INDEX_APP = "home"

#: Environment variable with the comma-separated apps a server runs (read by the landing page).
SERVED_APPS_ENV = "NEUROTWIN_SERVED_APPS"


def apps_dir() -> Path:
    """Folder holding the thin ``panel serve`` entry points.

    ``neurotwin_dash/apps/`` inside the installed package (package data, shipped in the wheel);
    the repository's top-level ``apps/`` is a link to it.
    """
    return Path(__file__).resolve().parents[1] / "apps"


def app_paths(names=None) -> list[Path]:
    """Entry-point files of the apps ``names`` (all of :data:`APPS` by default)."""
    names = list(names) if names else list(APPS)
    unknown = [n for n in names if n not in APPS]
    if unknown:
        raise ValueError(f"unknown app(s) {unknown}; allowed: {', '.join(APPS)}")
    root = apps_dir()
    return [root / f"{n}.py" for n in names]


#: Environment variable naming the credentials file for the server process (see ui/auth.py).
AUTH_FILE_ENV = "NEUROTWIN_BASIC_AUTH_FILE"


def check_private_file(path, option: str, what: str = "file") -> Path:
    """``path`` as a Path after checking it is a regular file no other user can read or change.

    Credentials and cookie secrets must not be world-readable: anyone who reads them can log in
    as anyone (``chmod 600 FILE`` fixes it)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{option}: {what} {p} does not exist")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        raise ValueError(f"{option}: {p} is readable or writable by other users (mode {mode:o}); "
                         f"run `chmod 600 {p}` first")
    return p


def read_credentials(path) -> dict[str, str]:
    """Read a basic-auth credentials file.

    Either JSON (``{"alice": "secret", ...}``) or plain text with one ``user:password`` per line
    (``#`` starts a comment). The file must not be readable by other users
    (:func:`check_private_file`).
    """
    p = check_private_file(path, "--basic-auth", "credentials file")
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


def read_cookie_secret(path) -> str:
    """The cookie secret stored in ``path`` (a private file, at least 32 characters)."""
    secret = check_private_file(path, "--cookie-secret-file", "secret file").read_text(encoding="utf-8").strip()
    if len(secret) < 32:
        raise ValueError(f"--cookie-secret-file: {path} holds {len(secret)} characters; use ≥ 32 random "
                         "ones (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return secret


def auth_module_path() -> str:
    """Path of the login module (:mod:`neurotwin_dash.ui.auth`) handed to ``--auth-module``."""
    return str(Path(__file__).with_name("auth.py"))


def panel_serve_command(apps=None, port: int = 5006, address: str | None = None,
                        basic_auth: str | None = None, cookie_secret: str | None = None,
                        num_threads: int | None = None, num_procs: int = 1,
                        allow_websocket_origin=None, prefix: str | None = None,
                        show: bool = False, dask_scheduler: str | None = None,
                        oauth_provider: str | None = None, use_xheaders: bool = False,
                        extra=()) -> tuple[list[str], dict[str, str]]:
    """Command line and extra environment of ``panel serve`` for the given options.

    Secrets travel in the environment (``PANEL_COOKIE_SECRET``), never on the command line
    (visible to every local user in ``ps``), and nothing is written to disk.

    Parameters
    ----------
    apps : list of str, optional
        App names from :data:`APPS`; all by default.
    port : int
        TCP port (0 picks a free one).
    address : str, optional
        Interface to listen on; ``127.0.0.1`` (this machine only) by default, ``0.0.0.0`` for all.
    basic_auth : path, optional
        Credentials file (not readable by other users); switches the login page of
        :mod:`neurotwin_dash.ui.auth` on. The server reads it itself (``$NEUROTWIN_BASIC_AUTH_FILE``).
    cookie_secret : str, optional
        Secret signing the login cookie; a random one is made when auth is on and neither this
        nor ``$PANEL_COOKIE_SECRET`` is given (logins then do not survive a restart).
    num_threads : int, optional
        Threads per server process for Panel callbacks.
    num_procs : int
        Server processes (``0`` = one per core).
    allow_websocket_origin : list of str, optional
        ``host[:port]`` origins allowed to open the websocket (needed behind proxies).
    prefix : str, optional
        URL prefix (e.g. behind jupyter-server-proxy).
    show : bool
        Open a browser.
    dask_scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) the dashboards submit to;
        a local cluster per server process otherwise (``NEUROTWIN_DASK_SCHEDULER``).
    oauth_provider : str, optional
        Panel OAuth provider (``github``, ``google``, ``azure``, ``okta``, ``generic``...); its key
        and secret come from ``PANEL_OAUTH_KEY`` / ``PANEL_OAUTH_SECRET`` (and
        ``PANEL_OAUTH_ENCRYPTION``, ``PANEL_COOKIE_SECRET``) in the environment, never the command line.
    use_xheaders : bool
        Trust ``X-Forwarded-*`` headers (behind an HTTPS reverse proxy: cookies then get ``Secure``).

    Returns
    -------
    argv : list of str
    env : dict
        Variables to add to the server's environment.
    """
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    if num_procs is not None and int(num_procs) < 0:
        raise ValueError(f"--num-procs must be ≥ 0 (0 = one per core), got {num_procs}")
    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"--num-threads must be ≥ 1, got {num_threads}")
    names = list(apps) if apps else [a for a in APPS if a != INDEX_APP]
    # the landing page lists the apps this server runs (SERVED_APPS_ENV) and answers at "/"
    env: dict[str, str] = {SERVED_APPS_ENV: ",".join(n for n in names if n != INDEX_APP)}
    names = [INDEX_APP] + [n for n in names if n != INDEX_APP]
    argv = [sys.executable, "-m", "panel", "serve", *map(str, app_paths(names)), "--port", str(int(port)),
            "--index", INDEX_APP,
            "--liveness",  # GET /liveness: a cheap health check that answers from the event loop
            "--address", address or "127.0.0.1"]  # local only unless asked: no accidental exposure
    for origin in allow_websocket_origin or ():
        argv += ["--allow-websocket-origin", origin]
    if basic_auth and oauth_provider:
        raise ValueError("--oauth-provider and --basic-auth exclude each other; choose one")
    if basic_auth:
        path = Path(basic_auth).expanduser().resolve()
        read_credentials(path)              # fail here, with the option's name, not in the server
        env[AUTH_FILE_ENV] = str(path)
        argv += ["--auth-module", auth_module_path()]
    if oauth_provider:
        argv += ["--oauth-provider", oauth_provider]
    if (basic_auth or oauth_provider) and not cookie_secret and not os.environ.get("PANEL_COOKIE_SECRET"):
        cookie_secret = secrets.token_urlsafe(32)
    if cookie_secret:
        env["PANEL_COOKIE_SECRET"] = cookie_secret
    if num_threads:
        argv += ["--num-threads", str(int(num_threads))]
    if num_procs is not None and int(num_procs) != 1:
        argv += ["--num-procs", str(int(num_procs))]
    if prefix:
        argv += ["--prefix", prefix]
    if use_xheaders:
        argv += ["--use-xheaders"]
    if show:
        argv += ["--show"]
    if dask_scheduler:
        env["NEUROTWIN_DASK_SCHEDULER"] = dask_scheduler
    argv += list(extra)
    return argv, env


def run(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Replace this process by ``panel serve`` (``exec``) with ``env`` added.

    The server takes over this process id, so signals sent to ``neurotwin serve`` (Ctrl-C, a
    service manager's SIGTERM) reach the server itself and no orphan server can remain.
    Returns only when the exec fails."""
    os.execve(argv[0], argv, {**os.environ, **(env or {})})
    return 127  # pragma: no cover - execve does not return on success
