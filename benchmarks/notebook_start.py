"""Notebook start: ``altus notebook start`` side by side with a plain ``jupyter lab``.

altus's notebook servers are secure by default (a random token in a 0600 config
file, never on a command line), outlive the terminal and are recorded; this
benchmark checks what that costs in start-up time, and what a reproducible
environment costs to build. One run on one machine, two sections:

1. **Notebook start** - wall time from the command to a server whose REST API
   answers with its token, on an empty root folder:

   - ``altus``: ``altus notebook start ROOT --name N --port P --idle-timeout 0 --json``
     with the Python running altus (it has jupyterlab: a warm environment). The
     command returns only once the API answers, so its wall time is the figure;
   - ``jupyter``: ``jupyter-lab --no-browser --port P --ServerApp.token=T
     --ServerApp.root_dir=ROOT``, polled on ``/api/status`` every 20 ms;
   - ``altus-env``: ``altus notebook start ... --env requirements.txt`` (jupyterlab),
     an environment altus builds on the first start (reported apart; uv's cache as
     the user has it) and reuses;
   - ``jupyter-env``: plain ``jupyter lab`` of that environment, altus-env's peer.

   Target: altus (warm environment) <= 1.2 x plain ``jupyter lab``. The plain
   server is run with its token on the command line, which any user of the machine
   can read (``ps``): exactly what altus avoids. It is a timing baseline only.

2. **Environment build** from a requirements file (numpy and nibabel by default):
   ``altus env build DIR --json`` with a cold uv cache (a fresh, empty
   ``UV_CACHE_DIR``: everything comes from PyPI), with a warm one (filled by an
   earlier build; a fresh ``XDG_CACHE_HOME`` so altus cannot reuse its own
   environment), and altus's own cache hit; ``python -m venv`` + ``pip install -r``
   of the same file with a fresh and with a filled ``PIP_CACHE_DIR``, for context.

Each contender first runs once untimed (a warm-up, the first build, or the build
that fills the warm caches); a contender whose first run fails is reported as
unavailable, with the reason, and the others go on. Then the contenders take
turns round by round (each round starting one later); each figure is the median
of ``--repeats`` runs. Every server started here is stopped, also on Ctrl-C,
SIGTERM or an error; at the end no process that mentions the run's temp folder
may be left (any is ended and named in the report).

    python benchmarks/notebook_start.py            # full run, about 4 minutes on 2 cores
    python benchmarks/notebook_start.py --quick    # smoke run, 2 repeats, under 2 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402

DEFAULT_OUT = HERE / "results" / "notebook_start.json"
PACKAGES = ("altus", "jupyterlab", "jupyter_server", "uv", "pip", "psutil")
SYSTEMS = ("altus", "jupyter", "altus-env", "jupyter-env", "env-build", "pip")
DEFAULT_REQUIREMENTS = ("numpy", "nibabel")
NOTEBOOK_REQUIREMENTS = ("jupyterlab",)

TARGET_RATIO = 1.2  # altus notebook start (warm environment) <= 1.2x plain jupyter lab
POLL_S = 0.02
STOP_TIMEOUT_S = 15.0
DROPPED_VARIABLES = (
    "JUPYTER_TOKEN",
    "JUPYTER_PASSWORD",
    "JPY_API_TOKEN",
    "PYTHONDONTWRITEBYTECODE",
)


# -- the bench -----------------------------------------------------------------------------


@dataclass
class Bench:
    """One temp folder holding everything the run writes, and how to run the tools."""

    root: Path
    tools: dict[str, str]
    base_env: dict[str, str]
    user_uv_cache: str
    build_spec: Path  # what ``altus env build`` gets: a folder, or the --requirements file
    requirements: Path
    cfg: dict[str, Any]
    primed: dict[str, dict[str, Any]] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    @property
    def notebook_root(self) -> Path:
        return self.root / "notebooks"

    @property
    def notebook_spec(self) -> Path:
        return self.root / "notebook-env" / "requirements.txt"

    def fresh_dir(self, kind: str) -> Path:
        path = self.root / "scratch" / f"{next(self.counter):03d}-{kind}"
        path.mkdir(parents=True)
        return path

    def log_path(self, kind: str) -> Path:
        return self.root / "logs" / f"{next(self.counter):03d}-{kind}.log"

    def env(self, **extra: str | Path) -> dict[str, str]:
        return {**self.base_env, **{key: str(value) for key, value in extra.items()}}


@dataclass(frozen=True)
class Contender:
    """One way to start a server or build an environment, timed as a user would see it."""

    key: str
    system: str  # what --systems selects it by
    section: str  # "notebook" or "build"
    label: str
    measure: Callable[[Bench], dict[str, Any]]
    prepare: Callable[[Bench], dict[str, Any]] | None = None  # untimed; failing: unavailable
    peer: str | None = None  # the contender its ratio is taken against


@dataclass
class Outcome:
    contender: Contender
    samples: list[dict[str, Any]] = field(default_factory=list)
    prepared: dict[str, Any] | None = None
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        walls = [s["wall_s"] for s in self.samples if s.get("ok")]
        ok = self.error is None and bool(walls)
        figures: dict[str, Any] = {
            "ok": ok,
            "label": self.contender.label,
            "section": self.contender.section,
            "peer": self.contender.peer,
            "error": self.error if self.error or walls else "no sample ran",
            "prepared": self.prepared,
            "samples": self.samples,
        }
        return figures | (c.summarize(walls) if ok else {})


# -- processes and ports ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in c.file_tail(path).splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def processes_mentioning(marker: Path) -> list[int]:
    """Pids (not this one) whose command line mentions ``marker``: what this run started."""
    needle, found = os.fsencode(str(marker)), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _failed(measured: dict[str, Any], log_path: Path, timeout: float) -> str | None:
    if measured["timed_out"]:
        return f"timed out after {timeout:.0f} s"
    if measured["exit_code"] != 0:
        return f"exit code {measured['exit_code']}: {_last_line(log_path)}"
    return None


def run_command(bench: Bench, argv: list[str], env: dict[str, str], kind: str) -> dict[str, Any]:
    """Run one command to its end: wall, exit code, CPU, RSS, ``ok``/``error``, and the JSON
    object it printed (``report``), if any."""
    log_path = bench.log_path(kind)
    timeout = bench.cfg["timeout_s"]
    measured = c.run_measured(argv, log_path, timeout, env)
    error = _failed(measured, log_path, timeout)
    sample = {"command": " ".join(argv), **measured, "ok": error is None}
    if error:
        return sample | {"error": error, "output_tail": c.file_tail(log_path)}
    return sample | ({"report": c.json_in(log_path)} if "--json" in argv else {})


# -- section 1: notebook start -----------------------------------------------------------------


def altus_start(bench: Bench, kind: str, with_env: bool) -> dict[str, Any]:
    """``altus notebook start`` (returns once the API answers), then ``altus notebook stop``."""
    name, port = f"bench-{next(bench.counter)}", free_port()
    extra: dict[str, str | Path] = {"XDG_STATE_HOME": bench.fresh_dir("state")}
    if with_env:  # altus's environments in a cache of this run; uv's own cache as the user has it
        extra |= {"XDG_CACHE_HOME": bench.root / "notebook-env-cache"}
        extra |= {"UV_CACHE_DIR": bench.user_uv_cache}
    env = bench.env(**extra)
    argv = [bench.tools["altus"], "notebook", "start", str(bench.notebook_root), "--name", name]
    argv += ["--port", str(port), "--idle-timeout", "0", "--json"]
    argv += ["--env", str(bench.notebook_spec)] if with_env else []
    sample: dict[str, Any] = {}
    try:
        sample = run_command(bench, argv, env, kind)
    finally:
        sample["stop"] = altus_stop(bench, name, env, sample.get("report"))
    return sample


def altus_stop(
    bench: Bench, name: str, env: dict[str, str], record: dict[str, Any] | None
) -> dict[str, Any]:
    """Stop a server through altus; whether its process was still there afterwards."""
    argv = [bench.tools["altus"], "notebook", "stop", name]
    stopped = run_command(bench, argv, env, "stop")
    pid = (record or {}).get("pid")
    left = isinstance(pid, int) and c.pid_alive(pid)
    if isinstance(pid, int) and left:
        c.end_processes([pid])
    return {"wall_s": stopped["wall_s"], "ok": stopped["ok"], "server_left_running": left}


def plain_jupyter(bench: Bench, jupyter_lab: str) -> dict[str, Any]:
    """``jupyter lab`` timed until ``/api/status`` answers 200 with the token, then SIGTERM.

    A token on the command line is readable by every user of the machine (``ps``):
    exactly what altus avoids. This is a timing baseline only, never a way to run.
    """
    port, token = free_port(), secrets.token_hex(32)
    argv = [jupyter_lab, "--no-browser", "--port", str(port)]
    argv += [f"--ServerApp.token={token}", f"--ServerApp.root_dir={bench.notebook_root}"]
    argv += ["--allow-root"] if os.geteuid() == 0 else []
    log_path = bench.log_path("jupyter")
    with open(log_path, "wb") as output:
        start = time.perf_counter()
        process = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=bench.env(),
            start_new_session=True,
        )
        try:
            error = wait_ready(process, port, token, start + bench.cfg["timeout_s"])
            wall = time.perf_counter() - start
        finally:
            stop_s = stop_process(process)
    shown = " ".join(argv).replace(token, "<token>")
    sample = {"command": shown, "wall_s": round(wall, 6), "ok": error is None, "stop_s": stop_s}
    return sample | ({"error": error, "output_tail": c.file_tail(log_path)} if error else {})


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for loopback


def wait_ready(
    process: subprocess.Popen[bytes], port: int, token: str, deadline: float
) -> str | None:
    """None once the API answers; the reason if the server exits or the deadline passes."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    while not _answers(request):
        if process.poll() is not None:
            return f"jupyter lab exited with code {process.returncode} while starting"
        if time.perf_counter() > deadline:
            return "jupyter lab did not answer before the timeout"
        time.sleep(POLL_S)
    return None


