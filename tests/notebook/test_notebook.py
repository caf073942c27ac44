"""``altus notebook`` with real JupyterLab processes: secrets, detachment, listing, stopping,
idle shutdown and bad input. The browser test is in ``test_browser.py``."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import altus.notebook
from altus import detached
from altus.notebook import records
from altus.notebook.api import ServerAPI

PASSWORD = "violet kettle orbit lantern"  # 12+ characters, no common password


@pytest.fixture
def notebook_root(tmp_path: Path) -> Iterator[Path]:
    """A folder to serve; every server this test started is stopped afterwards."""
    root = tmp_path / "study"
    root.mkdir()
    yield root
    altus.notebook.stop_all()


def start_json(run_altus: Any, *args: str, password: str | None = None) -> dict[str, Any]:
    done = run_altus("notebook", "start", *args, "--json", input=password)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def status_code(
    url: str, *, headers: dict[str, str] | None = None, cafile: str | None = None
) -> int:
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _NoRedirect()
    )
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def command_lines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    return lines


def test_a_loopback_server_keeps_its_token_secret_and_stops_cleanly(
    run_altus: Any, notebook_root: Path
) -> None:
    server = start_json(run_altus, str(notebook_root), "--name", "study", "--idle-timeout", "0")
    folder = records.server_folder("study")
    token = (folder / "token").read_text().strip()
    assert len(token) >= 32  # 256 bits, URL-safe base64
    assert server["url"].startswith("http://127.0.0.1:")
    assert token not in json.dumps(server)
    assert not any(token.encode() in line for line in command_lines())
    assert token not in (folder / "server.log").read_text()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    api = server["api_url"]
    assert status_code(f"{api}/api/status") == 403
    assert status_code(f"{api}/api/status", headers={"Authorization": "token wrong"}) == 403
    assert status_code(f"{api}/api/status", headers={"Authorization": f"token {token}"}) == 200
    assert status_code(f"{api}/lab") in (302, 403)  # to the login page, not the app

    listed = run_altus("notebook", "list", "--json")
    [entry] = json.loads(listed.stdout)
    assert (entry["name"], entry["state"], entry["kernels"]) == ("study", "running", 0)
    assert entry["root"] == str(notebook_root)
    assert entry["environment"] == "current"
    table = run_altus("notebook", "list").stdout
    assert "study" in table
    assert "running" in table
    assert token not in table

    done = run_altus("notebook", "stop", "study")
    assert done.returncode == 0, done.stderr
    assert not detached.pid_exists(server["pid"])
    assert not folder.exists()
    assert json.loads(run_altus("notebook", "list", "--json").stdout) == []


def test_public_needs_a_password_and_serves_tls_with_a_login(
    run_altus: Any, notebook_root: Path
) -> None:
    refused = run_altus("notebook", "start", str(notebook_root), "--public", input="")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "altus: error: --public needs a password: run it in a terminal or use --password-stdin"
    ]

    server = start_json(
        run_altus, str(notebook_root), "--public", "--password-stdin", "--idle-timeout", "0",
        password=PASSWORD + "\n",
    )  # fmt: skip
    assert server["url"].startswith(f"https://{socket.gethostname()}:")
    names = certificate_names(Path(server["certfile"]))
    assert {socket.gethostname(), "localhost", "127.0.0.1"} <= names
    assert not any(PASSWORD.encode() in line for line in command_lines())
    config = (records.server_folder(server["name"]) / "jupyter_server_config.json").read_text()
    assert PASSWORD not in config
    assert "argon2:$argon2id$" in config
    base, cafile = f"https://127.0.0.1:{server['port']}", server["certfile"]
    with pytest.raises((ConnectionError, urllib.error.URLError)):  # plain HTTP to a TLS port
        urllib.request.urlopen(f"http://127.0.0.1:{server['port']}/api/status", timeout=5)
    assert status_code(f"{base}/api/status", cafile=cafile) == 403
    assert status_code(f"{base}/lab", cafile=cafile) == 302

    assert login(base, cafile, "not the password") == 401  # the login page again, refused
    assert login(base, cafile, PASSWORD) == 302  # on to the app


def certificate_names(path: Path) -> set[str]:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


def login(base: str, cafile: str, password: str) -> int:
    """Post ``password`` to the login form as a browser does (cookie + _xsrf); the status."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)),
        urllib.request.HTTPCookieProcessor(jar),
        _NoRedirect(),
    )
    opener.open(f"{base}/login", timeout=10).read()
    xsrf = next(cookie.value for cookie in jar if cookie.name == "_xsrf")
    form = urllib.parse.urlencode({"password": password, "_xsrf": xsrf}).encode()
    try:
        with opener.open(f"{base}/login?next=%2Flab", data=form, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_server_survives_the_death_of_the_process_that_started_it(
    notebook_root: Path, tmp_path: Path
) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, altus.notebook as nb\n"
         "s = nb.start(sys.argv[1], name='lasting', idle_timeout=0)\n"
         "print(s.record.pid, flush=True)\n"
         "time.sleep(600)\n",
         str(notebook_root)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert starter.stdout is not None
    pid = int(starter.stdout.readline())
    os.killpg(starter.pid, signal.SIGKILL)  # the starter and everything in its session
    starter.wait()
    time.sleep(1)
    [state] = altus.notebook.servers()
    assert state.running
    assert state.record.pid == pid
    record = state.record
    assert ServerAPI(record, record.token()).status()["kernels"] == 0


def test_stop_ends_the_kernels_too(notebook_root: Path) -> None:
    record = altus.notebook.start(notebook_root, name="kernels", idle_timeout=0).record
    api = ServerAPI(record, record.token(), timeout=60)
    api.start_kernel()
    api.start_kernel()
    kernels = detached.descendants(record.pid)
    assert len(kernels) >= 2
    [state] = altus.notebook.servers()
    assert state.kernels == 2
    altus.notebook.stop("kernels")
    assert [pid for pid in [record.pid, *kernels] if detached.pid_exists(pid)] == []


def test_a_dead_server_is_forgotten(notebook_root: Path) -> None:
    record = altus.notebook.start(notebook_root, name="doomed", idle_timeout=0).record
    os.killpg(record.pid, signal.SIGKILL)
    assert detached.wait_until(lambda: not detached.pid_exists(record.pid), 10)
    assert altus.notebook.servers() == []
    assert not record.folder.exists()


@pytest.mark.slow
def test_an_idle_server_culls_its_kernel_stops_itself_and_says_so(
    run_altus: Any, notebook_root: Path
) -> None:
    """jupyter_server looks for idleness once a minute, so this takes about 70 s."""
    server = start_json(run_altus, str(notebook_root), "--name", "sleepy", "--idle-timeout", "4s")
    record = records.read_record("sleepy")
    assert record is not None
    ServerAPI(record, record.token(), timeout=60).start_kernel()
    kernels = detached.descendants(server["pid"])
    assert detached.wait_until(lambda: not detached.pid_exists(server["pid"]), 100)
    assert [pid for pid in kernels if detached.pid_exists(pid)] == []
    log = record.log.read_text()
    assert "Culling" in log
    assert "shutting down" in log
    [entry] = json.loads(run_altus("notebook", "list", "--json").stdout)
    assert (entry["name"], entry["state"]) == ("sleepy", "stopped (idle)")
    assert "stopped (idle)" in run_altus("notebook", "list").stdout
    assert run_altus("notebook", "stop", "sleepy").returncode == 0
    assert json.loads(run_altus("notebook", "list", "--json").stdout) == []


def test_a_taken_port_moves_to_the_next_free_one(run_altus: Any, notebook_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_altus("notebook", "start", str(notebook_root), "--port", str(port), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["port"] > port
    assert f"altus: port {port} is in use; using" in done.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["/no/such/folder"], "altus: error: /no/such/folder: no such folder"),
        (["--idle-timeout", "soon"], "is not a duration such as 90s, 30m, 2h or 30d"),
        (["--certfile", "/no/cert.pem"], "give both --certfile and --keyfile, or neither"),
        (["--env", "/no/such/env"], "altus: error: --env /no/such/env: no such file or folder"),
        (["--name", "../escape"], "is not a usable name"),
    ],
)
def test_bad_input_is_one_line_and_starts_nothing(
    run_altus: Any, notebook_root: Path, arguments: list[str], message: str
) -> None:
    if not arguments[0].startswith("/"):
        arguments = [str(notebook_root), *arguments]
    done = run_altus("notebook", "start", *arguments)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert message in lines[-1]
    assert "Traceback" not in done.stderr
    assert json.loads(run_altus("notebook", "list", "--json").stdout) == []


