"""Security and data-safety: each attack or fault of issue 14, reproduced, now failing to get in
or to lose data.

Served parts start a real ``neurotwin serve`` (Panel/Bokeh server) on loopback and talk HTTP to it;
file parts run the real CLI on real files.
"""
from __future__ import annotations

import glob
import http.cookies
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tornado.web import create_signed_value

from neurotwin_dash import cluster
from neurotwin_dash.cli import main
from neurotwin_dash.ui import auth, serve

ROOT = Path(__file__).resolve().parents[1]


# --- helpers -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _request(url, data=None, headers=None):
    """(status, headers, body) of one HTTP request, redirects not followed."""
    body = None if data is None else urllib.parse.urlencode(data).encode()
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode(errors="replace")


def _set_cookies(headers) -> dict[str, str]:
    """Raw ``Set-Cookie`` lines by cookie name."""
    return {line.split("=", 1)[0]: line for line in headers.get_all("Set-Cookie") or []}


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None when it has none)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for a in out.split():
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", a) and not a.startswith("127."):
            return a
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))        # no packet is sent: only picks the interface
            a = s.getsockname()[0]
        return None if a.startswith("127.") else a
    except OSError:
        return None


# --- 1. login bypass ---------------------------------------------------------------------------

SECRET = "a-real-secret-known-only-to-the-server-" + "x" * 16


@pytest.fixture(scope="module")
def login_server(tmp_path_factory):
    """``neurotwin serve explorer --basic-auth FILE --use-xheaders`` on a free loopback port."""
    folder = tmp_path_factory.mktemp("auth")
    creds = folder / "users.txt"
    creds.write_text("alice:wonderland\n")
    creds.chmod(0o600)
    temp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "neurotwin-*")))
    port = _free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurotwin_dash.cli", "serve", "explorer", "--port", str(port),
         "--basic-auth", str(creds), "--use-xheaders"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PANEL_COOKIE_SECRET": SECRET}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            if _request(base + "/liveness")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() - t0 > 90:
            raise RuntimeError((folder / "server.log").read_text()[-3000:])
        time.sleep(0.3)
    yield {"base": base, "proc": proc, "temp_before": temp_before, "port": port}
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def _login_form(base):
    status, headers, body = _request(base + "/login?next=/explorer")
    assert status == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
    cookie = http.cookies.SimpleCookie(_set_cookies(headers)[auth.CSRF_COOKIE].split(";")[0])
    return token, f"{auth.CSRF_COOKIE}={cookie[auth.CSRF_COOKIE].value}"


def test_forged_cookie_with_a_guessed_secret_is_refused(login_server):
    base = login_server["base"]
    for guess in ["secret", "changeme", "x" * 32, "panel", SECRET[:-1]]:
        forged = create_signed_value(guess, "user", "alice").decode()
        status, headers, _ = _request(base + "/explorer", headers={"Cookie": f"user={forged}"})
        assert status == 302 and "/login" in headers["Location"], guess
    # control: the same cookie signed with the server's real secret gets in, so the refusals
    # above are the signature check and not a broken app
    real = create_signed_value(SECRET, "user", "alice").decode()
    assert _request(base + "/explorer", headers={"Cookie": f"user={real}"})[0] == 200


def test_no_secret_on_any_command_line_and_no_credential_copy_on_disk(login_server):
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            text = Path(cmdline).read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        assert SECRET.encode() not in text and b"wonderland" not in text, cmdline
    new = set(glob.glob(os.path.join(tempfile.gettempdir(), "neurotwin-*"))) - login_server["temp_before"]
    assert not [p for p in new if re.search(r"neurotwin-(auth|login)-", p)]
    # the wrapper exec'd Panel: the process we started *is* the server (no orphan possible)
    cmd = Path(f"/proc/{login_server['proc'].pid}/cmdline").read_bytes().split(b"\0")
    assert b"panel" in cmd and b"serve" in cmd


