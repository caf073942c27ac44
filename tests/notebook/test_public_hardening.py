"""``--public`` against a password guesser, and a notebook's files against other users.

Issue 12, item 11: a public server took the password ``a``, and 30 wrong
guesses took 2 s. Now a weak password is refused with the reason, and the
running server throttles failed logins per client address: a growing delay,
then HTTP 429 for a lock-out period, even with the right password.

Item 3: every file a notebook server leaves (record, config, token, key, log,
altus's open page and Jupyter's own runtime files, among them a ``*-open.html``
page that carries the token) is private to its owner, checked as another user.

The throttling tests share one real public JupyterLab server (started once for
the module) with a short policy, and each test guesses from a loopback address
of its own (127.0.0.2, .3, ...): the server sees each as another client.
"""

from __future__ import annotations

import http.client
import http.cookies
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import altus.notebook
from altus import detached
from altus.errors import NotebookError
from altus.notebook import LoginThrottle, records

PASSWORD = "violet kettle orbit lantern"
WRONG = "not the password at all"
THROTTLE = LoginThrottle(first_delay=0.25, max_delay=1.0, max_failures=5, window=60, lockout=3)
"""Delays 0.25, 0.5, 1 s, then a 3 s lock-out at the 5th failure: short enough for tests."""
XDG = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")


@dataclass(frozen=True)
class Server:
    port: int
    cafile: str
    token: str
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One public server with ``THROTTLE``, in XDG folders of its own, stopped at the end."""
    home = tmp_path_factory.mktemp("public-home")
    root = home / "root"
    root.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for variable in XDG:
            patch.setenv(variable, str(home / variable.lower()))
        started = altus.notebook.start(
            root, name="guarded", public=True, password=PASSWORD, idle_timeout=0,
            login_throttle=THROTTLE,
        )  # fmt: skip
        record = started.record
        try:
            yield Server(record.port, str(record.certfile), record.token(), record.log)
        finally:
            altus.notebook.stop_all()


class Client:
    """A browser's login, from loopback address ``source``, with the real form and _xsrf."""

    def __init__(self, server: Server, source: str) -> None:
        self.server = server
        self.source = source

    def login(self, password: str) -> int:
        connection = self._connect()
        try:
            connection.request("GET", "/login")
            answer = connection.getresponse()
            answer.read()
            cookies = http.cookies.SimpleCookie(", ".join(answer.headers.get_all("Set-Cookie")))
            xsrf = cookies["_xsrf"].value
            form = urllib.parse.urlencode({"password": password, "_xsrf": xsrf})
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"_xsrf={xsrf}",
            }
            connection.request("POST", "/login?next=%2Flab", form, headers)
            answer = connection.getresponse()
            answer.read()
            return answer.status
        finally:
            connection.close()

    def status_with_token(self) -> int:
        connection = self._connect()
        try:
            headers = {"Authorization": f"token {self.server.token}"}
            connection.request("GET", "/api/status?no_track_activity=1", headers=headers)
            answer = connection.getresponse()
            answer.read()
            return answer.status
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=self.server.cafile)
        return http.client.HTTPSConnection(
            "127.0.0.1", self.server.port, context=context, timeout=60,
            source_address=(self.source, 0),
        )  # fmt: skip


def timed_logins(client: Client, password: str, count: int) -> list[tuple[int, float]]:
    """``count`` logins one after the other: each one's status and seconds."""
    answers = []
    for _ in range(count):
        began = time.monotonic()
        status = client.login(password)
        answers.append((status, time.monotonic() - began))
    return answers


# -- weak passwords -------------------------------------------------------------------