def test_unreadable_certificates_and_envs_without_jupyterlab_are_refused(
    run_altus: Any, notebook_root: Path, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    done = run_altus(
        "notebook", "start", str(notebook_root), "--certfile", str(cert), "--keyfile", str(key)
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"altus: error: {cert} / {key}: not a usable certificate")
    assert len(done.stderr.strip().splitlines()) == 1

    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = run_altus("notebook", "start", str(notebook_root), "--env", str(venv))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"altus: error: {venv} has no jupyterlab: install it there (python -m pip install "
        "jupyterlab), or pass --env with a requirements file or folder for altus to build"
    )


def test_open_writes_a_private_page_and_tunnel_prints_ssh(
    run_altus: Any, notebook_root: Path
) -> None:
    record = altus.notebook.start(notebook_root, name="page", idle_timeout=0).record
    done = run_altus("notebook", "open", "page", "--print")
    page = Path(done.stdout.strip())
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert f"{record.url}?token={record.token()}" in page.read_text()
    logs = run_altus("notebook", "logs", "page", "-n", "200")
    assert "Jupyter Server" in logs.stdout
    assert record.token() not in logs.stdout
    tunnel = run_altus("notebook", "tunnel", "user@cluster", "--port", "8890")
    assert tunnel.stdout.strip() == "ssh -N -L 8890:127.0.0.1:8890 user@cluster"


