"""`neurotwin serve`: the panel serve command line it builds (no server started here)."""
from __future__ import annotations

import json
import os

import pytest

from neurotwin_dash.cli import main
from neurotwin_dash.ui import serve


def test_serve_builds_panel_serve_with_every_app_and_options(tmp_path):
    creds = tmp_path / "users.json"
    creds.write_text(json.dumps({"alice": "wonder"}))
    creds.chmod(0o600)
    argv, env = serve.panel_serve_command(port=5007, address="0.0.0.0", basic_auth=str(creds),
                                          num_threads=4, num_procs=2,
                                          allow_websocket_origin=["lab.example.org:443"],
                                          dask_scheduler="tcp://10.0.0.5:8786")
    assert argv[1:4] == ["-m", "panel", "serve"]
    apps = argv[4:4 + len(serve.APPS)]
    assert [os.path.basename(a) for a in apps] == [f"{n}.py" for n in serve.APPS]
    assert argv[argv.index("--port") + 1] == "5007"
    assert argv[argv.index("--address") + 1] == "0.0.0.0"
    # the server reads the user's own (private) file itself: no copy, no password in argv
    assert env[serve.AUTH_FILE_ENV] == str(creds.resolve())
    assert argv[argv.index("--auth-module") + 1] == serve.auth_module_path()
    assert argv[argv.index("--num-threads") + 1] == "4"
    assert argv[argv.index("--num-procs") + 1] == "2"
    assert argv[argv.index("--allow-websocket-origin") + 1] == "lab.example.org:443"
    # secrets travel in the environment, not on the command line (visible in ps)
    assert len(env["PANEL_COOKIE_SECRET"]) >= 32 and "--cookie-secret" not in argv
    assert env["NEUROTWIN_DASK_SCHEDULER"] == "tcp://10.0.0.5:8786"


def test_plain_user_password_lines_are_read_without_writing_a_copy(tmp_path):
    # Was: converted to a JSON copy in the temp folder (a plaintext copy left behind, issue 14).
    creds = tmp_path / "users.txt"
    creds.write_text("# lab members\nalice: wonder\nbob:builder\n")
    creds.chmod(0o600)
    assert serve.read_credentials(creds) == {"alice": "wonder", "bob": "builder"}
    argv, env = serve.panel_serve_command(basic_auth=str(creds), cookie_secret="s" * 40)
    assert env[serve.AUTH_FILE_ENV] == str(creds.resolve()) and env["PANEL_COOKIE_SECRET"] == "s" * 40
    assert not any("wonder" in a or "s" * 40 in a for a in argv)


@pytest.mark.parametrize("content, message", [
    ("alice\n", "line 1: expected user:password"),
    ("{}", "must map user names"),
])
def test_bad_credentials_files_are_refused(tmp_path, content, message):
    creds = tmp_path / "c.txt"
    creds.write_text(content)
    creds.chmod(0o600)
    with pytest.raises(ValueError, match=message):
        serve.read_credentials(creds)


def test_serve_cli_dry_run_and_errors(tmp_path, capsys):
    assert main(["serve", "explorer", "--port", "5100", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "panel serve" in out and "explorer.py" in out and "--port 5100" in out
    assert main(["serve", "--basic-auth", str(tmp_path / "missing.json"), "--dry-run"]) == 2
    assert "credentials file" in capsys.readouterr().err
    assert main(["serve", "nope", "--dry-run"]) == 2
    assert "unknown app" in capsys.readouterr().err
    assert main(["serve", "--port", "70000", "--dry-run"]) == 2


def test_oauth_provider_passes_through_and_excludes_basic_auth(tmp_path):
    argv, env = serve.panel_serve_command(oauth_provider="github")
    assert argv[argv.index("--oauth-provider") + 1] == "github" and "PANEL_COOKIE_SECRET" in env
    creds = tmp_path / "c.txt"
    creds.write_text("a:b\n")
    with pytest.raises(ValueError, match="exclude each other"):
        serve.panel_serve_command(oauth_provider="github", basic_auth=str(creds))