def _answers(request: urllib.request.Request) -> bool:
    try:
        with _DIRECT.open(request, timeout=2.0) as response:
            return int(response.status) == 200
    except (OSError, ValueError):  # refused, reset, HTTP errors (URLError is an OSError)
        return False


def stop_process(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM and wait (jupyter_server shuts down on it); SIGKILL the group if it hangs."""
    start = time.perf_counter()
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        c.kill_tree(process.pid)
        process.wait()
    return round(time.perf_counter() - start, 3)


def first_env_start(bench: Bench) -> dict[str, Any]:
    """The first ``--env`` start: altus builds the environment (uv cache as the user has it)."""
    sample = altus_start(bench, "altus-env-first", with_env=True)
    bench.primed["notebook-env"] = sample
    return sample | {"what": "first start, environment built (incl. in wall_s)"}


def env_jupyter_lab(bench: Bench) -> str | None:
    """The ``jupyter-lab`` of the environment altus built for ``altus-env``, once it has."""
    record = bench.primed.get("notebook-env", {}).get("report") or {}
    return str(Path(record["python"]).parent / "jupyter-lab") if "python" in record else None


def warm_up(measure: Callable[[Bench], dict[str, Any]]) -> Callable[[Bench], dict[str, Any]]:
    """An untimed first run: reads the code into the page cache, writes .pyc files."""

    def prepare(bench: Bench) -> dict[str, Any]:
        return measure(bench) | {"what": "warm-up run (not in the figures)"}

    return prepare


# -- section 2: environment build ----------------------------------------------------------------


def env_build(
    bench: Bench, kind: str, uv_cache: Path, cache_home: Path, reuse: bool
) -> dict[str, Any]:
    """``altus env build SPEC --json`` with the given uv and altus caches; a run that reused
    its environment when it should have built one (or the other way round) gets no figure."""
    argv = [bench.tools["altus"], "env", "build", str(bench.build_spec), "--json"]
    env = bench.env(UV_CACHE_DIR=uv_cache, XDG_CACHE_HOME=cache_home)
    sample = run_command(bench, argv, env, kind)
    built = sample.pop("report", None) or {}
    sample["altus_report"] = {key: built.get(key) for key in ("name", "size_bytes", "reused")}
    sample["altus_report"]["seconds"] = built.get("seconds")
    if sample["ok"] and built.get("reused") is not reuse:
        wanted = "reuse its environment" if reuse else "build a new environment"
        sample |= {
            "ok": False,
            "error": f"expected altus to {wanted}; it said reused={built.get('reused')}",
        }
    return sample


def build_cold(bench: Bench) -> dict[str, Any]:
    uv_cache, cache_home = bench.fresh_dir("uv-cold"), bench.fresh_dir("cache-home")
    try:
        return env_build(bench, "build-cold", uv_cache, cache_home, reuse=False)
    finally:
        shutil.rmtree(uv_cache, ignore_errors=True)
        shutil.rmtree(cache_home, ignore_errors=True)


def build_warm(bench: Bench) -> dict[str, Any]:
    cache_home = bench.fresh_dir("cache-home")
    try:
        return env_build(bench, "build-warm", bench.root / "uv-warm", cache_home, reuse=False)
    finally:
        shutil.rmtree(cache_home, ignore_errors=True)


def build_hit(bench: Bench) -> dict[str, Any]:
    return env_build(bench, "build-hit", bench.root / "uv-warm", bench.root / "altus-hit", True)


def prime_build(bench: Bench) -> dict[str, Any]:
    """One build, once per run, that fills the warm uv cache and altus's cache for the hit."""
    if "build" not in bench.primed:
        hit = bench.root / "altus-hit"
        sample = env_build(bench, "build-prime", bench.root / "uv-warm", hit, reuse=False)
        bench.primed["build"] = sample | {"what": "cold build that fills the warm caches"}
    return bench.primed["build"]


def probe_env_build(bench: Bench) -> dict[str, Any]:
    """``altus env build --help``: fails at once (no such command) where envs are not there yet."""
    sample = run_command(
        bench, [bench.tools["altus"], "env", "build", "--help"], bench.env(), "probe"
    )
    return sample | {"what": "probe: does `altus env build` exist"}


def pip_build(bench: Bench, kind: str, pip_cache: Path) -> dict[str, Any]:
    """``python -m venv`` + ``pip install -r``, timed together, with ``pip_cache``."""
    venv = bench.fresh_dir("venv")
    env = bench.env(PIP_CACHE_DIR=pip_cache, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", "-r", str(bench.requirements)],
    ]
    done: list[dict[str, Any]] = []
    try:
        for argv in steps:
            done.append(run_command(bench, argv, env, kind))
            if not done[-1]["ok"]:
                break
    finally:
        shutil.rmtree(venv, ignore_errors=True)
    failed = [step for step in done if not step["ok"]]
    total = round(sum(step["wall_s"] for step in done), 6)
    sample = {"wall_s": total, "ok": not failed, "steps": done}
    return sample | ({"error": failed[0]["error"]} if failed else {})


def pip_cold(bench: Bench) -> dict[str, Any]:
    pip_cache = bench.fresh_dir("pip-cold")
    try:
        return pip_build(bench, "pip-cold", pip_cache)
    finally:
        shutil.rmtree(pip_cache, ignore_errors=True)


def pip_warm(bench: Bench) -> dict[str, Any]:
    return pip_build(bench, "pip-warm", bench.root / "pip-warm")


def prime_pip(bench: Bench) -> dict[str, Any]:
    sample = pip_build(bench, "pip-prime", bench.root / "pip-warm")
    return sample | {"what": "pip run that fills the warm pip cache"}


# -- the contenders and the rounds -------------------------------------------------------------


def altus_warm(bench: Bench) -> dict[str, Any]:
    return altus_start(bench, "altus", with_env=False)


def altus_env(bench: Bench) -> dict[str, Any]:
    return altus_start(bench, "altus-env", with_env=True)


def jupyter_warm(bench: Bench) -> dict[str, Any]:
    return plain_jupyter(bench, bench.tools["jupyter-lab"])


def jupyter_env(bench: Bench) -> dict[str, Any]:
    script = env_jupyter_lab(bench)
    if script is None:
        return {"ok": False, "error": "needs altus-env, which did not build its environment"}
    return plain_jupyter(bench, script)


CONTENDERS = (
    Contender("altus", "altus", "notebook", "altus notebook start (the Python running altus)",
              altus_warm, warm_up(altus_warm), peer="jupyter"),
    Contender("jupyter", "jupyter", "notebook", "jupyter lab, token on its command line",
              jupyter_warm, warm_up(jupyter_warm)),
    Contender("altus-env", "altus-env", "notebook", "altus notebook start --env requirements.txt",
              altus_env, first_env_start, peer="jupyter-env"),
    Contender("jupyter-env", "jupyter-env", "notebook", "jupyter lab of the environment altus "
              "built", jupyter_env, warm_up(jupyter_env)),
    Contender("build-cold", "env-build", "build", "altus env build, cold uv cache",
              build_cold, probe_env_build, peer="pip-cold"),
    Contender("build-warm", "env-build", "build", "altus env build, warm uv cache",
              build_warm, prime_build, peer="pip-warm"),
    Contender("build-hit", "env-build", "build", "altus env build, altus cache hit",
              build_hit, prime_build),
    Contender("pip-cold", "pip", "build", "python -m venv + pip install -r, cold pip cache",
              pip_cold),
    Contender("pip-warm", "pip", "build", "python -m venv + pip install -r, warm pip cache",
              pip_warm, prime_pip),
)  # fmt: skip


def run_section(bench: Bench, chosen: list[Contender]) -> dict[str, Outcome]:
    """Prepare each contender, then ``repeats`` rounds, each starting one contender later."""
    outcomes = {who.key: Outcome(who) for who in chosen}
    for outcome in outcomes.values():
        prepare(bench, outcome)
    for rep in range(bench.cfg["repeats"]):
        live = [o for o in outcomes.values() if o.error is None]
        if not live:
            break
        quiet_wait(bench)
        shift = rep % len(live)
        for outcome in live[shift:] + live[:shift]:
            measure(bench, outcome, rep)
    return outcomes


def prepare(bench: Bench, outcome: Outcome) -> None:
    who = outcome.contender
    if who.prepare is None:
        return
    log(f"  {who.key}: preparing ...")
    outcome.prepared = who.prepare(bench)
    if not outcome.prepared["ok"]:
        outcome.error = f"unavailable: {outcome.prepared['error']}"
        log(f"  {who.key}: {outcome.error}")
    elif "what" in outcome.prepared and "first" in outcome.prepared["what"]:
        log(f"  {who.key}: first start incl. build {outcome.prepared['wall_s']:.1f} s")


def measure(bench: Bench, outcome: Outcome, rep: int) -> None:
    who = outcome.contender
    sample = who.measure(bench) | {"rep": rep}
    outcome.samples.append(sample)
    if sample["ok"]:
        log(f"  {who.key} #{rep + 1}: {sample['wall_s']:.3f} s")
    else:
        outcome.error = str(sample.get("error"))
        log(f"  {who.key} #{rep + 1}: FAILED: {outcome.error}")


def quiet_wait(bench: Bench) -> None:
    if bench.cfg["wait_quiet_s"] > 0:
        c.wait_until_quiet(bench.cfg["quiet_cpus"], bench.cfg["wait_quiet_s"], log, window=1.0)


# -- setting up and tearing down -------------------------------------------------------------


def find_tools() -> dict[str, str]:
    """altus, jupyter-lab and uv next to this Python (not a pyenv shim), else on PATH."""
    found = {}
    for name in ("altus", "jupyter-lab", "uv"):
        local = Path(sys.executable).parent / name
        path = str(local) if local.exists() else shutil.which(name)
        if path is None and name != "uv":
            raise SystemExit(f"`{name}` not found next to {sys.executable} or on PATH")
        found[name] = path or ""
    return found


def user_uv_cache(tools: dict[str, str]) -> str:
    """uv's cache as the user has it; set explicitly since a fresh XDG_CACHE_HOME would move it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [tools["uv"], "cache", "dir"], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return os.environ.get("UV_CACHE_DIR") or str(Path(base) / "uv")


def base_environment() -> dict[str, str]:
    """This process's environment without altus's settings, a Jupyter token or password, or
    ``PYTHONDONTWRITEBYTECODE``: uv installs no ``.pyc`` files, so with it every start of a
    built environment would compile every module; without it, as for most users, the
    warm-up start writes them."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ALTUS_") and k not in DROPPED_VARIABLES
    }