@pytest.mark.slow
def test_a_spec_in_the_root_is_built_with_jupyterlab_and_reused(
    run_altus: Any, notebook_root: Path
) -> None:
    (notebook_root / "requirements.txt").write_text("six\n")
    first = start_json(run_altus, str(notebook_root), "--name", "built", "--idle-timeout", "0")
    python = Path(first["python"])
    assert python != Path(sys.executable)
    assert first["environment"] != "current"
    check = "import jupyterlab, six"
    assert subprocess.run([str(python), "-c", check], check=False).returncode == 0
    # Kernels and terminals inherit the server's environment: `!pip` is the env's pip.
    server_environ = Path(f"/proc/{first['pid']}/environ").read_bytes().split(b"\0")
    variables = dict(item.decode().split("=", 1) for item in server_environ if b"=" in item)
    assert variables["PATH"].split(os.pathsep)[0] == str(python.parent)
    assert variables["VIRTUAL_ENV"] == str(python.parent.parent)
    assert run_altus("notebook", "stop", "built").returncode == 0

    started = time.monotonic()
    again = start_json(run_altus, str(notebook_root), "--name", "again", "--idle-timeout", "0")
    assert again["python"] == first["python"]  # the cached environment, not a new build
    assert time.monotonic() - started < 30
    listed = run_altus("env", "list", "--json")
    assert first["environment"] in listed.stdout


def test_a_requirement_that_does_not_resolve_is_one_line(
    run_altus: Any, notebook_root: Path
) -> None:
    (notebook_root / "requirements.txt").write_text("altus-no-such-package-xyz==1.0\n")
    done = run_altus("notebook", "start", str(notebook_root))
    assert done.returncode == 1
    assert done.stderr.startswith("altus: error: ")
    assert "altus-no-such-package-xyz" in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(run_altus("notebook", "list", "--json").stdout) == []


def test_a_proxy_setting_does_not_reach_the_server_and_a_port_is_reused_at_once(
    notebook_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: a proxy would fail
    first = altus.notebook.start(notebook_root, name="first", idle_timeout=0)
    port = first.record.port
    altus.notebook.stop("first")
    second = altus.notebook.start(notebook_root, name="second", port=port, idle_timeout=0)
    assert (second.record.port, second.notes) == (port, [])
    [state] = altus.notebook.servers()
    assert state.kernels == 0  # the API answered through no proxy