@pytest.fixture
def nothing_left() -> Iterator[None]:
    """Stops any server a test started where it should have been refused."""
    yield
    altus.notebook.stop_all()


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("a", "refused: the password has 1 character; --public needs at least 12"),
        ("Tr0ub4dor&3", "refused: the password has 11 characters; --public needs at least 12"),
        ("password1234", "refused: it is one of the most common passwords"),
        ("Qwerty!2024#", "refused: it is one of the most common passwords"),
        ("Correct Horse Battery Staple", "refused: it is one of the most common passwords"),
        ("zzzzzzzzzzzzzzzz", "refused: it is one character repeated"),
        ("abcabcabcabcabc", "refused: it is a short pattern repeated"),
        ("abcdefghijklmnop", "refused: it is a run of keys or letters in order"),
        ("3456789012345", "refused: it is a run of keys or letters in order"),
        ("lkjhgfdsapoiuyt", "refused: it is a run of keys or letters in order"),
    ],
)
@pytest.mark.usefixtures("nothing_left")
def test_a_weak_password_is_refused_with_the_reason(
    tmp_path: Path, password: str, reason: str
) -> None:
    with pytest.raises(NotebookError) as refused:
        altus.notebook.start(tmp_path, public=True, password=password)
    assert str(refused.value) == reason
    assert len(password) < 3 or password not in str(refused.value)
    assert altus.notebook.servers() == []
    assert not records.notebooks_dir().exists() or list(records.notebooks_dir().iterdir()) == []


@pytest.mark.usefixtures("nothing_left")
def test_the_user_name_is_refused_as_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGNAME", "margaret.hamilton")
    with pytest.raises(NotebookError, match=r"^refused: it is your user name$"):
        altus.notebook.start(tmp_path, public=True, password="Margaret.Hamilton")


@pytest.mark.usefixtures("nothing_left")
def test_the_cli_refuses_a_weak_password_in_one_line(run_altus: Any, tmp_path: Path) -> None:
    for password, reason in [
        ("a", "refused: the password has 1 character; --public needs at least 12"),
        ("iloveyou12345", "refused: it is one of the most common passwords"),
    ]:
        done = run_altus(
            "notebook", "start", str(tmp_path), "--public", "--password-stdin",
            input=password + "\n",
        )  # fmt: skip
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [f"altus: error: {reason}"]
        assert json.loads(run_altus("notebook", "list", "--json").stdout) == []


# -- throttling, against a real server ------------------------------------------------


def test_wrong_guesses_slow_down_then_lock_the_address_out(server: Server) -> None:
    guesser = Client(server, "127.0.0.2")
    began = time.monotonic()
    assert guesser.login(PASSWORD) == 302  # before any failure: straight in
    assert time.monotonic() - began < 5
    answers = timed_logins(guesser, WRONG, 30)
    statuses = [status for status, _ in answers]
    assert statuses == [401] * 4 + [429] * 26
    delays = [0.25, 0.5, 1.0, 1.0, 1.0]  # after each of the first 5 failures
    for (_, seconds), delay in zip(answers, delays, strict=False):
        assert seconds >= delay
    assert sum(seconds for _, seconds in answers) >= sum(delays)
    assert guesser.login(PASSWORD) == 429  # locked out: even the right password
    assert Client(server, "127.0.0.3").login(PASSWORD) == 302  # another address is not
    log = server.log.read_text()
    assert "failed login from 127.0.0.2" in log
    assert "locked out" in log
    assert WRONG not in log
    assert PASSWORD not in log


@pytest.mark.slow
def test_a_lockout_ends_and_a_success_starts_the_count_again(server: Server) -> None:
    guesser = Client(server, "127.0.0.4")
    assert [status for status, _ in timed_logins(guesser, WRONG, 5)] == [401] * 4 + [429]
    began = time.monotonic()
    while guesser.login(PASSWORD) == 429:
        assert time.monotonic() - began < THROTTLE.lockout + 30
        time.sleep(0.5)
    assert time.monotonic() - began >= THROTTLE.lockout - 1.5  # the lock-out lasted
    answers = timed_logins(guesser, WRONG, 5)  # the success reset the count: 4 more 401s
    assert [status for status, _ in answers] == [401] * 4 + [429]
    assert answers[0][1] < THROTTLE.max_delay + 0.5  # and the delay starts small again