def write_specs(root: Path, requirements: Path | None) -> tuple[Path, Path]:
    """The notebook's requirements file, and the build's (its folder, or the file given)."""
    (root / "notebooks").mkdir()
    (root / "logs").mkdir()
    (root / "notebook-env").mkdir()
    (root / "notebook-env" / "requirements.txt").write_text("\n".join(NOTEBOOK_REQUIREMENTS) + "\n")
    if requirements is not None:
        return requirements, requirements
    folder = root / "build-env"
    folder.mkdir()
    (folder / "requirements.txt").write_text("\n".join(DEFAULT_REQUIREMENTS) + "\n")
    return folder, folder / "requirements.txt"


@contextlib.contextmanager
def started_bench(
    cfg: dict[str, Any], tools: dict[str, str], machine: dict[str, Any]
) -> Iterator[Bench]:
    """A temp folder for everything; on the way out, any process of this run still there is
    named in ``machine["leftover_processes"]`` and ended, and the folder removed."""
    root = Path(tempfile.mkdtemp(prefix="altus-nbstart-", dir=cfg["work_dir"]))
    try:
        requirements = Path(cfg["requirements"]).resolve() if cfg["requirements"] else None
        build_spec, requirements_file = write_specs(root, requirements)
        yield Bench(
            root=root,
            tools=tools,
            base_env=base_environment(),
            user_uv_cache=user_uv_cache(tools),
            build_spec=build_spec,
            requirements=requirements_file,
            cfg=cfg,
        )
    finally:
        leftovers = processes_mentioning(root)
        machine["leftover_processes"] = {pid: c.command_line(pid) for pid in leftovers}
        if leftovers:
            log(f"WARNING: processes of this run still there: {leftovers}; ending them")
            c.end_processes(leftovers)
        shutil.rmtree(root, ignore_errors=True)


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


