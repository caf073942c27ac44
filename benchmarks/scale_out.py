"""Scale-out: altus's ``map`` on a real Slurm cluster and on a Dask cluster, side by side
with what a user would otherwise write.

One run on one machine: the one-node Slurm cluster of ``scripts/slurm-cluster`` (started
here unless it already runs, and then stopped at the end) and one Dask ``LocalCluster``.
Every contender runs the same short task, ``short_task(x) -> 2 * x`` (``--task-seconds``
adds a sleep), over ``--tasks`` inputs (1,000); each figure is the wall time from the
submitting call to every result in hand, checked.

1. **Slurm**, the same cluster and its default partition for all three:

   - ``sbatch``: a raw job array, one element per task, each starting a Python that
     prints twice its index, as a user's own array script would:
     ``sbatch --array=0-(N-1) --wrap "PYTHON -c '...' $SLURM_ARRAY_TASK_ID"``. Waited for
     by polling ``squeue -j ID`` every 0.5 s until no element is pending, running or
     completing; then every element's output file must hold its result;
   - ``altus-slurm``: ``Knot(short_task, backend="slurm", store="file://TMP").map(inputs)``
     and ``job.results()``, with altus's own chunking (one array element per chunk);
   - ``submitit``: ``AutoExecutor(folder, cluster="slurm")``,
     ``update_parameters(slurm_partition=<default partition>, timeout_min=10)``,
     ``map_array(short_task, inputs)`` and every job's ``result()``. The wait is
     submitit's own (``job.done()``, then 1 s of sleep) with a deadline added: this
     cluster has no accounting database, so ``sacct`` fails, submitit logs "Bypassing
     sacct error" and goes by its result files alone, and an element that died without
     one would leave ``result()`` waiting for ever.

   Each contender first runs a 2-task map untimed (a contender that fails it is reported
   unavailable, with the reason); then ``--slurm-repeats`` (1) rounds, each starting one
   contender later. After each run, untimed, Slurm gets up to 60 s to let go of its
   elements, and none may have ended FAILED, CANCELLED, TIMEOUT or the like
   (``squeue --states=all``). A raw array of 1,000 takes minutes here: this Slurm starts
   about 4 jobs a second.

2. **Dask**, one ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` in a
   child process: ``client.gather(client.map(short_task, inputs, pure=False))`` against
   ``Knot(short_task, backend="dask", address=<its scheduler>).map(inputs).results()``
   (each altus chunk is one Dask task that starts a Python child, the chunk's
   supervisor). Both warmed up first; ``--repeats`` (3) interleaved runs at ``--tasks``
   and at ``--dask-big-tasks`` (10,000, INFO).

Targets: altus on Slurm <= 1.2x the raw array's wall time and >= 3x faster than submitit;
altus on Dask <= 1.2x plain ``client.map``. Every Slurm job submitted here is cancelled
by its id on the way out (also on Ctrl-C or SIGTERM), and no job of this run may be left
in ``squeue`` at the end; the Dask cluster is closed. Jobs of others that run on the same
cluster during a measurement are named in the report: they make its figure noisy.

    python benchmarks/scale_out.py            # full run, about 11 minutes on 2 cores
    python benchmarks/scale_out.py --quick    # 100 tasks, about 2 minutes
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402

DEFAULT_OUT = HERE / "results" / "scale_out.json"
CLUSTER_SCRIPT = HERE.parent / "scripts" / "slurm-cluster"
PACKAGES = ("altus", "submitit", "dask", "distributed", "cloudpickle", "psutil")
SLURM_SYSTEMS = ("sbatch", "altus-slurm", "submitit")
DASK_SYSTEMS = ("dask", "altus-dask")
SYSTEMS = SLURM_SYSTEMS + DASK_SYSTEMS
JOB_NAME = "scale_out"  # every Slurm job of this run has it in its name

TARGET_RAW_RATIO = 1.2  # altus on Slurm wall <= 1.2x a raw sbatch --array
TARGET_SUBMITIT_SPEEDUP = 3.0  # altus on Slurm >= 3x faster than submitit's map_array
TARGET_DASK_RATIO = 1.2  # altus on Dask wall <= 1.2x plain client.map
POLL_S = 0.5  # squeue polls while a raw array runs
QUEUE_WATCH_S = 2.0  # squeue polls for other users' jobs during a measurement
SLURM_COMMAND_TIMEOUT_S = 60
CLUSTER_SCRIPT_TIMEOUT_S = 180
WARM_UP_TASKS = 2
SETTLE_TIMEOUT_S = 60  # for a run's elements to leave squeue once its results are in hand
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                 "BOOT_FAIL", "DEADLINE"}  # fmt: skip


# -- the task (module level in __main__: cloudpickle ships it by value, to every system) ----------


def short_task(x: int, seconds: float = 0.0) -> int:
    if seconds:
        time.sleep(seconds)
    return x * 2


def task_function(seconds: float) -> Callable[[int], int]:
    return functools.partial(short_task, seconds=seconds) if seconds else short_task


def raw_command(python: str, seconds: float) -> str:
    """The shell line of one raw array element: the same work, one Python start."""
    sleep = f"import time; time.sleep({seconds!r}); " if seconds else ""
    code = f"{sleep}import sys; print(int(sys.argv[1]) * 2)"
    return f"{shlex.quote(python)} -c {shlex.quote(code)} $SLURM_ARRAY_TASK_ID"


def check_results(out: list[Any], n: int, what: str) -> None:
    expected = [2 * i for i in range(n)]
    if out != expected:
        bad = next((i for i, (a, b) in enumerate(zip(out, expected, strict=False)) if a != b), None)
        raise AssertionError(
            f"{what}: wrong results ({len(out)} for {n} inputs; first mismatch at {bad})"
        )


# -- Slurm: the cluster and its commands -------------------------------------------------------


def slurm(*argv: str) -> subprocess.CompletedProcess[str]:
    """A Slurm command with this process's environment (``SLURM_CONF``); never raises on
    its exit code."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=SLURM_COMMAND_TIMEOUT_S, check=False
    )