def test_login_form_needs_its_csrf_token(login_server):
    base = login_server["base"]
    status, headers, _ = _request(base + "/login", {"username": "alice", "password": "wonderland"})
    assert status == 303 and "error=csrf" in headers["Location"]
    assert "user" not in _set_cookies(headers)
    token, cookie = _login_form(base)
    status, headers, _ = _request(base + "/login", {"username": "alice", "password": "wonderland",
                                                    "csrf_token": token[:-2] + "zz"}, {"Cookie": cookie})
    assert "error=csrf" in headers["Location"] and "user" not in _set_cookies(headers)


def test_login_cookie_is_httponly_samesite_lax_and_secure_behind_https(login_server):
    base = login_server["base"]
    for proto, secure in [("http", False), ("https", True)]:
        token, cookie = _login_form(base)
        status, headers, _ = _request(base + "/login", {"username": "alice", "password": "wonderland",
                                                        "csrf_token": token, "next": "/explorer"},
                                      {"Cookie": cookie, "X-Forwarded-Proto": proto})
        assert status == 303 and headers["Location"] == "/explorer"
        line = _set_cookies(headers)["user"].lower()
        assert "httponly" in line and "samesite=lax" in line
        assert ("secure" in line.split(";")[-1] or "; secure" in line) == secure, line


def test_open_redirect_after_login_is_refused(login_server):
    base = login_server["base"]
    token, cookie = _login_form(base)
    status, headers, _ = _request(base + "/login", {"username": "alice", "password": "wonderland",
                                                    "csrf_token": token, "next": "//evil.example/x"},
                                  {"Cookie": cookie})
    assert status == 303 and headers["Location"] == "/"


def test_password_guessing_is_locked_out(login_server):
    """Runs last of the login tests: it locks 127.0.0.1 out of this server."""
    base = login_server["base"]
    codes = []
    for _ in range(6):
        token, cookie = _login_form(base)
        _, headers, _ = _request(base + "/login", {"username": "alice", "password": "guess",
                                                   "csrf_token": token}, {"Cookie": cookie})
        codes.append(re.search(r"error=(\w+)", headers["Location"]).group(1))
    assert codes[:3] == ["invalid"] * 3 and codes[-1] == "locked"
    # while locked even the right password is not checked
    token, cookie = _login_form(base)
    _, headers, _ = _request(base + "/login", {"username": "alice", "password": "wonderland",
                                               "csrf_token": token}, {"Cookie": cookie})
    assert "error=locked" in headers["Location"] and "user" not in _set_cookies(headers)
    assert "Too many failed attempts" in _request(base + "/login")[2]


def test_throttle_delay_grows_exponentially_per_key():
    now = [0.0]
    t = auth.Throttle(free=3, base_s=1.0, max_s=60.0, clock=lambda: now[0])
    waits = []
    for _ in range(10):
        t.failed("user:alice", "ip:10.0.0.1")
        waits.append(t.wait_s("user:alice"))
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60]
    assert t.wait_s("ip:10.0.0.1") == 60 and t.wait_s("ip:10.0.0.2") == 0
    t.succeeded("user:alice")
    assert t.wait_s("user:alice") == 0 and t.wait_s("ip:10.0.0.1") == 60
    small = auth.Throttle(max_keys=100)
    for i in range(1000):
        small.failed(f"user:u{i}")
    assert len(small._fails) == 100                  # memory bounded under a flood of names


def test_world_readable_credentials_and_secret_on_the_command_line_are_refused(tmp_path, capsys):
    creds = tmp_path / "users.txt"
    creds.write_text("alice:wonderland\n")
    creds.chmod(0o644)
    assert main(["serve", "--basic-auth", str(creds), "--dry-run"]) == 2
    assert "chmod 600" in capsys.readouterr().err
    creds.chmod(0o600)
    assert main(["serve", "--cookie-secret", "s" * 40, "--dry-run"]) == 2
    assert "visible to every user" in capsys.readouterr().err
    secret = tmp_path / "secret"
    secret.write_text("short")
    secret.chmod(0o600)
    assert main(["serve", "--cookie-secret-file", str(secret), "--dry-run"]) == 2
    assert "≥ 32" in capsys.readouterr().err
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "neurotwin-*")))
    assert main(["serve", "--basic-auth", str(creds), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "wonderland" not in out and "--address 127.0.0.1" in out   # loopback unless --address
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "neurotwin-*"))) == before


