"""Task functions the batch suite maps; importable by workers (by reference).

They live in their own module so the worker imports nothing from pytest.
Functions that take ``folder`` talk to the test through files in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def scaled_sum(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


def digest(blob: bytes) -> tuple[int, str]:
    return len(blob), hashlib.sha256(blob).hexdigest()


def chatty(x: int) -> int:
    """Prints through Python and through a child process that writes to fd 1 itself."""
    print(f"py-out {x}")
    print(f"py-err {x}", file=sys.stderr)
    subprocess.run([sys.executable, "-c", f"print('child-out {x}')"], check=True)
    return x


def pid_and_open_files(x: int) -> tuple[int, int]:
    return os.getpid(), len(os.listdir("/proc/self/fd"))


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def hog(megabytes: int) -> int:
    """Touches ``megabytes`` of memory for a moment."""
    data = b"x" * (megabytes << 20)
    time.sleep(0.05)
    return len(data)


def env_var(name: str) -> str | None:
    time.sleep(0.2)
    return os.environ.get(name)


def sleep_until_killed_once(folder: str, x: int) -> int:
    """Task 1's first attempt writes its pid and sleeps; later attempts return at once."""
    if x == 1:
        try:
            fd = os.open(Path(folder) / "marker", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return x * 10
        os.close(fd)
        write_atomically(Path(folder) / "pid", str(os.getpid()))
        time.sleep(60)
    return x * 10


def kill_own_worker_on_two(folder: str, x: int) -> int:
    """Task 2 SIGKILLs its own worker on every attempt, counting attempts in a file."""
    if x == 2:
        with open(Path(folder) / "attempts", "a") as attempts:
            attempts.write("attempt\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def hang_on_one(x: int) -> int:
    if x == 1:
        time.sleep(60)
    return x


def hang_with_alarm_blocked_on_one(x: int) -> int:
    """Task 1 blocks SIGALRM (as C code holding the GIL would) and sleeps."""
    if x == 1:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    return x


def record_pid_and_sleep(folder: str, x: int) -> int:
    write_atomically(Path(folder) / f"{x}.pid", str(os.getpid()))
    time.sleep(60)
    return x


def fail_odd_first_time(folder: str, x: int) -> int:
    if x % 2:
        marker = Path(folder) / f"failed-{x}"
        if not marker.exists():
            marker.touch()
            raise RuntimeError(f"first try of {x}")
    return x * 10


def wait_for_go_on_zero(folder: str, x: int) -> int:
    """Task 0 blocks until the test creates ``go`` (so it can damage the record first)."""
    if x == 0:
        deadline = time.monotonic() + 60
        while not (Path(folder) / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return x


def sleep_first_time(folder: str, x: int) -> int:
    """The first attempt of each task writes its pid and sleeps; later ones return."""
    marker = Path(folder) / f"started-{x}"
    if not marker.exists():
        marker.touch()
        write_atomically(Path(folder) / f"{x}.pid", str(os.getpid()))
        time.sleep(60)
    return x * 10


def print_then_fail(x: int) -> int:
    print(f"about to fail {x}")
    raise ValueError(f"failed {x}")


def silent_unless_one(x: int) -> int:
    if x == 1:
        print("only task one speaks")
    return x


def exit_on_one(x: int) -> int:
    if x == 1:
        sys.exit(3)
    return x


def unpicklable_result_on_one(x: int) -> object:
    if x == 1:
        import threading

        return threading.Lock()
    return x


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be rebuilt from its args (a common user-defined exception)."""

    def __init__(self, first: int, second: int) -> None:
        super().__init__(f"{first} and {second}")


def raise_needs_two_args(x: int) -> int:
    raise NeedsTwoArgs(x, x + 1)


def blob_of(i: int) -> bytes:
    return bytes([i]) * (25 << 20)


class ExitsWhenLoaded:
    """A callable whose unpickling ends the process that loads it (as an OOM kill would)."""

    def __call__(self, x: int) -> int:
        return x

    def __reduce__(self) -> tuple[object, ...]:
        return (os._exit, (3,))


def say_line(x: int) -> int:
    print(f"line {x}")
    return x


def print_megabytes(megabytes: int) -> int:
    sys.stdout.write("y" * (megabytes << 20))
    return megabytes


def read_stdin(x: int) -> str:
    return sys.stdin.read()


def run_child_that_sleeps(folder: str, x: int) -> int:
    """Runs a child process (as a pipeline calling a command-line tool would) that records its pid."""
    code = (
        "import os, sys, time\n"
        f"path = os.path.join({folder!r}, '{x}.pid')\n"
        "open(path + '.tmp', 'w').write(str(os.getpid()))\n"
        "os.replace(path + '.tmp', path)\n"
        "time.sleep(60)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return x


def python_prefix(x: int) -> str:
    """The environment the task runs in (``sys.prefix``)."""
    import sys

    return sys.prefix


def fork_child_then_die_on_one(folder: str, x: int) -> int:
    """Task 1's first attempt starts ``sleep 600``, forks a child that sleeps on holding
    every descriptor of its worker (as a multiprocessing child does), records both pids
    and SIGKILLs its own worker; later attempts return at once."""
    if x == 1 and not (Path(folder) / "forked.pid").exists():
        sleeper = subprocess.Popen(["sleep", "600"])
        write_atomically(Path(folder) / "sleep.pid", str(sleeper.pid))
        child = os.fork()
        if child == 0:
            time.sleep(600)
            os._exit(0)
        write_atomically(Path(folder) / "forked.pid", str(child))
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def interrupt_on_one(x: int) -> tuple[int, int]:
    """Task 1 raises KeyboardInterrupt; every task returns its worker's pid."""
    if x == 1:
        raise KeyboardInterrupt(f"stop at {x}")
    return x, os.getpid()


def spawn_children_and_nap(folder: str, x: int) -> int:
    """Records its worker's pid, starts ``sleep 600`` and a forked child that sleeps (their
    pids recorded too), naps two seconds, then says it finished."""
    sleeper = subprocess.Popen(["sleep", "600"])
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    for name, pid in (("worker", os.getpid()), ("sleep", sleeper.pid), ("forked", child)):
        write_atomically(Path(folder) / f"{x}-{name}.pid", str(pid))
    time.sleep(2)
    write_atomically(Path(folder) / f"{x}.finished", "")
    return x


def write_to_the_pool_log(x: int) -> int:
    """Writes a line to the local pool's log, as the pool's own messages would be."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if os.path.basename(target).startswith("client-") and target.endswith(".log"):
                os.write(int(fd), b"a note for the pool log\n")
    return x


def count_runs_fail_odd_first(folder: str, x: int) -> int:
    """Appends a line to ``runs-<x>`` each run; odd tasks fail their first run, and a rerun
    waits for ``go`` (so a retry's round still runs while the test retries again)."""
    runs = Path(folder) / f"runs-{x}"
    with open(runs, "a") as log:
        log.write("run\n")
    n = len(runs.read_text().splitlines())
    if x % 2 and n == 1:
        raise RuntimeError(f"first run of {x}")
    deadline = time.monotonic() + 60
    while n > 1 and not (Path(folder) / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return x * 10
