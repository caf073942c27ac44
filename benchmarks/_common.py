"""Helpers shared by the benchmarks: timing, memory probes, machine facts, child runs, tables.

Nothing here imports altus or any peer system: a benchmark imports those in the
child process that measures them, so one system's threads, caches and imports
never perturb another's figures.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

MiB = 1 << 20


# -- timing ------------------------------------------------------------------------------


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``func()`` took (``perf_counter``), and what it returned."""
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """The figures saved for a repeated measurement: every sample, median, min, max."""
    return {
        "samples_s": [round(s, 6) for s in samples],
        "median_s": round(median(samples), 6),
        "min_s": round(min(samples), 6),
        "max_s": round(max(samples), 6),
    }


# -- memory of this process ------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Resident set size now."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def hwm_bytes() -> int | None:
    """Resident set high-water mark (``VmHWM``)."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def reset_hwm() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0: ``5 > clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PeakSampler:
    """Samples this process's RSS every ``interval`` seconds in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _read(self) -> int:
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except ImportError:
            return rss_bytes() or 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self.peak = self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


# -- the machine ---------------------------------------------------------------------------


def add_quiet_and_strict_options(parser: Any, when: str) -> None:
    """``--wait-quiet``, ``--quiet-cpus`` and ``--strict``, the same in every benchmark."""
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help=f"{when} wait up to this long for other processes to leave the "
        "CPUs idle (under --quiet-cpus busy)",
    )
    parser.add_argument(
        "--quiet-cpus",
        type=float,
        default=0.3,
        help="CPUs' worth of other work that still counts as quiet (0.3)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any target fails")


def save_result(
    out: Path,
    benchmark: str,
    figures: dict[str, Any],
    started: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Write a benchmark's JSON (name, schema, command, its figures, total time); returns it."""
    result = {
        "benchmark": benchmark,
        "schema": 1,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        **figures,
        "total_s": round(time.perf_counter() - started, 3),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"saved {out} ({result['total_s']:.0f} s in all)")
    return result


def exit_status(targets: Sequence[dict[str, Any]], strict: bool) -> int:
    """1 under ``--strict`` when a target failed, else 0."""
    return 1 if strict and any(t["status"] == "FAIL" for t in targets) else 0


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def fs_type(path: str | os.PathLike[str]) -> str | None:
    """The filesystem type of the mount holding ``path`` (Linux ``/proc/mounts``)."""
    target = os.path.realpath(path)
    best, best_type = "", None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1].replace("\\040", " ")
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, best_type = mount, parts[2]
    return best_type


def machine_info(packages: Iterable[str], store_dir: str | None = None) -> dict[str, Any]:
    """Everything needed to tell whether two result files are comparable."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_model": _cpu_model(),
        "memory_bytes": memory,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "packages": {name: package_version(name) for name in packages},
    }
    if store_dir is not None:
        info["store_dir"] = str(store_dir)
        info["store_fs_type"] = fs_type(store_dir)
    return info


# -- child processes ---------------------------------------------------------------------------


def run_child(
    script: str | os.PathLike[str],
    name: str,
    params: dict[str, Any],
    timeout: float,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Run ``script --child name`` in a fresh interpreter and return the dict it saved.

    The child gets its own session, so on a timeout its whole process group (its
    pools, clusters and workers) is killed. Failures come back as
    ``{"ok": False, "error": ..., "stderr_tail": ...}``, never as an exception.
    """
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        params_path = Path(tmp) / "params.json"
        result_path = Path(tmp) / "result.json"
        out_path = Path(tmp) / "output.log"
        params_path.write_text(json.dumps({**params, "child_timeout_s": timeout}))
        command = [
            sys.executable,
            str(script),
            "--child",
            name,
            "--params-file",
            str(params_path),
            "--result-file",
            str(result_path),
        ]
        start = time.perf_counter()
        with open(out_path, "wb") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            load_before = _loadavg()
            try:
                returncode: int | None = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
                kill_tree(process.pid)
                process.wait()
        elapsed = time.perf_counter() - start
        load = {"load_before": load_before, "load_after": _loadavg()}
        tail = out_path.read_text(errors="replace")[-4000:]
        if returncode is None:
            log(f"  {name}: TIMED OUT after {timeout:.0f} s")
            return {
                "ok": False,
                "error": f"timed out after {timeout:.0f} s (process group killed)",
                "command": " ".join(command),
                "output_tail": tail,
                "elapsed_s": round(elapsed, 3),
                **load,
            }
        if not result_path.exists():
            log(f"  {name}: FAILED (exit code {returncode})")
            return {
                "ok": False,
                "error": f"exited with code {returncode} without a result",
                "command": " ".join(command),
                "output_tail": tail,
                "elapsed_s": round(elapsed, 3),
                **load,
            }
        result: dict[str, Any] = json.loads(result_path.read_text())
        result.setdefault("ok", True)
        result["elapsed_s"] = round(elapsed, 3)
        result.update(load)
        if not result["ok"]:
            result.setdefault("output_tail", tail)
            result.setdefault("command", " ".join(command))
        log(
            f"  {name}: {'ok' if result['ok'] else 'FAILED: ' + str(result.get('error'))}"
            f" ({elapsed:.1f} s)"
        )
        return result