def cluster_script(command: str, state_dir: str | None) -> subprocess.CompletedProcess[str]:
    argv = [str(CLUSTER_SCRIPT), command, *(["--state-dir", state_dir] if state_dir else [])]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=CLUSTER_SCRIPT_TIMEOUT_S, check=False
    )


def parse_exports(text: str) -> dict[str, str]:
    """The variables of the ``export NAME=VALUE`` lines the script prints (shell-quoted)."""
    found = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            found[name] = value
    return found


@contextlib.contextmanager
def slurm_cluster(state_dir: str | None, facts: dict[str, Any]) -> Iterator[None]:
    """Point every Slurm command, here and in children, at ``scripts/slurm-cluster``'s
    cluster; start it if it does not run, and only then stop it on the way out."""
    running = cluster_script("status", state_dir).returncode == 0
    done = cluster_script("start", state_dir)
    exports = parse_exports(done.stdout)
    if done.returncode != 0 or "SLURM_CONF" not in exports:
        raise RuntimeError(
            f"scripts/slurm-cluster start failed (exit {done.returncode}): "
            + (done.stderr.strip().splitlines() or ["no message"])[-1]
        )
    os.environ.update(exports)
    facts.update(exports, started_here=not running)
    log(f"slurm cluster: {'started' if not running else 'already running'}, {exports}")
    try:
        yield
    finally:
        if not running:
            stopped = cluster_script("stop", state_dir)
            facts["stopped_here"] = stopped.returncode == 0
            log(f"slurm cluster stopped (exit {stopped.returncode})")


def cluster_facts() -> dict[str, Any]:
    """Slurm's version, the node, the default partition, and what is queued now."""
    partitions = slurm("sinfo", "-h", "-o", "%P").stdout.split()
    default = next((p.rstrip("*") for p in partitions if p.endswith("*")), None)
    return {
        "slurm_version": slurm("sinfo", "--version").stdout.strip(),
        "nodes": slurm("sinfo", "-h", "-N", "-o", "%N %c CPUs %m MB %T").stdout.strip(),
        "partition": default or (partitions[0] if partitions else None),
        "queue_at_start": sorted(queued_jobs()),
    }


def queued_jobs() -> set[str]:
    """The jobs squeue lists as pending or running (an array by its own id, ``%F``)."""
    done = slurm("squeue", "-h", "-o", "%F|%j")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def active_elements(job_id: str) -> int | None:
    """How many elements of an array are pending or running; None when squeue failed
    (a busy controller), 0 once Slurm no longer knows the job."""
    done = slurm("squeue", "-h", "-j", job_id, "-o", "%i")
    if done.returncode != 0:
        return 0 if "Invalid job id" in done.stderr else None
    return sum(1 for line in done.stdout.splitlines() if line.strip())


def final_states(job_id: str) -> dict[str, int]:
    """How many elements ended in each state, for those squeue still lists (MinJobAge)."""
    done = slurm("squeue", "-h", "--array", "--states=all", "-j", job_id, "-o", "%T")
    return dict(collections.Counter(line.strip() for line in done.stdout.splitlines() if line))


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        slurm("scancel", *job_ids)