# -- the report ----------------------------------------------------------------------------------


def ratio(figures: dict[str, Any], key: str, peer_key: str | None = None) -> float | None:
    """``key``'s median over its peer's (or ``peer_key``'s); None where either has no figure."""
    this = figures.get(key)
    peer = figures.get(peer_key or (this or {}).get("peer") or "")
    if not (this and peer and this["ok"] and peer["ok"]):
        return None
    return float(this["median_s"] / peer["median_s"])


def _note(fig: dict[str, Any]) -> str:
    if not fig["ok"]:
        return str(fig["error"])[:100]
    prepared = fig.get("prepared") or {}
    if "first start" in str(prepared.get("what")):
        return f"first start incl. build: {c.fmt_s(prepared.get('wall_s'), 1)} s"
    own = [s["altus_report"]["seconds"] for s in fig["samples"] if "altus_report" in s]
    if own and None not in own:
        return f"altus's own report: {c.median(own):.2f} s"
    stops = [s["stop"]["wall_s"] for s in fig["samples"] if "stop" in s]
    stops += [s["stop_s"] for s in fig["samples"] if "stop_s" in s]
    return f"stopping: {c.median(stops):.2f} s" if stops else ""


def section_table(figures: dict[str, Any], section: str) -> str:
    rows = []
    for key, fig in figures.items():
        if fig["section"] != section:
            continue
        rows.append(
            [
                key,
                fig["label"],
                c.fmt_s(fig.get("median_s"), 2),
                c.fmt_s(fig.get("min_s"), 2),
                c.fmt_s(fig.get("max_s"), 2),
                fig["peer"] or "",
                c.fmt_x(ratio(figures, key)),
                _note(fig),
            ]
        )
    headers = ["system", "how", "median s", "min s", "max s", "peer", "/ peer", "note"]
    return c.table(headers, rows, [False, False, True, True, True, False, True, False])