class _TreePeakSampler:
    """Polls the RSS of a child process plus its descendants; ``peak`` in bytes."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-rss", daemon=True)

    def _read(self) -> int:
        import psutil

        total = 0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self.samples += 1
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


GNU_TIME = "/usr/bin/time"


@functools.lru_cache(maxsize=1)
def _gnu_time() -> str | None:
    """``/usr/bin/time`` if it is GNU time (``-f`` and ``-o``), else None."""
    try:
        done = subprocess.run(
            [GNU_TIME, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return GNU_TIME if "GNU" in done.stdout + done.stderr else None


def _read_gnu_time(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``%M %U %S`` as written by GNU time's ``-o`` (its last line; a signal adds one above)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(path).read_text().strip().splitlines()[-1].split()
        return {
            "max_rss_bytes": int(fields[0]) * 1024,
            "cpu_user_s": float(fields[1]),
            "cpu_system_s": float(fields[2]),
        }
    return None


def run_measured(
    argv: Sequence[str],
    output: str | os.PathLike[str],
    timeout: float,
    env: dict[str, str] | None = None,
    sample_interval: float | None = None,
) -> dict[str, Any]:
    """Run a command to its end; its wall seconds, exit code, CPU seconds and peak RSS.

    The peak RSS cannot come from this process's ``wait4`` on the child: Linux
    carries the high-water mark of the memory a child had before ``exec`` over
    into its ``ru_maxrss``, and before ``exec`` a child shares this process's
    memory, so every child would report at least this process's RSS. GNU
    ``/usr/bin/time`` (a C program of about 1 MiB) starts the command instead and
    writes its exact ``ru_maxrss`` and CPU seconds; without GNU time they come
    from ``wait4`` and ``rss_source`` says so. With ``sample_interval`` (needs
    psutil) the RSS of the command and its descendants is also polled, as a
    cross-check. stdout and stderr go to ``output``. The child gets its own
    session; on a timeout, or an exception here (Ctrl-C), it and its
    descendants are killed.
    """
    expired = threading.Event()
    gnu_time = _gnu_time()
    with tempfile.TemporaryDirectory(prefix="bench-time-") as tmp, open(output, "wb") as out:
        rusage_path = Path(tmp) / "rusage"
        prefix = [gnu_time, "-f", "%M %U %S", "-o", str(rusage_path)] if gnu_time else []
        start = time.perf_counter()
        process = subprocess.Popen(
            [*prefix, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

        def expire() -> None:
            expired.set()
            kill_tree(process.pid)

        timer = threading.Timer(timeout, expire)
        sampler = _TreePeakSampler(process.pid, sample_interval) if sample_interval else None
        timer.start()
        if sampler is not None:
            sampler.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            kill_tree(process.pid)
            process.wait()
            raise
        finally:
            timer.cancel()
            if sampler is not None:
                sampler.stop()
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        measured = _read_gnu_time(rusage_path) if gnu_time else None
    maxrss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return {
        "wall_s": round(wall, 6),
        "exit_code": process.returncode,
        "timed_out": expired.is_set(),
        "cpu_user_s": round(usage.ru_utime, 3),
        "cpu_system_s": round(usage.ru_stime, 3),
        "max_rss_bytes": maxrss,
        **(measured or {}),
        "rss_source": "GNU time" if measured else "wait4 (includes this process's RSS)",
        "sampled_peak_rss_bytes": sampler.peak if sampler is not None else None,
        "rss_samples": sampler.samples if sampler is not None else None,
    }


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``."""
    try:
        with open("/proc/stat") as stat:
            fields = [float(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def busy_cpus(window: float = 2.0) -> float | None:
    """How many CPUs' worth of work the whole machine did over the next ``window`` seconds."""
    first = _cpu_times()
    time.sleep(window)
    second = _cpu_times()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)


def wait_until_quiet(
    max_busy: float,
    patience: float,
    log: Callable[[str], None],
    window: float = 2.0,
) -> dict[str, Any]:
    """Wait up to ``patience`` seconds for the machine to use under ``max_busy`` CPUs."""
    start = time.monotonic()
    busy = busy_cpus(window)
    while busy is not None and busy > max_busy and time.monotonic() - start < patience:
        log(f"  machine busy: {busy:.2f} CPUs in use by other processes; waiting ...")
        time.sleep(2 * window)
        busy = busy_cpus(window)
    return {
        "busy_cpus_at_start": None if busy is None else round(busy, 3),
        "waited_s": round(time.monotonic() - start, 1),
        "quiet": busy is not None and busy <= max_busy,
    }


def machine_warnings(machine: dict[str, Any], quiet_cpus: float) -> list[str]:
    """Report lines for a run begun on a busy machine, or that left processes behind."""
    warnings = []
    busy = machine.get("busy_cpus_at_start")
    if busy is not None and busy > quiet_cpus:
        warnings.append(
            f"WARNING: other processes kept {busy:.2f} CPUs busy when the run began; "
            "figures from a busy machine are noisy"
        )
    for pid, command in machine.get("leftover_processes", {}).items():
        warnings.append(f"WARNING: left running at the end (ended now): pid {pid}: {command[:120]}")
    return warnings


def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def kill_tree(pid: int) -> None:
    """SIGKILL a child we started, its process group, and every descendant of it.

    Descendants are collected first: pools that start their own session (altus's
    local pool does) are not in the child's process group.
    """
    descendants: list[int] = []
    try:
        import psutil

        with contextlib.suppress(psutil.Error):
            descendants = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)