class QueueWatch:
    """Every job squeue lists while a measurement runs, polled in a thread."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-watch", daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.seen |= queued_jobs()
            if self._stop.wait(QUEUE_WATCH_S):
                return

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def others(self, ours: list[str]) -> list[str]:
        """``id|name`` of the jobs seen that are not this measurement's."""
        return sorted(job for job in self.seen if job.split("|")[0] not in ours)


# -- Slurm: the contenders ------------------------------------------------------------------------


@dataclass
class SlurmBench:
    """The run's temp folder, the cluster's facts and every job id submitted so far."""

    root: Path
    cfg: dict[str, Any]
    partition: str | None
    submitted: list[str] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    @property
    def task(self) -> Callable[[int], int]:
        return task_function(self.cfg["task_seconds"])

    @property
    def store_url(self) -> str:
        return "file://" + str(self.root / "altus-store")

    def fresh_dir(self, kind: str) -> Path:
        path = self.root / f"{next(self.counter):03d}-{kind}"
        path.mkdir(parents=True)
        return path


def _deadline_passed(deadline: float, what: str) -> None:
    if time.perf_counter() > deadline:
        raise TimeoutError(f"{what} not finished after the --timeout")


def run_sbatch(bench: SlurmBench, n: int, deadline: float) -> dict[str, Any]:
    """A raw ``sbatch --array``, one Python start per task, waited for with squeue."""
    folder = bench.fresh_dir("sbatch")
    argv = [
        "sbatch", "--parsable", f"--array=0-{n - 1}", f"--job-name={JOB_NAME}-sbatch",
        f"--output={folder}/%A_%a.out",
        f"--wrap={raw_command(sys.executable, bench.cfg['task_seconds'])}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = slurm(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
    job_id = done.stdout.strip().split(";")[0]
    bench.submitted.append(job_id)
    while active_elements(job_id) != 0:
        _deadline_passed(deadline, f"array {job_id}")
        time.sleep(POLL_S)
    wall = time.perf_counter() - start
    wrong = [i for i in range(n) if _output(folder / f"{job_id}_{i}.out") != str(2 * i)]
    if wrong:
        raise AssertionError(f"{len(wrong)} element(s) without their result, first {wrong[0]}")
    return {"wall_s": round(wall, 6), "job_ids": [job_id], "elements": n, "argv": argv}


def _output(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return None


def run_altus_slurm(bench: SlurmBench, n: int, deadline: float) -> dict[str, Any]:
    """``Knot(backend="slurm").map`` + ``job.results()``, altus's own chunking."""
    import altus

    knot = altus.Knot(bench.task, backend="slurm", store=bench.store_url, name=JOB_NAME)
    inputs = list(range(n))
    start = time.perf_counter()
    job = knot.map(inputs)
    job_ids = [str(i) for i in (job.record.backend_state("slurm") or {}).get("rounds", {}).values()]
    bench.submitted.extend(job_ids)
    if not job.wait(timeout=max(0.0, deadline - time.perf_counter())):
        raise TimeoutError(f"altus job {job.id} not finished after the --timeout")
    out = job.results()
    wall = time.perf_counter() - start
    check_results(out, n, "altus-slurm")
    chunks = job.spec.n_chunks
    return {
        "wall_s": round(wall, 6),
        "job_ids": job_ids,
        "elements": chunks,
        "chunk_size": math.ceil(n / chunks),
        "altus_job": job.id,
    }


def run_submitit(bench: SlurmBench, n: int, deadline: float) -> dict[str, Any]:
    """submitit's ``map_array`` + every job's ``result()``, its own 1 s wait loop."""
    import logging

    import submitit

    logging.getLogger("submitit").setLevel(logging.ERROR)  # no "Bypassing sacct error" lines
    executor = submitit.AutoExecutor(folder=bench.fresh_dir("submitit"), cluster="slurm")
    executor.update_parameters(
        slurm_partition=bench.partition, timeout_min=10, name=f"{JOB_NAME}-submitit"
    )
    watcher = submitit.SlurmJob.watcher
    calls = watcher.num_calls
    start = time.perf_counter()
    jobs = executor.map_array(bench.task, range(n))
    job_ids = sorted({job.job_id.split("_")[0] for job in jobs})
    bench.submitted.extend(job_ids)
    for job in jobs:  # submitit's Job.wait(), deadline added
        while not job.done():
            _deadline_passed(deadline, f"submitit array {job_ids}")
            time.sleep(1)
    out = [job.result() for job in jobs]
    wall = time.perf_counter() - start
    check_results(out, n, "submitit")
    return {
        "wall_s": round(wall, 6),
        "job_ids": job_ids,
        "elements": n,
        "sacct_calls": watcher.num_calls - calls,
    }


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    run: Callable[[SlurmBench, int, float], dict[str, Any]]


CONTENDERS = (
    Contender("sbatch", "sbatch --array, python -c per element", run_sbatch),
    Contender("altus-slurm", 'Knot(backend="slurm").map + results()', run_altus_slurm),
    Contender("submitit", "AutoExecutor.map_array + result()", run_submitit),
)


def slurm_sample(bench: SlurmBench, who: Contender, n: int) -> dict[str, Any]:
    """One run of a contender: its figures, or its error; its jobs cancelled either way.

    After the figure, Slurm is given time (untimed) to finish the run's elements, so
    none of them overlaps the next run, and each element's end state is checked."""
    before = len(bench.submitted)
    deadline = time.perf_counter() + bench.cfg["timeout_s"]
    with QueueWatch() as watch:
        try:
            sample = {"ok": True, **who.run(bench, n, deadline)}
            sample |= settle(bench.submitted[before:])
        except Exception as exc:  # reported, and the other contenders go on
            sample = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
        finally:
            ours = bench.submitted[before:]
            cancel(ours)
    sample["slurm_states"] = {job: final_states(job) for job in ours}
    ended = {s for states in sample["slurm_states"].values() for s in states} & FAILED_STATES
    if sample["ok"] and ended:
        sample |= {"ok": False, "error": f"elements ended {sorted(ended)}"}
    sample["other_jobs"] = watch.others(ours)
    return sample


def settle(job_ids: list[str]) -> dict[str, Any]:
    """Wait until Slurm lists no element of the run as pending, running or completing
    (its results are already in hand): how long that took, and how many were left."""
    start = time.perf_counter()
    left = 0
    while time.perf_counter() - start < SETTLE_TIMEOUT_S:
        counts = [active_elements(job) for job in job_ids]
        left = sum(1 if count is None else count for count in counts)  # None: squeue failed
        if not left:
            break
        time.sleep(POLL_S)
    return {"settle_s": round(time.perf_counter() - start, 3), "active_after_settle": left}


@dataclass
class Outcome:
    contender: Contender
    samples: list[dict[str, Any]] = field(default_factory=list)
    prepared: dict[str, Any] | None = None
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        walls = [s["wall_s"] for s in self.samples if s["ok"]]
        ok = self.error is None and bool(walls)
        last: dict[str, Any] = next((s for s in reversed(self.samples) if s["ok"]), {})
        figures: dict[str, Any] = {
            "ok": ok,
            "label": self.contender.label,
            "error": self.error if self.error or walls else "no sample ran",
            "elements": last.get("elements"),
            "chunk_size": last.get("chunk_size"),
            "prepared": self.prepared,
            "samples": self.samples,
        }
        return figures | (c.summarize(walls) if ok else {})


def run_slurm_section(cfg: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """Warm every contender up (untimed), then ``slurm_repeats`` rotating rounds."""
    chosen = [who for who in CONTENDERS if who.key in cfg["systems"]]
    outcomes = [Outcome(who) for who in chosen]
    root = Path(tempfile.mkdtemp(prefix="altus-scale-out-", dir=cfg["work_dir"]))
    bench = SlurmBench(root, cfg, facts.get("partition"))
    try:
        for outcome in outcomes:
            log(f"  {outcome.contender.key}: warm-up, {WARM_UP_TASKS} tasks ...")
            outcome.prepared = slurm_sample(bench, outcome.contender, WARM_UP_TASKS)
            if not outcome.prepared["ok"]:
                outcome.error = f"unavailable: {outcome.prepared['error']}"
                log(f"  {outcome.contender.key}: {outcome.error}")
        for rep in range(cfg["slurm_repeats"]):
            live = [o for o in outcomes if o.error is None]
            shift = rep % max(1, len(live))
            for outcome in live[shift:] + live[:shift]:
                quiet_wait(cfg)
                measure(bench, outcome, rep)
    finally:
        cancel(bench.submitted)
        facts["leftover_jobs"] = leftover_jobs(bench.submitted)
        shutil.rmtree(root, ignore_errors=True)
    return {o.contender.key: o.figures() for o in outcomes}


def measure(bench: SlurmBench, outcome: Outcome, rep: int) -> None:
    who = outcome.contender
    log(f"  {who.key} #{rep + 1}: {bench.cfg['tasks']:,} tasks ...")
    sample = slurm_sample(bench, who, bench.cfg["tasks"]) | {"rep": rep}
    outcome.samples.append(sample)
    if sample["ok"]:
        log(f"  {who.key} #{rep + 1}: {sample['wall_s']:.2f} s, {sample['elements']} elements")
    else:
        outcome.error = str(sample["error"])
        log(f"  {who.key} #{rep + 1}: FAILED: {outcome.error}")


def leftover_jobs(submitted: list[str]) -> list[str]:
    """Jobs of this run still in squeue at the end (by id, or by this run's job name);
    cancelled once more, and named in the report."""
    left = [j for j in queued_jobs() if j.split("|")[0] in submitted or JOB_NAME in j]
    if left:
        log(f"WARNING: jobs of this run still queued: {left}; cancelling")
        cancel([j.split("|")[0] for j in left])
    return sorted(left)


def quiet_wait(cfg: dict[str, Any]) -> None:
    """With ``--wait-quiet``: idle CPUs, and a queue without other users' jobs."""
    if cfg["wait_quiet_s"] <= 0:
        return
    c.wait_until_quiet(cfg["quiet_cpus"], cfg["wait_quiet_s"], log, window=1.0)
    give_up = time.monotonic() + cfg["wait_quiet_s"]
    while (queued := queued_jobs()) and time.monotonic() < give_up:
        log(f"  other jobs in the Slurm queue: {sorted(queued)[:5]}; waiting ...")
        time.sleep(5)


# -- Dask (in a child process: its threads and clients never touch the Slurm section) ------------


def child_dask(p: dict[str, Any]) -> dict[str, Any]:
    """One LocalCluster; plain client.map and altus's Dask backend, rounds interleaved."""
    import logging

    from distributed import Client, LocalCluster

    import altus

    task = task_function(p["task_seconds"])
    store = tempfile.mkdtemp(prefix="altus-scale-out-dask-", dir=p["work_dir"])
    cluster = LocalCluster(
        n_workers=p["dask_workers"], threads_per_worker=1, processes=True,
        dashboard_address=None, silence_logs=logging.ERROR,
    )  # fmt: skip
    client = Client(cluster)

    def plain(inputs: list[int]) -> tuple[list[Any], Any]:
        return client.gather(client.map(task, inputs, pure=False)), None

    def through_altus(inputs: list[int]) -> tuple[list[Any], Any]:
        job = knot.map(inputs)
        return job.results(), job

    runs = {"dask": plain, "altus-dask": through_altus}
    chosen = [key for key in DASK_SYSTEMS if key in p["systems"]]
    try:
        knot = altus.Knot(
            task, backend="dask", address=cluster.scheduler_address, store="file://" + store,
            name=JOB_NAME,
        )  # fmt: skip
        warm = list(range(4 * p["dask_workers"]))
        for key in chosen:
            check_results(runs[key](warm)[0], len(warm), f"{key} warm-up")
        sizes = {str(n): dask_size(p, n, {k: runs[k] for k in chosen}) for n in p["dask_sizes"]}
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(store, ignore_errors=True)
    return {
        "cluster": f"LocalCluster(n_workers={p['dask_workers']}, threads_per_worker=1, "
        "processes=True)",
        "sizes": sizes,
    }


def dask_size(
    p: dict[str, Any], n: int, runs: dict[str, Callable[[list[int]], tuple[list[Any], Any]]]
) -> dict[str, Any]:
    inputs = list(range(n))
    samples: dict[str, list[float]] = {key: [] for key in runs}
    chunks: list[int] = []
    keys = list(runs)
    for rep in range(p["repeats"]):
        if p["wait_quiet_s"] > 0:
            c.wait_until_quiet(p["quiet_cpus"], p["wait_quiet_s"], lambda _m: None, window=1.0)
        for key in keys[rep % len(keys) :] + keys[: rep % len(keys)]:
            took, (out, job) = c.timed(functools.partial(runs[key], inputs))
            check_results(out, n, key)
            samples[key].append(took)
            if job is not None:
                chunks.append(job.spec.n_chunks)
            del out
            time.sleep(0.5)  # let the scheduler release the finished keys first
    figures = {key: c.summarize(values) for key, values in samples.items()}
    if chunks:
        figures["altus-dask"] |= {"chunks": chunks[-1], "chunk_size": math.ceil(n / chunks[-1])}
    return figures


CHILDREN = {"dask": child_dask}


def child_main(name: str, params_file: str, result_file: str) -> int:
    params = json.loads(Path(params_file).read_text())
    try:
        result = {"ok": True, **CHILDREN[name](params)}
    except Exception as exc:  # reported to the parent, which carries on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}  # fmt: skip
    Path(result_file).write_text(json.dumps(result, default=str))
    sys.stdout.flush()
    os._exit(0)  # not waiting on a client altus keeps for a scheduler that is gone


# -- the report ----------------------------------------------------------------------------------


def ratio(top: dict[str, Any] | None, bottom: dict[str, Any] | None) -> float | None:
    """One figure's median over another's; None where either has none."""
    if not (top and bottom and top.get("median_s") and bottom.get("median_s")):
        return None
    return float(top["median_s"] / bottom["median_s"])


def slurm_table(cfg: dict[str, Any], slurm: dict[str, Any]) -> str:
    rows = []
    for key, fig in slurm.items():
        rate = cfg["tasks"] / fig["median_s"] if fig["ok"] else None
        rows.append([
            key, fig["label"], fig.get("elements") or "", c.fmt_s(fig.get("median_s"), 2),
            c.fmt_s(fig.get("min_s"), 2), c.fmt_s(fig.get("max_s"), 2), c.fmt_rate(rate),
            c.fmt_x(ratio(fig, slurm.get("sbatch"))), _slurm_note(fig),
        ])  # fmt: skip
    headers = ["system", "how", "elements", "median s", "min s", "max s", "tasks/s", "/ sbatch",
               "note"]  # fmt: skip
    return c.table(headers, rows, [False, False, True, True, True, True, True, True, False])


def _slurm_note(fig: dict[str, Any]) -> str:
    if not fig["ok"]:
        return str(fig["error"])[:100]
    samples = [s for s in fig["samples"] if s["ok"]]
    settled = c.median([s["settle_s"] for s in samples])
    after = f"; array out of squeue {settled:.1f} s after the results" if settled >= 0.05 else ""
    if fig.get("chunk_size"):
        return f"{fig['chunk_size']} tasks per element{after}"
    calls = [s["sacct_calls"] for s in samples if "sacct_calls" in s]
    if calls:
        return f"{max(calls)} sacct calls per run, each failed (no accounting){after}"
    return f"Slurm ran {fig['elements'] / fig['median_s']:.1f} elements/s"


def dask_table(dask: dict[str, Any]) -> str:
    labels = {"dask": "client.gather(client.map(...))", "altus-dask": 'Knot(backend="dask")'}
    rows = []
    for size, figures in dask.get("sizes", {}).items():
        for key, fig in figures.items():
            note = f"{fig['chunks']} chunks of {fig['chunk_size']}" if "chunks" in fig else ""
            rows.append([
                f"{int(size):,}", key, labels[key], c.fmt_s(fig["median_s"]),
                c.fmt_s(fig["min_s"]), c.fmt_s(fig["max_s"]),
                c.fmt_rate(int(size) / fig["median_s"]),
                c.fmt_x(ratio(fig, figures.get("dask"))), note,
            ])  # fmt: skip
    headers = ["tasks", "system", "how", "median s", "min s", "max s", "tasks/s", "/ client.map",
               "note"]  # fmt: skip
    return c.table(headers, rows, [True, False, False, True, True, True, True, True, False])


def ratio_target(
    name: str,
    value: float | None,
    limit: float,
    passed: Callable[[float], bool],
    shown: str,
    missing: dict[str, str | None],
) -> dict[str, Any]:
    """PASS/FAIL on ``value``; without one, FAIL where altus had no figure, else N/A.
    ``missing`` maps each figure the target needs to why it has none (None: it has one)."""
    if value is None:
        why = "; ".join(f"{key}: {error}" for key, error in missing.items() if error)
        altus_failed = any(
            key.startswith("altus") and error not in (None, "not selected")
            for key, error in missing.items()
        )
        status, detail = ("FAIL" if altus_failed else "N/A"), f"no figure ({why})"
    else:
        status, detail = ("PASS" if passed(value) else "FAIL"), f"{c.fmt_x(value)} ({shown})"
    return {"name": name, "value": value, "limit": limit, "status": status, "detail": detail}


def _why_not(figures: dict[str, Any], key: str) -> str | None:
    fig = figures.get(key)
    if fig is None:
        return "not selected"
    return None if fig.get("median_s") else str(fig.get("error") or "no figure")


def _slurm_targets(slurm: dict[str, Any]) -> list[dict[str, Any]]:
    altus, raw, sub = (slurm.get(k) or {} for k in ("altus-slurm", "sbatch", "submitit"))
    return [
        ratio_target(
            f"altus on Slurm <= {TARGET_RAW_RATIO:g}x a raw sbatch --array",
            ratio(altus, raw),
            TARGET_RAW_RATIO,
            lambda value: value <= TARGET_RAW_RATIO,
            f"{altus.get('median_s', 0):.2f} s vs {raw.get('median_s', 0):.2f} s",
            {key: _why_not(slurm, key) for key in ("altus-slurm", "sbatch")},
        ),
        ratio_target(
            f"altus on Slurm >= {TARGET_SUBMITIT_SPEEDUP:g}x faster than submitit map_array",
            ratio(sub, altus),
            TARGET_SUBMITIT_SPEEDUP,
            lambda value: value >= TARGET_SUBMITIT_SPEEDUP,
            f"{sub.get('median_s', 0):.2f} s vs {altus.get('median_s', 0):.2f} s",
            {key: _why_not(slurm, key) for key in ("altus-slurm", "submitit")},
        ),
    ]


def _dask_targets(cfg: dict[str, Any], dask: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for n in cfg["dask_sizes"]:
        figures = dask.get("sizes", {}).get(str(n), {})
        altus, plain = figures.get("altus-dask") or {}, figures.get("dask") or {}
        missing = {
            key: None if key in figures else dask.get("error") or "not selected"
            for key in ("altus-dask", "dask")
        }
        found = ratio_target(
            f"altus on Dask <= {TARGET_DASK_RATIO:g}x plain client.map ({n:,} tasks)",
            ratio(altus, plain),
            TARGET_DASK_RATIO,
            lambda value: value <= TARGET_DASK_RATIO,
            f"{altus.get('median_s', 0):.3f} s vs {plain.get('median_s', 0):.3f} s; altus ran "
            f"{altus.get('chunks')} chunks, one Python start each",
            missing,
        )
        if n != cfg["tasks"]:
            found["status"] = "INFO"  # the target is for --tasks; a bigger map is context
        targets.append(found)
    return targets


def build_report(
    cfg: dict[str, Any], machine: dict[str, Any], slurm: dict[str, Any], dask: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    info = machine.get("slurm", {})
    seconds = f", sleeping {cfg['task_seconds']:g} s" if cfg["task_seconds"] else ""
    lines = [
        f"altus scale-out - {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, {info.get('slurm_version', 'no Slurm')}, "
        f"submitit {machine['packages'].get('submitit')}, "
        f"distributed {machine['packages'].get('distributed')}, {machine['date_utc']}",
        f"{cfg['tasks']:,} tasks of short_task (x -> 2x{seconds}); wall = the submitting call to "
        "every result in hand, checked",
        *_notes(cfg, machine, slurm),
    ]
    if slurm:
        lines += [
            "",
            f"Slurm: {info.get('nodes')}, partition {info.get('partition')}; "
            f"{cfg['slurm_repeats']} run(s) each (median), after a {WARM_UP_TASKS}-task warm-up",
            slurm_table(cfg, slurm),
        ]
    if dask:
        lines += ["", f"Dask: {dask.get('cluster', 'LocalCluster')}; median of {cfg['repeats']} "
                  "interleaved runs, after a warm-up"]  # fmt: skip
        lines.append(dask_table(dask) if dask.get("ok") else f"  FAILED: {dask.get('error')}")
    targets = (_slurm_targets(slurm) if slurm else []) + (_dask_targets(cfg, dask) if dask else [])
    lines += ["", "Targets", *(f"  [{t['status']}] {t['name']}: {t['detail']}" for t in targets)]
    return "\n".join(lines), targets


def _notes(cfg: dict[str, Any], machine: dict[str, Any], slurm: dict[str, Any]) -> list[str]:
    notes = c.machine_warnings(machine, cfg["quiet_cpus"])
    for key, fig in slurm.items():
        others = sorted({job for s in fig["samples"] for job in s.get("other_jobs", ())})
        if others:
            notes.append(
                f"WARNING: other jobs ran on the Slurm cluster during {key}'s run(s): "
                f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}"
            )
    for key, fig in slurm.items():
        for sample in fig["samples"]:
            if sample.get("active_after_settle"):
                notes.append(
                    f"WARNING: {key} run {sample['rep'] + 1}: {sample['active_after_settle']} "
                    f"element(s) still in squeue {SETTLE_TIMEOUT_S} s after every result was in "
                    "hand (cancelled)"
                )
    for job in machine.get("slurm", {}).get("leftover_jobs", ()):
        notes.append(f"WARNING: job of this run left in squeue at the end (cancelled now): {job}")
    return notes


def summary(cfg: dict[str, Any], slurm: dict[str, Any], dask: dict[str, Any]) -> dict[str, Any]:
    altus, raw, sub = (slurm.get(k) for k in ("altus-slurm", "sbatch", "submitit"))
    sizes = dask.get("sizes", {})
    return {
        "slurm_medians_s": {k: f.get("median_s") for k, f in slurm.items()},
        "slurm_elements": {k: f.get("elements") for k, f in slurm.items()},
        "altus_slurm_over_sbatch": ratio(altus, raw),
        "submitit_over_altus_slurm": ratio(sub, altus),
        "dask_medians_s": {
            size: {k: f["median_s"] for k, f in figures.items()} for size, figures in sizes.items()
        },
        "altus_dask_over_dask": {
            size: ratio(figures.get("altus-dask"), figures.get("dask"))
            for size, figures in sizes.items()
        },
    }


# -- command line --------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="altus on Slurm vs sbatch --array and submitit; altus on Dask vs client.map."
    )
    parser.add_argument("--quick", action="store_true", help="100 tasks (1,000 on Dask), 2 repeats")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per map (1000; 100 quick)")
    parser.add_argument(
        "--dask-big-tasks",
        type=int,
        default=None,
        help="a second, larger Dask map, INFO only (10000; 1000 quick; 0: none)",
    )
    parser.add_argument("--task-seconds", type=float, default=0.0, help="sleep in each task (0)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="Dask runs per figure (3; 2 quick)"
    )
    parser.add_argument("--slurm-repeats", type=int, default=1, help="Slurm runs per figure (1)")
    parser.add_argument("--dask-workers", type=int, default=2, help="LocalCluster workers (2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds for one Slurm run, and for the whole Dask section (900)",
    )
    parser.add_argument(
        "--slurm-state-dir", default=None, help="scripts/slurm-cluster --state-dir (its default)"
    )
    parser.add_argument("--work-dir", default=None, help="where the run's temp folders go")
    c.add_quiet_and_strict_options(parser, "before the run and each Slurm or Dask run,")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params-file", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    tasks = args.tasks or (100 if args.quick else 1000)
    big = args.dask_big_tasks if args.dask_big_tasks is not None else 10 * tasks
    return {
        "quick": args.quick,
        "tasks": tasks,
        "dask_sizes": [tasks] + ([big] if big and big != tasks else []),
        "task_seconds": args.task_seconds,
        "repeats": args.repeats or (2 if args.quick else 3),
        "slurm_repeats": args.slurm_repeats,
        "dask_workers": args.dask_workers,
        "systems": systems,
        "timeout_s": args.timeout,
        "slurm_state_dir": args.slurm_state_dir,
        "work_dir": args.work_dir,
        "wait_quiet_s": args.wait_quiet,
        "quiet_cpus": args.quiet_cpus,
    }


def run_dask_section(cfg: dict[str, Any]) -> dict[str, Any]:
    log(f"dask: {', '.join(str(n) for n in cfg['dask_sizes'])} tasks ...")
    return c.run_child(Path(__file__).resolve(), "dask", cfg, cfg["timeout_s"], log)


def run_slurm(cfg: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """The Slurm section, on the cluster (started here if need be); a cluster that cannot
    be used leaves every Slurm contender with the reason."""
    facts: dict[str, Any] = {}
    machine["slurm"] = facts
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(slurm_cluster(cfg["slurm_state_dir"], facts))
            facts |= cluster_facts()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            log(f"slurm: unavailable: {exc}")
            chosen = [who for who in CONTENDERS if who.key in cfg["systems"]]
            return {who.key: Outcome(who, error=f"unavailable: {exc}").figures() for who in chosen}
        log(f"slurm: {facts['nodes']}, partition {facts['partition']}")
        return run_slurm_section(cfg, facts)


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.params_file, args.result_file)
    cfg = settings(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    quiet = c.wait_until_quiet(cfg["quiet_cpus"], cfg["wait_quiet_s"], log)
    machine = c.machine_info(PACKAGES, cfg["work_dir"] or tempfile.gettempdir()) | quiet
    log(f"scale_out: {cfg['tasks']:,} tasks, systems {','.join(cfg['systems'])}")
    started = time.perf_counter()
    dask: dict[str, Any] = {}
    if set(DASK_SYSTEMS) & set(cfg["systems"]):
        dask = run_dask_section(cfg)
    slurm: dict[str, Any] = {}
    if set(SLURM_SYSTEMS) & set(cfg["systems"]):
        slurm = run_slurm(cfg, machine)
    text, targets = build_report(cfg, machine, slurm, dask)
    print(text, flush=True)
    result = {"config": cfg, "machine": machine, "targets": targets,
              "summary": summary(cfg, slurm, dask)}  # fmt: skip
    figures = {**result, "slurm": slurm, "dask": dask, "table": text}
    c.save_result(args.out, "scale_out", figures, started, log)
    return c.exit_status(targets, args.strict)


if __name__ == "__main__":
    sys.exit(main())