# --- 4. open doors: the Dask dashboard and scheduler -------------------------------------------

@pytest.fixture(scope="module")
def local_client():
    """The process's LocalCluster client as cluster.get_client makes it (one worker)."""
    cluster.close_client()
    yield cluster.get_client(n_workers=1, quiet=True)
    cluster.close_client()


def test_dask_dashboard_and_scheduler_not_reachable_from_a_non_loopback_address(local_client):
    ip = _non_loopback_address()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to test from")
    dash_port = int(re.search(r":(\d+)/", local_client.dashboard_link).group(1))
    sched_port = int(local_client.scheduler.address.rsplit(":", 1)[1])
    for port in (dash_port, sched_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass                                       # control: it is up on loopback
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=5).close()


# --- 2. code execution from data files ---------------------------------------------------------

class _RunsCommand:
    """What an attacker pickles: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


FIT_SPEC = ("problem: custom\nmodel: jansen_rit\nconnectome: null\nduration_s: 1.0\ntransient_s: 0.5\n"
            "sample_rate_hz: 250\nfree:\n  - {name: p, low: 120, high: 300}\n"
            "objective:\n  - {term: AlphaPeakError, target_hz: 9.0, window_s: 0.5, band: [5, 14]}\n"
            "method: de\ngenerations: 1\npopsize: 5\nseed: 0\n")


def test_crafted_pickle_checkpoint_is_refused_not_loaded(tmp_path, capsys):
    import pickle
    spec = tmp_path / "fit.yaml"
    spec.write_text(FIT_SPEC)
    out = tmp_path / "fitdir"
    out.mkdir()
    marker = tmp_path / "pwned"
    for name in ("checkpoint.json", "checkpoint.pkl"):      # current and the old file name
        (out / name).write_bytes(pickle.dumps({"meta": _RunsCommand(marker), "rows": []}))
    rc = main(["fit", str(spec), "--out", str(out), "--scheduler", "sync", "--no-progress"])
    assert rc == 2 and not marker.exists()
    assert "pickle file (never loaded" in capsys.readouterr().err
    # the checkpoint it writes itself is JSON, and a re-run resumes from it
    (out / "checkpoint.json").unlink()
    assert main(["fit", str(spec), "--out", str(out), "--scheduler", "sync", "--no-progress"]) == 0
    import json
    doc = json.loads((out / "checkpoint.json").read_text())
    assert doc["format"] == "neurotwin-fit-checkpoint/1" and len(doc["rows"]) == 10
    capsys.readouterr()
    assert main(["fit", str(spec), "--out", str(out), "--scheduler", "sync", "--no-progress"]) == 0
    assert "0 generation(s) computed now" in capsys.readouterr().out and not marker.exists()


def test_yaml_metric_and_simulator_injection_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    base = ("model: jansen_rit\nconnectome: null\nduration_s: 1.0\ntransient_s: 0.5\n"
            "axes: {p: {values: [120.0]}}\n")
    attacks = {
        "metric": f"metrics:\n  - {{name: 'subprocess:run', args: [touch, '{marker}'], as: x}}\n",
        "metric-str": "metrics: ['os:system']\n",
        "simulator": "simulator: 'os:system'\n",
        "kwargs": f"metrics:\n  - {{name: std, shell: true, args: [touch, '{marker}']}}\n",
    }
    messages = {}
    for name, text in attacks.items():
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(base + text)
        assert main(["sweep", str(spec), "--out", str(tmp_path / f"{name}.zarr"), "--scheduler", "sync",
                     "--no-progress"]) == 2, name
        messages[name] = capsys.readouterr().err
        assert not (tmp_path / f"{name}.zarr").exists()
    assert not marker.exists()
    assert "metric 'subprocess:run' unknown" in messages["metric"] and "not imported" in messages["metric"]
    assert "simulator 'os:system' unknown" in messages["simulator"]
    assert "metrics[0] (std): unknown keyword(s) ['args', 'shell']" in messages["kwargs"]


def test_metrics_registered_in_python_still_work_on_dask_workers(tmp_path, local_client):
    """The allow-list is the registry: a function registered in Python is usable (and sent to the
    workers with the tasks)."""
    from neurotwin_dash import sweep

    @sweep.register_metric("test_security.max_abs")
    def max_abs(res, variable=None):
        return abs(res[variable or "v_pyr"]).max(("time", "region"))

    try:
        spec = sweep.SweepSpec.from_dict(dict(model="jansen_rit", connectome=None, duration_s=1.0,
                                              transient_s=0.5, axes={"p": {"values": [120.0, 200.0]}},
                                              metrics=["test_security.max_abs"], batch_size=1))
        ds = sweep.run_sweep(spec, tmp_path / "m.zarr", client=local_client, progress=False).dataset
        assert ds["test_security.max_abs"].shape == (2,) and (ds["test_security.max_abs"] > 0).all()
    finally:
        sweep.METRICS.pop("test_security.max_abs", None)


SWEEP_BASE = "model: jansen_rit\nconnectome: null\n"


@pytest.mark.parametrize("command, text, message", [
    ("sweep", "axes: {p: {values: [120.0], step: 2}}\n", "axes.p.step: unknown key"),
    ("sweep", "axes: {p: {values: [120.0]}}\nbatch_size: '4'\n", "batch_size: Input should be a valid integer"),
    ("sweep", "axes: {p: {values: [120.0]}}\nduration_s: ten\n", "duration_s: "),
    ("sweep", "axes: {p: {values: [120.0]}}\nstimulation: {pattern: uniform, code: x}\n",
     "stimulation.code: unknown key"),
    ("sweep", "axes: {p: {values: [120.0]}}\nmethod: rk4\n", "method: Input should be 'euler' or 'heun'"),
    ("sweep", "axes: {p: {num: 0, low: 1, high: 2}}\n", "axes.p.num: Input should be greater than or equal to 1"),
    ("fit", "colour: red\n", "colour: unknown key"),
    ("fit", "generations: many\n", "generations: Input should be a valid integer"),
    ("fit", "hcp: {duration_s: 10, evil: 1}\n", "hcp.evil: unknown key"),
    ("fit", "free2: []\n", "free2: unknown key"),
])
def test_spec_schema_errors_name_the_field(tmp_path, capsys, command, text, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text((SWEEP_BASE if command == "sweep" else FIT_SPEC) + text)
    assert main([command, str(spec), "--out", str(tmp_path / "out"), "--scheduler", "sync"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweep_schema_declares_exactly_the_spec_fields():
    from neurotwin_dash.io.schema import SweepSpecSchema
    from neurotwin_dash.sweep import SweepSpec
    assert set(SweepSpecSchema.model_fields) == set(SweepSpec.__dataclass_fields__)


def test_fit_objective_keywords_are_checked_against_the_term(tmp_path, capsys):
    spec = tmp_path / "fit.yaml"
    spec.write_text(FIT_SPEC.replace("band: [5, 14]}", "band: [5, 14], command: ls}"))
    assert main(["fit", str(spec), "--out", str(tmp_path / "o"), "--scheduler", "sync"]) == 2
    assert "objective[0] (AlphaPeakError): unknown keyword(s) ['command']" in capsys.readouterr().err


# --- 3. data loss ------------------------------------------------------------------------------

def _cli(*args, env=None, preexec_fn=None, timeout=300):
    """Run the real CLI in a fresh process: (returncode, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "neurotwin_dash.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn,
                          env={**os.environ, **(env or {})})
    return proc.returncode, proc.stderr