# -- tables ---------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool]) -> str:
    """A plain-text table; ``right[i]`` right-aligns column ``i``."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if right[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def fmt_s(seconds: float | None, digits: int = 3) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def fmt_rate(per_second: float | None) -> str:
    return "-" if per_second is None else f"{per_second:,.0f}"


def fmt_x(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:,.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def fmt_pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def fmt_mib(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / MiB:.1f}"


# -- what a child printed ------------------------------------------------------------------


def file_tail(path: Path, limit: int = 3000) -> str:
    """The last ``limit`` characters of a log file; empty if it cannot be read."""
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-limit:]
    return ""


def json_in(path: Path, limit: int = 10_000_000) -> dict[str, Any] | None:
    """The first JSON object a command printed on a line of its own (other output around it)."""
    text, decoder, offset = file_tail(path, limit), json.JSONDecoder(), 0
    for line in text.splitlines(keepends=True):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found = decoder.raw_decode(text, offset)[0]
                if isinstance(found, dict):
                    return dict(found)
        offset += len(line)
    return None


# -- processes a run started ------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int, limit: int = 300) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:limit]
    return "?"


def end_processes(pids: list[int]) -> None:
    """SIGTERM, a few seconds' grace, then SIGKILL for what is left."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        deadline = time.monotonic() + 5
        while any(map(pid_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