def build_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    targets = [notebook_target(figures)]
    for key, label, peers in (
        ("altus-env", "altus notebook start --env (environment built before)",
         ("jupyter-env", "jupyter")),
        ("build-cold", "altus env build, cold uv cache", ("pip-cold",)),
        ("build-warm", "altus env build, warm uv cache", ("pip-warm",)),
        ("build-hit", "altus env build, altus cache hit", ()),
    ):  # fmt: skip
        if key in figures:
            targets.append(info_target(figures, key, label, peers))
    return targets


def notebook_target(figures: dict[str, Any]) -> dict[str, Any]:
    name = f"altus notebook start (warm environment) <= {TARGET_RATIO:g}x plain jupyter lab start"
    altus, plain = figures.get("altus"), figures.get("jupyter")
    value = ratio(figures, "altus")
    if value is None or altus is None or plain is None:
        status = "FAIL" if altus is not None and not altus["ok"] else "N/A"
        why = "; ".join(
            f"{k}: {f['error']}"
            for k, f in (("altus", altus), ("jupyter", plain))
            if f and not f["ok"]
        )
        detail = f"no figure ({why or 'altus or jupyter not selected'})"
        return {
            "name": name,
            "value": None,
            "limit": TARGET_RATIO,
            "status": status,
            "detail": detail,
        }
    detail = f"{c.fmt_x(value)} ({altus['median_s']:.2f} s vs {plain['median_s']:.2f} s)"
    status = "PASS" if value <= TARGET_RATIO else "FAIL"
    return {"name": name, "value": value, "limit": TARGET_RATIO, "status": status, "detail": detail}