def _small_run(path, duration_s=0.5):
    from neurotwin_dash.simulate import simulate
    simulate("jansen_rit", None, duration_s=duration_s, sample_rate_hz=250.0).to_netcdf(path, engine="h5netcdf")
    return path.read_bytes()


def test_every_writer_refuses_to_replace_without_overwrite(tmp_path, capsys):
    run = tmp_path / "run.nc"
    _small_run(run, duration_s=5.0)
    cases = {
        "simulate": ["simulate", "--connectome", "none", "--duration", "0.5", "--no-progress"],
        "analyse": ["analyse", str(run), "--no-aperiodic"],
        "export": ["export", "--connectome", "none", "--duration", "0.5"],
        "optimize-montage": ["optimize-montage", "--target", "lPFCDL"],
    }
    for name, args in cases.items():
        out = tmp_path / f"{name}.out{'.json' if name == 'optimize-montage' else '.nc'}"
        out.write_bytes(b"precious")
        assert main([*args, "--out", str(out)]) == 2, name
        assert "exists already" in capsys.readouterr().err and out.read_bytes() == b"precious", name
        assert main([*args, "--out", str(out), "--overwrite"]) == 0, name
        assert out.read_bytes() != b"precious" and len(out.read_bytes()) > 100, name
        assert not [p for p in tmp_path.iterdir() if ".partial" in p.name], name
        capsys.readouterr()