def test_a_delayed_answer_does_not_hold_up_the_server(server: Server) -> None:
    """The delay is an ``asyncio.sleep``: other requests are answered meanwhile."""
    guesser = Client(server, "127.0.0.5")
    took: list[float] = []
    thread = threading.Thread(target=lambda: took.extend(t for _, t in timed_logins(
        guesser, WRONG, 3)))  # fmt: skip
    thread.start()
    latencies = []
    other = Client(server, "127.0.0.6")
    while thread.is_alive():
        began = time.monotonic()
        assert other.status_with_token() == 200
        latencies.append(time.monotonic() - began)
    thread.join()
    assert sum(took) >= 0.25 + 0.5 + 1.0
    assert len(latencies) >= 3
    assert sorted(latencies)[len(latencies) // 2] < 0.5


@pytest.mark.slow
def test_the_cli_server_throttles_with_the_default_policy(run_altus: Any, tmp_path: Path) -> None:
    """The defaults: 0.5 s after a first failure, doubling; the right password still works."""
    done = run_altus(
        "notebook", "start", str(tmp_path), "--public", "--password-stdin", "--idle-timeout",
        "0", "--json", input=PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    try:
        record = records.read_record(info["name"])
        assert record is not None
        token = record.token()
        client = Client(
            Server(info["port"], info["certfile"], token, Path(info["log"])), "127.0.0.7"
        )
        answers = timed_logins(client, WRONG, 3)
        assert [status for status, _ in answers] == [401] * 3
        assert [
            seconds >= delay for (_, seconds), delay in zip(answers, [0.5, 1, 2], strict=True)
        ] == [True] * 3
        assert client.login(PASSWORD) == 302
    finally:
        assert run_altus("notebook", "stop", info["name"]).returncode == 0


# -- file modes, as another user ------------------------------------------------------


def test_another_user_can_read_none_of_a_notebooks_files(
    run_altus: Any, other_user: Any, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XDG folders another user can reach, as on a login node whose home is 0755 and whose
    Jupyter runtime folder an older tool made with the usual umask (0755)."""
    for variable in XDG:
        monkeypatch.setenv(variable, str(shared_tmp / variable.lower()))
    runtime = shared_tmp / "xdg_data_home" / "jupyter" / "runtime"
    runtime.mkdir(parents=True, mode=0o755)
    (shared_tmp / "xdg_state_home" / "altus" / "notebooks").mkdir(parents=True, mode=0o755)
    root = shared_tmp / "root"
    root.mkdir()
    done = run_altus(
        "notebook", "start", str(root), "--public", "--password-stdin", "--name", "mine",
        "--idle-timeout", "0", "--json", input=PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        assert run_altus("notebook", "open", "mine", "--print").returncode == 0
        folder = records.server_folder("mine")
        secrets = [folder / name for name in (
            "open.html", "server.json", "jupyter_server_config.json", "key.pem", "token",
            "server.log")]  # fmt: skip
        assert all(path.exists() for path in secrets)
        state_files = [p for p in (shared_tmp / "xdg_state_home").rglob("*") if p.is_file()]
        runtime_files = [p for p in (shared_tmp / "xdg_data_home").rglob("*") if p.is_file()]
        readable = [
            str(path)
            for path in [*secrets, *state_files, *runtime_files]
            if other_user.run(["cat", str(path)]).returncode == 0
        ]
        assert readable == []
        listing = other_user.run(["ls", str(records.notebooks_dir())])
        assert listing.returncode != 0  # not even the servers' names
        assert _loose_modes(shared_tmp / "xdg_state_home" / "altus" / "notebooks") == []
    finally:
        run_altus("notebook", "stop", "mine")


def _loose_modes(top: Path) -> list[str]:
    """Folders not 0700 and files not 0600 under ``top`` (itself included)."""
    loose = []
    for path in [top, *top.rglob("*")]:
        wanted = 0o700 if path.is_dir() else 0o600
        mode = os.lstat(path).st_mode & 0o777
        if mode != wanted:
            loose.append(f"{path} {mode:o}")
    return loose


def test_the_runtime_files_of_a_server_stay_in_its_private_folder(tmp_path: Path) -> None:
    """Jupyter's runtime files (its info file with the token, the cookie secret, kernel
    connection files) go in the server's own folder, never in a shared runtime folder."""
    runtime = Path(os.environ["XDG_DATA_HOME"]) / "jupyter" / "runtime"
    record = altus.notebook.start(tmp_path, name="kept", idle_timeout=0).record
    try:
        token = record.token()
        leaked = [p for p in runtime.rglob("*") if p.is_file() and token in p.read_text()]
        assert leaked == []
        assert not list(runtime.glob("jpserver-*-open.html"))
        assert list((record.folder / "runtime").glob("jpserver-*.json"))
        assert detached.pid_exists(record.pid)
    finally:
        altus.notebook.stop("kept")