def info_target(
    figures: dict[str, Any], key: str, label: str, peers: tuple[str, ...]
) -> dict[str, Any]:
    fig = figures[key]
    detail = str(fig["error"])
    if fig["ok"]:
        against = [
            f"{peer} {figures[peer]['median_s']:.2f} s ({c.fmt_x(ratio(figures, key, peer))})"
            for peer in peers
            if figures.get(peer, {}).get("ok")
        ]
        detail = f"{fig['median_s']:.2f} s" + (f" vs {', '.join(against)}" if against else "")
        detail += f"; {_note(fig)}" if _note(fig) else ""
    return {"name": label, "value": fig.get("median_s"), "limit": None, "status": "INFO",
            "detail": detail}  # fmt: skip


def build_report(
    cfg: dict[str, Any], machine: dict[str, Any], figures: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    lines = [
        f"altus notebook start - {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, jupyterlab {machine['packages'].get('jupyterlab')}, "
        f"{machine['date_utc']}",
        f"median of {cfg['repeats']} interleaved run(s); / peer = this median / the peer's "
        "(below 1: faster than the peer)",
        *c.machine_warnings(machine, cfg["quiet_cpus"]),
    ]
    titles = {
        "notebook": "Notebook start: command to a server whose REST API answers (warm page cache)",
        "build": f"Environment build from {cfg['requirements'] or ', '.join(DEFAULT_REQUIREMENTS)}",
    }
    for section, title in titles.items():
        if any(fig["section"] == section for fig in figures.values()):
            lines += ["", title, section_table(figures, section)]
    targets = build_targets(figures)
    lines += ["", "Targets", *(f"  [{t['status']}] {t['name']}: {t['detail']}" for t in targets)]
    return "\n".join(lines), targets


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "medians_s": {k: f.get("median_s") for k, f in figures.items()},
        "ratio_to_peer": {k: ratio(figures, k) for k in figures if figures[k]["peer"]},
        "altus_env_first_start_s": (figures.get("altus-env", {}).get("prepared") or {}).get(
            "wall_s"
        ),
    }