def test_zarr_output_never_wipes_a_folder_of_other_files(tmp_path, capsys):
    folder = tmp_path / "results.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    for extra in ([], ["--overwrite"]):
        assert main(["simulate", "--connectome", "none", "--duration", "0.5", "--no-progress",
                     "--out", str(folder), *extra]) == 2
        assert (folder / "notes.txt").read_text() == "my notes"
    assert "not a zarr store" in capsys.readouterr().err
    store = tmp_path / "run.zarr"                  # a zarr store of our own may be replaced
    for extra in ([], ["--overwrite"]):
        assert main(["simulate", "--connectome", "none", "--duration", "0.5", "--no-progress",
                     "--out", str(store), *extra]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.zarr", "run.zarr"]


def _full_disk_script(outside, old_file, args):
    """Shell script: mount a 1 MiB tmpfs, put the old output there, fill it, run the CLI with
    --overwrite onto it, report rc / hashes / listing to ``outside``."""
    cli = " ".join([sys.executable, "-m", "neurotwin_dash.cli", *map(str, args)])
    d = outside / "mnt"
    return (f"set -e; mkdir -p {d}; mount -t tmpfs -o size=1m tmpfs {d}; cp {old_file} {d}/run.nc; "
            f"dd if=/dev/zero of={d}/filler bs=4k 2>/dev/null || true; "
            f"set +e; {cli} --out {d}/run.nc --overwrite 2> {outside}/stderr; echo $? > {outside}/rc; "
            f"sha256sum {d}/run.nc | cut -d' ' -f1 > {outside}/after; ls -a {d} > {outside}/listing")


def test_overwrite_on_a_full_tmpfs_keeps_the_old_file(tmp_path):
    import hashlib
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user+mount namespaces here (unshare -rm); the RLIMIT_FSIZE test covers the fault")
    old = tmp_path / "old.nc"
    before = hashlib.sha256(_small_run(old)).hexdigest()
    script = _full_disk_script(tmp_path, old, ["simulate", "--connectome", "tvb76", "--duration", "1",
                                               "--no-progress"])
    subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, timeout=300, check=True)
    rc, err = int((tmp_path / "rc").read_text()), (tmp_path / "stderr").read_text()
    assert rc == 1, err                                   # a clear error, not a crash (was 139)
    assert "not enough space" in err or "No space left" in err, err
    assert (tmp_path / "after").read_text().strip() == before      # the old file is intact
    assert sorted((tmp_path / "listing").read_text().split()) == [".", "..", "filler", "run.nc"]


