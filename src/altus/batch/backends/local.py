"""``backend="local"``: this machine, through one warm pool per client process.

The pool itself lives in ``local_pool.py``; this module starts it, tells it
what to run, and turns its events into wake-ups for waiting job handles. A
job launched here goes on if this process dies; a KeyboardInterrupt that ends
this process cancels what it launched, so Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar

from altus.batch.backends.base import Backend, Launch, Resources, worker_environment
from altus.batch.record import JobRecord
from altus.config import load_settings
from altus.detached import open_private, private_folder
from altus.errors import BackendError

__all__ = ["LocalBackend", "visible_gpus", "worker_keys"]

_START_TIMEOUT = 30.0


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi``."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [gpu for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip()]


def worker_keys(workers: int | None, resources: Resources) -> list[str]:
    """One environment key per worker: which GPUs it sees and how many threads it uses."""
    n = workers or max(1, len(os.sched_getaffinity(0)) // resources.cpus)
    if resources.memory and not workers:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        n = max(1, min(n, total // resources.memory))
    threads = f"threads={resources.cpus}"
    if not resources.gpus:
        return [threads] * n
    gpus = visible_gpus()
    per = resources.gpus
    if len(gpus) < per:
        raise BackendError(
            f"each task asks for {per} GPU(s) but this machine has {len(gpus)} visible"
        )
    n = min(n, len(gpus) // per)
    return [f"gpus={','.join(gpus[i * per : (i + 1) * per])};{threads}" for i in range(n)]


class _Pool:
    """This process's connection to its pool: commands out, events in."""

    def __init__(self) -> None:
        log_dir = private_folder(load_settings().paths.state_dir / "local-pool")
        self.log_path = log_dir / f"client-{os.getpid()}.log"
        self.changed: dict[str, threading.Event] = {}
        self.active: set[tuple[str, int]] = set()
        self.abandoned: dict[str, str] = {}
        """record URL → why the pool gave the job up."""
        self.lock = threading.Lock()
        with open_private(self.log_path, append=True) as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "altus.batch.backends.local_pool"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                env={**worker_environment(), "ALTUS_POOL_LOG": str(self.log_path)},
            )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.commands: IO[bytes] = self.process.stdin
        self._wait_ready(self.process.stdout)
        self.reader = threading.Thread(
            target=self._read_events, name="altus-local-pool", daemon=True
        )
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None and self.reader.is_alive()

    def send(self, **command: Any) -> None:
        try:
            with self.lock:
                self.commands.write(json.dumps(command).encode() + b"\n")
                self.commands.flush()
        except OSError as exc:
            raise BackendError(f"the local worker pool stopped (its log: {self.log_path})") from exc

    def event_for(self, url: str) -> threading.Event:
        with self.lock:
            return self.changed.setdefault(url, threading.Event())

    def _wait_ready(self, stdout: IO[bytes]) -> None:
        timer = threading.Timer(_START_TIMEOUT, self.process.kill)
        timer.start()
        try:
            line = stdout.readline()
        finally:
            timer.cancel()
        if not line.startswith(b'{"ev": "ready"'):
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BackendError(f"the local worker pool did not start; its log ends with: {tail}")

    def _read_events(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            event = json.loads(line)
            self.event_for(event["record"]).set()
            if event["ev"] == "finished":  # forget it, or a long session keeps one per job
                self.active.discard((event["record"], event["round"]))
                if event.get("error"):
                    self.abandoned[event["record"]] = event["error"]
                with self.lock:
                    self.changed.pop(event["record"], None)
        for event in list(self.changed.values()):  # the pool is gone: wake every waiter
            event.set()

    def cancel_active(self) -> None:
        for url, round_ in list(self.active):
            JobRecord.open(url).cancel(round_)
            self.send(op="cancel", record=url, round=round_)


_pool: _Pool | None = None
_pool_lock = threading.Lock()
_hook_installed = False


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None or not _pool.alive():
            _pool = _Pool()
            _install_interrupt_hook()
        return _pool


def _install_interrupt_hook() -> None:
    """An uncaught Ctrl-C ends this process: cancel what it launched first."""
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt) and _pool is not None:
            _pool.cancel_active()
        previous(kind, value, tb)

    sys.excepthook = hook


def _close_pool() -> None:
    if _pool is not None and _pool.process.stdin:
        _pool.process.stdin.close()  # the pool finishes running jobs, then exits


atexit.register(_close_pool)


class LocalBackend(Backend):
    """Runs chunks on this machine in a pool of long-lived worker processes."""

    name: ClassVar[str] = "local"
    single_task_chunks_per_worker: ClassVar[int] = 16
    """A chunk costs the pool about 0.3 ms: 32 subjects on 2 workers are 32 chunks, and the
    last worker to finish waits for one subject, not for four."""

    def launch(self, launch: Launch) -> None:
        keys = worker_keys(launch.workers, launch.resources)
        pool = _get_pool()
        record = launch.record
        state = {"host": socket.gethostname(), "pid": pool.pid, "client": os.getpid()}
        record.write_backend_state(self.name, {**state, "round": launch.round})
        pool.active.add((record.url, launch.round))
        pool.send(
            op="launch",
            record=record.url,
            round=launch.round,
            n_chunks=launch.n_chunks,
            keys=keys[: max(1, launch.n_chunks)],
            retries=record.spec.retries,
            timeout=record.spec.timeout,
            environment=worker_environment(),
        )

    def cancel(self, record: JobRecord, round_: int) -> None:
        if _pool is not None and _pool.alive():
            _pool.send(op="cancel", record=record.url, round=round_)
        # a pool of another process sees the record's cancel marker within a second

    def is_active(self, record: JobRecord) -> bool:
        if _pool is not None and record.url in _pool.abandoned:
            return False
        state = record.backend_state(self.name)
        if state is None:
            return False
        if "round" in state and record.has_ended(int(state["round"])):
            return False  # the pool wrote that none of its workers runs the round any more
        if state["host"] != socket.gethostname():
            return True  # another machine's pool: it cannot be checked from here
        return _pool_or_its_workers_alive(int(state["pid"]))

    def why_inactive(self, record: JobRecord) -> str | None:
        if _pool is not None and record.url in _pool.abandoned:
            return f"the local pool gave it up: {_pool.abandoned[record.url]}"
        return None

    def wait_for_change(self, record: JobRecord, timeout: float) -> None:
        if _pool is None or not _pool.alive():
            time.sleep(min(timeout, 0.2))
            return
        event = _pool.event_for(record.url)
        event.wait(timeout)
        event.clear()


def _pool_or_its_workers_alive(pid: int) -> bool:
    """The pool, or a worker it forked that outlived it (they share the pool's session):
    until none is left, a killed pool's workers may still commit."""
    if _is_pool_process(pid):
        return True
    return any(_is_pool_process(member) for member in _session_members(pid))


def _session_members(session: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()  # after the command name
            if len(fields) > 3 and int(fields[3]) == session:
                members.append(int(entry))
    return members


def _is_pool_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"altus.batch.backends.local_pool" in cmdline