# -- command line --------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="altus notebook start vs plain jupyter lab; environment build times."
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="runs per figure (5; 2 quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}"
    )
    parser.add_argument("--no-pip", action="store_true", help="leave out venv + pip install")
    parser.add_argument(
        "--requirements",
        default=None,
        metavar="FILE",
        help=f"requirements file to build ({' + '.join(DEFAULT_REQUIREMENTS)})",
    )
    parser.add_argument("--work-dir", default=None, help="where the run's temp folder goes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command (600)")
    c.add_quiet_and_strict_options(parser, "before the run and each round")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    if args.requirements and not Path(args.requirements).is_file():
        raise SystemExit(f"{args.requirements}: no such file")
    return {
        "quick": args.quick,
        "repeats": args.repeats or (2 if args.quick else 5),
        "systems": [s for s in systems if not (args.no_pip and s == "pip")],
        "requirements": args.requirements,
        "work_dir": args.work_dir,
        "timeout_s": args.timeout,
        "wait_quiet_s": args.wait_quiet,
        "quiet_cpus": args.quiet_cpus,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tools = find_tools()
    quiet = c.wait_until_quiet(cfg["quiet_cpus"], cfg["wait_quiet_s"], log)
    machine = c.machine_info(PACKAGES, cfg["work_dir"] or tempfile.gettempdir()) | quiet
    chosen = [who for who in CONTENDERS if who.system in cfg["systems"]]
    log(f"notebook_start: {', '.join(w.key for w in chosen)}, {cfg['repeats']} repeat(s)")
    started = time.perf_counter()
    outcomes: dict[str, Outcome] = {}
    with started_bench(cfg, tools, machine) as bench:
        machine |= {"tools": tools, "user_uv_cache": bench.user_uv_cache}
        machine["dropped_variables"] = sorted(set(DROPPED_VARIABLES) & set(os.environ))
        for section in ("notebook", "build"):
            log(f"{section} ...")
            outcomes |= run_section(bench, [w for w in chosen if w.section == section])
    figures = {key: outcome.figures() for key, outcome in outcomes.items()}
    text, targets = build_report(cfg, machine, figures)
    print(text, flush=True)
    result = {"config": cfg, "machine": machine, "targets": targets, "summary": summary(figures)}
    c.save_result(
        args.out, "notebook_start", {**result, "results": figures, "table": text}, started, log
    )
    return c.exit_status(targets, args.strict)


if __name__ == "__main__":
    sys.exit(main())