def test_write_failing_mid_file_keeps_the_old_file(tmp_path):
    """The same fault without a mount: RLIMIT_FSIZE makes the write itself fail half-way (the
    writer every command uses, in a fresh process with the limit set)."""
    import resource
    old = tmp_path / "run.nc"
    before = _small_run(old)
    limit = 256 * 1024                                   # the new file is ~2.4 MB

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = ("import sys, numpy as np, xarray as xr\n"
            "from neurotwin_dash.io.files import write_dataset\n"
            "ds = xr.Dataset({'v': (('t', 'r'), np.random.default_rng(0).normal(size=(4000, 76)))})\n"
            "try:\n    write_dataset(ds, sys.argv[1], overwrite=True)\n"
            "except OSError as exc:\n    print(exc.strerror, file=sys.stderr); sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(old)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=limit_file_size)
    assert proc.returncode == 1 and "File too large" in proc.stderr, proc.stderr
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc"]


SWEEP_YAML = ("model: jansen_rit\nconnectome: null\nduration_s: 1.0\ntransient_s: 0.5\nsample_rate_hz: 250\n"
              "axes: {p: {values: [120.0, 160.0, 200.0, 240.0]}}\nbatch_size: 1\n"
              "metrics: [std, {name: std, reduce: none, as: std_region}]\ntimeseries: [v_pyr]\n")


def test_sweep_overwrite_never_deletes_a_foreign_folder(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(SWEEP_YAML)
    for name, files in {"plain": {"data.csv": "1,2"},
                        "foreign.zarr": {".zgroup": '{"zarr_format": 2}', "x/.zarray": "{}"}}.items():
        folder = tmp_path / name
        for rel, text in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
        assert main(["sweep", str(spec), "--out", str(folder), "--scheduler", "sync", "--no-progress",
                     "--overwrite"]) == 2, name
        assert "nothing was deleted" in capsys.readouterr().err
        assert all((folder / rel).read_text() == text for rel, text in files.items()), name
    own = tmp_path / "own.zarr"
    assert main(["sweep", str(spec), "--out", str(own), "--scheduler", "sync", "--no-progress"]) == 0
    assert main(["sweep", str(spec), "--out", str(own), "--scheduler", "sync", "--no-progress",
                 "--overwrite"]) == 0
    assert "computed 4, already done 0" in capsys.readouterr().out


def test_resume_recomputes_batches_with_deleted_or_corrupted_chunks(tmp_path, capsys):
    import xarray as xr
    from neurotwin_dash import sweep
    spec = tmp_path / "s.yaml"
    spec.write_text(SWEEP_YAML)
    store = tmp_path / "s.zarr"
    assert main(["sweep", str(spec), "--out", str(store), "--scheduler", "sync", "--no-progress"]) == 0
    ref = xr.open_zarr(store).load()
    (store / "std" / "1").unlink()                               # batch 1: a chunk deleted
    (store / "v_pyr" / "2.0.0").write_bytes(b"\x00garbage" * 10)  # batch 2: a chunk corrupted
    (store / "std_region" / "3.0").unlink()                      # batch 3: a chunk deleted
    capsys.readouterr()
    assert main(["sweep", str(spec), "--out", str(store), "--scheduler", "sync", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "computed 3, already done 1 (damaged and recomputed: 3)" in out, out
    res = sweep.run_sweep(str(spec), store, client="sync", progress=False)
    assert res.computed == [] and res.repaired == [] and res.skipped == [0, 1, 2, 3]
    again = xr.open_zarr(store).load()
    for v in ("std", "std_region", "v_pyr"):
        np.testing.assert_array_equal(again[v].values, ref[v].values)


# --- 5. denial of service and guards ------------------------------------------------------------

@pytest.mark.parametrize("query", [{"model_params": [b"1"]}, {"network_params": [b"1"]}, {"seed": [b"1e400"]},
                                   {"duration_s": [b"nan"]}, {"coupling": [b"inf"]}, {"edges": [b"1"]},
                                   {"lesions": [b"nowhere"]}, {"model": [b"os.system"]}])
def test_bad_url_parameters_are_shown_as_ignored_and_the_page_keeps_working(query):
    from neurotwin_dash.ui.explorer import Explorer
    ex = Explorer(mode="sync")
    params_before = ex.state.model_params
    ex.apply_query(query)
    assert ex.query_error.visible and "URL settings ignored" in ex.query_error.object
    assert ex.state.model_params is params_before and hasattr(ex.state.model_params, "param")
    assert isinstance(ex.state.network_params.coupling, float)


def test_served_explorer_with_bad_url_parameters_still_renders(login_server):
    real = create_signed_value(SECRET, "user", "alice").decode()
    status, _, body = _request(login_server["base"] + "/explorer?model_params=1&network_params=1",
                               headers={"Cookie": f"user={real}"})
    assert status == 200 and "bokeh" in body.lower()


def test_huge_duration_is_refused_with_a_memory_message(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["simulate", "--duration", "1e6", "--out", str(tmp_path / "x.nc"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "of memory" in err and "available" in err and "shorten duration_s" in err, err
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "x.nc").exists()


def test_dt_above_the_model_limit_is_refused_by_the_cli_and_flagged_by_the_library(tmp_path, capsys):
    import warnings
    from neurotwin_dash.models import get_model, model_names
    from neurotwin_dash.simulate import simulate
    # declared once per package model, default dt within it (models registered by other tests,
    # e.g. the toy model of test_models_classics, may omit it: the guard then does not apply)
    own = [n for n in model_names() if get_model(n).__name__.startswith("neurotwin_dash.models.")]
    assert len(own) >= 5
    for name in own:
        assert 0.1 <= get_model(name).MAX_DT_MS <= 1.0, name
    assert main(["simulate", "--dt", "10", "--out", str(tmp_path / "x.nc"), "--no-progress"]) == 2
    assert "--dt 10 is above the largest accurate step of model jansen_rit (0.5 ms" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="above the largest accurate step"):
        ds = simulate("jansen_rit", None, duration_s=0.2, dt_ms=1.0)
    assert "MAX_DT_MS" in ds.attrs["dt_warning"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "dt_warning" not in simulate("jansen_rit", None, duration_s=0.2, dt_ms=0.5).attrs


def test_a_montage_file_cannot_raise_the_stimulator_limits(tmp_path, capsys):
    import json
    from neurotwin_dash.stimulation.montage import Montage, MontageError, user_limits
    path = tmp_path / "m.json"
    for limits, field in [({"max_current_mA": 50}, "max_current_mA"), ({"tol_mA": 1000}, "tol_mA"),
                          ({"max_total_mA": 8.0}, "max_total_mA"), ({"max_electrodes": 64}, "max_electrodes")]:
        path.write_text(json.dumps({"currents_mA": {"F3": 40.0, "F4": -40.0}, "limits": limits}))
        with pytest.raises(MontageError, match=f"limit {field} = .* exceeds the allowed .*only tighten"):
            Montage.load(path)
        assert main(["simulate", "--connectome", "tvb76", "--duration", "0.2", "--montage", str(path),
                     "--out", str(tmp_path / "x.nc"), "--no-progress"]) == 2
        assert "only tighten" in capsys.readouterr().err
    path.write_text(json.dumps({"currents_mA": {"F3": 1.0, "F4": -1.0}, "limits": {"max_current_mA": 1.5}}))
    assert Montage.load(path).limits.max_current_mA == 1.5                  # tightening is fine
    with pytest.raises(MontageError, match="safety limits"):
        user_limits(max_current_mA=50)
    assert main(["optimize-montage", "--target", "lPFCDL", "--max-current", "50",
                 "--out", str(tmp_path / "o.json")]) == 2


def test_session_limits_and_cleanup_of_the_fit_monitor(monkeypatch):
    from neurotwin_dash.ui.fitmonitor import MonitorState
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "neurotwin-monitor-*")))
    s = MonitorState(client="sync")                        # a page view: no folder
    s.param.update(x_num=50, y_num=50, duration_s=600.0)
    assert not s.start() and "at most" in s.error and not s.running
    s.param.update(mode="fit", popsize=200, generations=200, duration_s=10.0)
    assert not s.start() and "at most" in s.error
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "neurotwin-monitor-*"))) == before
    # a run in progress when the page closes is stopped and its scratch folder removed
    s.param.update(mode="sweep", x_num=8, y_num=8, duration_s=2.0, batch_size=1, metric="std")
    assert s.start()
    folder = s.run_dir
    assert folder.exists()
    s.close()
    s._thread.join(120)
    deadline = time.time() + 30
    while folder.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not folder.exists() and s._finish_stopped
    assert not s.start() and "session has ended" in s.error
