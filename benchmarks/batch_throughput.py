"""Batch throughput: altus's durable local ``map`` side by side with its peers.

One run on one machine measures, with the same number of workers for every system:

1. **No-op map** (``noop(x) -> x``, ``--tasks`` of them, 10,000 by default): wall time and
   tasks/s for altus (``Knot.map`` + ``Job.results`` through a real ``file://`` store),
   ``concurrent.futures.ProcessPoolExecutor`` with the chunk size altus chose (and with
   its default ``chunksize=1``, for context), Dask ``LocalCluster`` + ``client.map`` +
   ``client.gather``, and Lithops in localhost mode.
2. **CPU-bound map**: ``8 x workers`` tasks, each burning ``--cpu-task-seconds`` of
   pure-Python CPU; parallel efficiency = serial time / (wall x workers).
3. **Client memory**: the RSS high-water mark of the submitting process for a
   ``--mem-tasks`` (100,000) no-op map through altus and through the executor.
4. **Cold start** of each system: creating the executor / cluster / Knot to the first
   result, in a fresh process (imports timed separately).

Pools are started and warmed up with one tiny map before any timed run; every timed
figure is the median of ``--repeats`` (3) runs, except the millisecond-long no-op maps of
altus and ProcessPoolExecutor, which take ``--noop-repeats`` (15) because a single
background hiccup is as long as one of them. Each system runs in its own fresh child
process, so they never share threads, imports or caches, and a hang costs one section.
Prints a table with PASS/FAIL for the targets and saves every figure as JSON.

    python benchmarks/batch_throughput.py            # full run, a few minutes on 2 cores
    python benchmarks/batch_throughput.py --quick    # smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402

DEFAULT_OUT = HERE / "results" / "batch_throughput.json"
PACKAGES = ("altus", "cloudpickle", "dask", "distributed", "lithops", "psutil", "tornado")

TARGET_DASK_RATIO = 20.0  # altus tasks/s >= 20x Dask's on no-op tasks
TARGET_PPE_RATIO = 3.0  # altus wall <= 3x ProcessPoolExecutor's with the same chunking
TARGET_EFFICIENCY = 0.90  # altus parallel efficiency on the CPU-bound set


# -- the tasks (module level in __main__, so every system ships them the same way) -----------


def noop(x: Any) -> Any:
    return x


def burn(n: int) -> int:
    """Pure-Python CPU work: ``n`` loop iterations, no allocation to speak of."""
    acc = 0
    for i in range(n):
        acc ^= i * i
    return acc


def burn_timed(n: int) -> tuple[int, float]:
    """``burn(n)`` and the CPU seconds its thread spent on it (measured in the worker)."""
    start = time.thread_time()
    acc = burn(n)
    return acc, time.thread_time() - start


def _cpu_section(p: dict[str, Any], parallel: Any, what: str) -> dict[str, Any]:
    """Timed CPU-bound runs, each right after the same tasks run serially in this process.

    This VM's CPU speed drifts by tens of percent over minutes, so a serial time taken
    elsewhere would measure the drift, not the system: each parallel run is paired with a
    serial run taken seconds before it. ``parallel()`` returns ``burn_timed`` results, whose
    CPU seconds give a second, drift-proof figure: utilization = task CPU / (wall x workers).
    """
    n, m, workers = p["burn_iterations"], p["cpu_tasks"], p["workers"]
    walls, serials, effs, utils = [], [], [], []
    for _ in _reps(p):
        serial, _ = c.timed(lambda: [burn(n) for _ in range(m)])
        wall, out = c.timed(parallel)
        _check([acc for acc, _cpu in out], [p["burn_expected"]] * m, what)
        walls.append(wall)
        serials.append(serial)
        effs.append(serial / (wall * workers))
        utils.append(sum(cpu for _acc, cpu in out) / (wall * workers))
    return {
        **c.summarize(walls),
        "n_tasks": m,
        "serial_samples_s": [round(x, 6) for x in serials],
        "serial_median_s": round(c.median(serials), 6),
        "efficiency_samples": [round(x, 4) for x in effs],
        "efficiency": round(c.median(effs), 4),
        "utilization_samples": [round(x, 4) for x in utils],
        "utilization": round(c.median(utils), 4),
    }


# -- children: one per system and measurement --------------------------------------------------


def _warmup_inputs(workers: int) -> list[int]:
    """Enough tiny tasks that every worker of every system gets at least one."""
    return list(range(4 * workers))


_SETTLE: dict[str, Any] = {"reps": 0, "waited_s": 0.0, "not_quiet": 0}


def _reps(p: dict[str, Any], count: int | None = None) -> Iterator[int]:
    """``range(repeats)``; with ``--wait-quiet``, each run first waits for idle CPUs.

    The pools are idle between runs, so the CPUs busy then are other processes'.
    """

    def gen() -> Iterator[int]:
        for index in range(p["repeats"] if count is None else count):
            if p.get("wait_quiet_s", 0) > 0:
                state = c.wait_until_quiet(
                    p["quiet_cpus"], p["wait_quiet_s"], lambda _m: None, window=1.0
                )
                _SETTLE["waited_s"] = round(_SETTLE["waited_s"] + state["waited_s"], 1)
                _SETTLE["not_quiet"] += not state["quiet"]
            _SETTLE["reps"] += 1
            yield index

    return gen()


def _check(out: list[Any], expected: list[Any], what: str) -> None:
    if len(out) != len(expected) or out != expected:
        bad = next((i for i, (a, b) in enumerate(zip(out, expected, strict=False)) if a != b), None)
        raise AssertionError(
            f"{what}: wrong results (got {len(out)} for {len(expected)} inputs; "
            f"first mismatch at index {bad})"
        )


def child_serial(p: dict[str, Any]) -> dict[str, Any]:
    """Calibrate ``burn`` to ``cpu_task_s`` and time the CPU-bound set run serially here."""
    target = p["cpu_task_s"]
    n = 200_000
    for _ in range(3):  # converge on the iteration count that takes ``target`` seconds
        took = min(c.timed(lambda n=n: burn(n))[0] for _ in range(3))
        n = max(1000, int(n * target / took))
    one_task = min(c.timed(lambda: burn(n))[0] for _ in range(3))
    inputs = [n] * p["cpu_tasks"]
    samples = []
    expected = burn(n)
    for _ in _reps(p):
        took, out = c.timed(lambda: [burn(x) for x in inputs])
        _check(out, [expected] * len(inputs), "serial")
        samples.append(took)
    # The machine's own ceiling: the same tasks split evenly over ``workers`` bare forked
    # processes, no pool, no scheduling, no results sent back. Two vCPUs that are hyperthreads
    # of one core, or a throttled VM, show up here as well below 100%.
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    workers = p["workers"]
    shares = [len(inputs) // workers + (i < len(inputs) % workers) for i in range(workers)]
    walls, serials, effs = [], [], []
    for _ in _reps(p):
        serial, _ = c.timed(lambda: [burn(x) for x in inputs])
        procs = [fork.Process(target=_burn_share, args=(n, k)) for k in shares]
        start = time.perf_counter()
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        walls.append(time.perf_counter() - start)
        serials.append(serial)
        effs.append(serial / (walls[-1] * workers))
        if any(proc.exitcode != 0 for proc in procs):
            raise RuntimeError("a bare burn process failed")
    return {
        "burn_iterations": n,
        "burn_expected": expected,
        "one_task_s": round(one_task, 6),
        "n_tasks": len(inputs),
        "serial": c.summarize(samples),
        "bare_processes": {
            **c.summarize(walls),
            "workers": workers,
            "tasks_each": shares,
            "serial_samples_s": [round(x, 6) for x in serials],
            "efficiency_samples": [round(x, 4) for x in effs],
            "efficiency": round(c.median(effs), 4),
        },
    }


def _burn_share(n: int, count: int) -> None:
    for _ in range(count):
        burn(n)


def _altus_chunksize(job: Any) -> int | None:
    spec = getattr(job, "spec", None)
    n_tasks, n_chunks = getattr(spec, "n_tasks", None), getattr(spec, "n_chunks", None)
    if not n_tasks or not n_chunks:
        return None
    return math.ceil(n_tasks / n_chunks)


def _tree_bytes(root: str) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _altus_store(p: dict[str, Any]) -> tuple[str, str]:
    path = tempfile.mkdtemp(prefix="altus-bench-", dir=p.get("store_root"))
    return path, "file://" + path


def _altus_run(knot: Any, inputs: list[Any]) -> tuple[Any, list[Any]]:
    """One timed altus map: submit, then every result in input order."""
    job = knot.map(inputs)
    return job, job.results()


def child_altus(p: dict[str, Any]) -> dict[str, Any]:
    """altus: Knot.map + Job.results through a real file:// store, noop then CPU-bound."""
    import altus

    workers, n = p["workers"], p["tasks"]
    store_dir, store = _altus_store(p)
    res: dict[str, Any] = {"store": store, "store_fs_type": c.fs_type(store_dir)}
    try:
        start = time.perf_counter()
        knot = altus.Knot(noop, workers=workers, store=store)
        _check(knot.map([0]).results(), [0], "altus first map")
        res["first_result_s"] = round(time.perf_counter() - start, 6)
        warm = _warmup_inputs(workers)
        _check(knot.map(warm).results(), warm, "altus warm-up")

        inputs = list(range(n))
        before = _tree_bytes(store_dir)
        samples, chunks = [], set()
        for _ in _reps(p, p["noop_repeats"]):
            took, (job, out) = c.timed(lambda: _altus_run(knot, inputs))
            _check(out, inputs, "altus noop")
            samples.append(took)
            chunks.add((_altus_chunksize(job), getattr(job.spec, "n_chunks", None)))
            del out
        res["noop"] = {**c.summarize(samples), "n_tasks": n}
        (chunk, n_chunks), *_ = sorted(chunks, key=str)
        res["noop"]["chunksize"] = chunk
        res["noop"]["n_chunks"] = n_chunks
        res["noop"]["chunksizes_seen"] = sorted({ch for ch, _ in chunks}, key=str)
        res["noop"]["store_bytes_per_task"] = round(
            (_tree_bytes(store_dir) - before) / (n * p["noop_repeats"]), 1
        )

        bknot = altus.Knot(burn_timed, workers=workers, store=store)
        out = bknot.map([1000] * len(warm)).results()
        _check([acc for acc, _ in out], [burn(1000)] * len(warm), "altus warm-up")
        cpu_inputs = [p["burn_iterations"]] * p["cpu_tasks"]
        jobs: list[Any] = []

        def parallel() -> list[Any]:
            job, results = _altus_run(bknot, cpu_inputs)
            jobs.append(job)
            return results

        res["cpu"] = _cpu_section(p, parallel, "altus cpu")
        res["cpu"]["chunksize"] = _altus_chunksize(jobs[-1])
        res["cpu"]["n_chunks"] = getattr(jobs[-1].spec, "n_chunks", None)
    finally:
        if not p.get("keep_store"):
            shutil.rmtree(store_dir, ignore_errors=True)
    return res


def child_ppe(p: dict[str, Any]) -> dict[str, Any]:
    """ProcessPoolExecutor with altus's chunk sizes (and chunksize=1 for context)."""
    from concurrent.futures import ProcessPoolExecutor

    workers, n = p["workers"], p["tasks"]
    res: dict[str, Any] = {"start_method": None}
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as ex:
        _check(list(ex.map(noop, [0])), [0], "ppe first map")
        res["first_result_s"] = round(time.perf_counter() - start, 6)
        res["start_method"] = ex._mp_context.get_start_method()
        warm = _warmup_inputs(workers)
        _check(list(ex.map(noop, warm)), warm, "ppe warm-up")

        inputs = list(range(n))
        for label, chunk, count in (
            ("noop", p["noop_chunksize"], p["noop_repeats"]),
            ("noop_chunk1", 1, None),
        ):
            samples = []
            for _ in _reps(p, count):
                took, out = c.timed(lambda chunk=chunk: list(ex.map(noop, inputs, chunksize=chunk)))
                _check(out, inputs, f"ppe {label}")
                samples.append(took)
                del out
            res[label] = {**c.summarize(samples), "n_tasks": n, "chunksize": chunk}

        cpu_inputs = [p["burn_iterations"]] * p["cpu_tasks"]
        res["cpu"] = _cpu_section(
            p,
            lambda: list(ex.map(burn_timed, cpu_inputs, chunksize=p["cpu_chunksize"])),
            "ppe cpu",
        )
        res["cpu"]["chunksize"] = p["cpu_chunksize"]
    return res


def _dask_cluster(workers: int) -> tuple[Any, Any]:
    import logging

    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return cluster, Client(cluster)


def child_dask(p: dict[str, Any]) -> dict[str, Any]:
    """Dask LocalCluster (one single-threaded worker process per worker): client.map + gather."""
    workers, n = p["workers"], p["tasks"]
    res: dict[str, Any] = {
        "cluster": "LocalCluster(processes=True, threads_per_worker=1)",
        "map": "client.map(f, inputs, pure=False) + client.gather",
    }
    start = time.perf_counter()
    cluster, client = _dask_cluster(workers)
    try:
        _check(client.gather(client.map(noop, [0], pure=False)), [0], "dask first map")
        res["first_result_s"] = round(time.perf_counter() - start, 6)
        warm = _warmup_inputs(workers)
        _check(client.gather(client.map(noop, warm, pure=False)), warm, "dask warm-up")

        inputs = list(range(n))
        samples = []
        for _ in _reps(p):
            took, out = c.timed(lambda: client.gather(client.map(noop, inputs, pure=False)))
            _check(out, inputs, "dask noop")
            samples.append(took)
            del out
            time.sleep(0.5)  # let the scheduler release the finished keys before the next run
        res["noop"] = {**c.summarize(samples), "n_tasks": n, "chunksize": 1}

        cpu_inputs = [p["burn_iterations"]] * p["cpu_tasks"]
        res["cpu"] = _cpu_section(
            p,
            lambda: client.gather(client.map(burn_timed, cpu_inputs, pure=False)),
            "dask cpu",
        )
        res["cpu"]["chunksize"] = 1
    finally:
        client.close()
        cluster.close()
    return res


def _lithops_executor(workers: int, options: dict[str, Any]) -> Any:
    import lithops

    return lithops.FunctionExecutor(
        backend="localhost",
        storage="localhost",
        worker_processes=workers,
        log_level=None,
        **options,
    )


def _lithops_run(fexec: Any, inputs: list[Any], chunk: int | None, limit: float) -> list[Any]:
    """One Lithops map and its results; a map that does not finish in ``limit`` s is an error."""
    futures = fexec.map(noop, inputs, chunksize=chunk)
    out = fexec.get_result(futures, timeout=max(1, int(limit)), show_progressbar=False)
    if len(out) != len(inputs):
        raise TimeoutError(
            f"Lithops map of {len(inputs)} tasks (chunksize={chunk}) returned only {len(out)} "
            f"results within {limit:.0f} s: it hung"
        )
    return list(out)


def child_lithops(p: dict[str, Any]) -> dict[str, Any]:
    """Lithops localhost: probe a small map, then run the full one if it fits the budget."""
    try:
        import lithops
    except Exception as exc:  # any import failure is a finding, not a crash
        return {"ok": False, "available": False, "error": f"import lithops failed: {exc!r}"}

    workers, n, repeats = p["workers"], p["tasks"], p["repeats"]
    options = p["lithops_options"]
    budget = p["lithops_budget_s"]
    res: dict[str, Any] = {
        "available": True,
        "version": lithops.__version__,
        "executor": "FunctionExecutor(backend='localhost', storage='localhost', "
        f"worker_processes={workers}" + "".join(f", {k}={v!r}" for k, v in options.items()) + ")",
    }
    start = time.perf_counter()
    fexec = _lithops_executor(workers, options)
    try:
        _check(_lithops_run(fexec, [0], None, 120), [0], "lithops first map")
        res["first_result_s"] = round(time.perf_counter() - start, 6)
        warm = _warmup_inputs(workers)
        _check(_lithops_run(fexec, warm, None, 120), warm, "lithops warm-up")

        chunk = p["noop_chunksize"]
        # two probes, k and 2k tasks, separate the per-job cost from the per-task cost
        probe_n = max(1, min(n // 2, p["lithops_probe_tasks"]))
        walls = []
        for size in (probe_n, 2 * probe_n):
            probe_inputs = list(range(size))
            took, out = c.timed(
                lambda probe_inputs=probe_inputs, size=size: _lithops_run(
                    fexec, probe_inputs, min(chunk, size), 120 + size
                )
            )
            _check(out, probe_inputs, "lithops probe")
            walls.append(took)
        per_task = (walls[1] - walls[0]) / probe_n
        if per_task <= 0:  # noise: fall back to the plain average of the larger probe
            per_task = walls[1] / (2 * probe_n)
        per_job = max(0.0, walls[0] - per_task * probe_n)
        estimate = per_job + per_task * n
        res["probe"] = {
            "n_tasks": [probe_n, 2 * probe_n],
            "wall_s": [round(w, 6) for w in walls],
            "per_task_s": round(per_task, 6),
            "per_job_s": round(per_job, 6),
            "estimated_full_s": round(estimate, 3),
        }
        if estimate > budget:
            res["skipped_full"] = (
                f"not run at {n} tasks: probes of {probe_n} and {2 * probe_n} tasks took "
                f"{walls[0]:.2f} s and {walls[1]:.2f} s, so one {n}-task run would take about "
                f"{estimate:.0f} s, over the --lithops-budget of {budget:.0f} s"
            )
            return res
        runs = max(1, min(repeats, int(budget // max(estimate, 1e-9))))
        res["repeats_run"] = runs
        if runs < repeats:
            res["repeats_note"] = (
                f"{runs} run(s) instead of {repeats}: about {estimate:.0f} s each, "
                f"budget {budget:.0f} s"
            )
        inputs = list(range(n))
        samples = []
        for _ in _reps(p, runs):
            took, out = c.timed(lambda: _lithops_run(fexec, inputs, chunk, 120 + 3 * estimate))
            _check(out, inputs, "lithops noop")
            samples.append(took)
            del out
        res["noop"] = {**c.summarize(samples), "n_tasks": n, "chunksize": chunk}
    finally:
        with contextlib.suppress(Exception):
            fexec.clean()
    return res


def child_cold(p: dict[str, Any]) -> dict[str, Any]:
    """Cold start in this fresh process: import, then create the pool to the first result."""
    system, workers = p["system"], p["workers"]
    if system == "altus":
        took_import, altus = c.timed(lambda: __import__("altus"))
        store_dir, store = _altus_store(p)
        try:
            took, out = c.timed(
                lambda: altus.Knot(noop, workers=workers, store=store).map([0]).results()
            )
        finally:
            shutil.rmtree(store_dir, ignore_errors=True)
    elif system == "ppe":
        import concurrent.futures

        took_import = 0.0
        box: list[Any] = []

        def first() -> list[Any]:
            box.append(concurrent.futures.ProcessPoolExecutor(max_workers=workers))
            return list(box[0].map(noop, [0]))

        took, out = c.timed(first)
        box[0].shutdown()
    elif system == "dask":
        took_import, _ = c.timed(lambda: __import__("dask.distributed"))
        holder: list[Any] = []

        def first() -> list[Any]:
            holder.extend(_dask_cluster(workers))
            return holder[1].gather(holder[1].map(noop, [0], pure=False))

        took, out = c.timed(first)
        holder[1].close()
        holder[0].close()
    elif system == "lithops":
        took_import, _ = c.timed(lambda: __import__("lithops"))
        held: list[Any] = []

        def first() -> list[Any]:
            held.append(_lithops_executor(workers, p["lithops_options"]))
            return held[0].get_result(held[0].map(noop, [0]))

        took, out = c.timed(first)
        with contextlib.suppress(Exception):
            held[0].clean()
    else:
        raise ValueError(f"unknown system {system!r}")
    _check(list(out), [0], f"{system} cold start")
    return {"system": system, "import_s": round(took_import, 6), "cold_start_s": round(took, 6)}


def child_mem(p: dict[str, Any]) -> dict[str, Any]:
    """RSS high-water mark of this (submitting) process for one big no-op map."""
    system, workers, n = p["system"], p["workers"], p["mem_tasks"]
    cleanup: list[Any] = []
    if system == "altus":
        import altus

        store_dir, store = _altus_store(p)
        cleanup.append(lambda: shutil.rmtree(store_dir, ignore_errors=True))
        knot = altus.Knot(noop, workers=workers, store=store)

        def run(inputs: list[int]) -> tuple[list[Any], int | None]:
            job = knot.map(inputs)
            return job.results(), _altus_chunksize(job)
    elif system == "ppe":
        from concurrent.futures import ProcessPoolExecutor

        ex = ProcessPoolExecutor(max_workers=workers)
        cleanup.append(ex.shutdown)
        chunk = p["mem_chunksize"]

        def run(inputs: list[int]) -> tuple[list[Any], int | None]:
            return list(ex.map(noop, inputs, chunksize=chunk)), chunk
    else:
        raise ValueError(f"unknown system {system!r}")

    try:
        warm = _warmup_inputs(workers)
        _check(run(warm)[0], warm, f"{system} warm-up")
        inputs = list(range(n))
        gc.collect()
        rss_before = c.rss_bytes()
        maxrss_before = c.maxrss_bytes()
        hwm_reset = c.reset_hwm()
        with c.PeakSampler() as sampler:
            took, (out, chunk) = c.timed(lambda: run(inputs))
        maxrss_after = c.maxrss_bytes()
        hwm_after = c.hwm_bytes()
        _check(out, inputs, f"{system} memory map")
        del out
    finally:
        for step in cleanup:
            step()
    # The peak while the map ran: VmHWM after resetting it is exact; without the reset,
    # ru_maxrss may still hold an earlier (import-time) peak, so it is only an upper bound.
    peak = hwm_after if hwm_reset and hwm_after else maxrss_after
    return {
        "system": system,
        "n_tasks": n,
        "chunksize": chunk,
        "wall_s": round(took, 6),
        "rss_before_bytes": rss_before,
        "ru_maxrss_before_bytes": maxrss_before,
        "ru_maxrss_after_bytes": maxrss_after,
        "hwm_reset": hwm_reset,
        "vmhwm_after_bytes": hwm_after,
        "sampled_peak_bytes": sampler.peak,
        "sampler_samples": sampler.samples,
        "peak_bytes": peak,
        "growth_bytes": None if rss_before is None else max(0, peak - rss_before),
    }


CHILDREN = {
    "serial": child_serial,
    "altus": child_altus,
    "ppe": child_ppe,
    "dask": child_dask,
    "lithops": child_lithops,
    "cold": child_cold,
    "mem": child_mem,
}


def child_main(name: str, params_file: str, result_file: str) -> int:
    import faulthandler

    params = json.loads(Path(params_file).read_text())
    # a hang leaves every thread's stack in the output the parent keeps
    faulthandler.dump_traceback_later(max(5.0, params["child_timeout_s"] - 10), exit=False)
    try:
        result = CHILDREN[name](params)
        if params.get("wait_quiet_s", 0) > 0 and _SETTLE["reps"]:
            result["settle"] = dict(_SETTLE)
    except Exception as exc:  # reported to the parent, which carries on
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    Path(result_file).write_text(json.dumps(result, default=str))
    sys.stdout.flush()
    # exit without waiting on pools a library left behind (e.g. an atexit join)
    os._exit(0)


# -- the parent: run every child, then report ----------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="altus vs ProcessPoolExecutor, Dask and Lithops: local batch throughput."
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="no-op tasks per map (default 10000; 1000 with --quick)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="workers for every system (default os.cpu_count())",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes for a smoke run (well under a minute)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument(
        "--noop-repeats",
        type=int,
        default=15,
        help="timed runs of the no-op map through altus and ProcessPoolExecutor with "
        "altus's chunking (median; each takes milliseconds)",
    )
    parser.add_argument(
        "--cpu-tasks",
        type=int,
        default=None,
        help="CPU-bound tasks (default 8 x workers = 2 x cpus x 4)",
    )
    parser.add_argument(
        "--cpu-task-seconds",
        type=float,
        default=None,
        help="CPU seconds per CPU-bound task (default 0.25; 0.05 with --quick)",
    )
    parser.add_argument(
        "--mem-tasks",
        type=int,
        default=None,
        help="no-op tasks for the client-memory map (default 100000; 10000 quick)",
    )
    parser.add_argument(
        "--systems",
        default="altus,ppe,dask,lithops",
        help="comma-separated subset of altus,ppe,dask,lithops",
    )
    parser.add_argument(
        "--lithops-budget",
        type=float,
        default=None,
        help="seconds the Lithops full-size runs may take in all "
        "(default 300; 60 with --quick); fewer repeats or a probe-only "
        "estimate beyond it",
    )
    parser.add_argument(
        "--store-root",
        default=None,
        help="folder for altus's temporary file:// stores (default: the temp dir)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds before one section's child process (and everything it "
        "started) is killed; Lithops sections get --lithops-budget on top",
    )
    c.add_quiet_and_strict_options(parser, "first")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params-file", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    workers = args.workers or os.cpu_count() or 1
    quick = args.quick
    return {
        "quick": quick,
        "workers": workers,
        "tasks": args.tasks or (1000 if quick else 10_000),
        "repeats": args.repeats,
        "noop_repeats": args.noop_repeats,
        "cpu_tasks": args.cpu_tasks or 8 * workers,
        "cpu_task_s": args.cpu_task_seconds or (0.05 if quick else 0.25),
        "mem_tasks": args.mem_tasks or (10_000 if quick else 100_000),
        "systems": [s.strip() for s in args.systems.split(",") if s.strip()],
        "lithops_budget_s": args.lithops_budget or (60.0 if quick else 300.0),
        "lithops_probe_tasks": 100,
        "lithops_default_probe_tasks": 10 if quick else 20,
        "store_root": args.store_root,
        "timeout_s": args.timeout,
        "wait_quiet_s": args.wait_quiet,
        "quiet_cpus": args.quiet_cpus,
    }


def run_all(cfg: dict[str, Any]) -> dict[str, Any]:
    script = Path(__file__).resolve()
    systems = cfg["systems"]
    timeout = cfg["timeout_s"]
    sections: dict[str, Any] = {}

    def quiet() -> dict[str, Any] | None:
        if cfg["wait_quiet_s"] <= 0:
            return None
        return c.wait_until_quiet(cfg["quiet_cpus"], cfg["wait_quiet_s"], log)

    def child(name: str, kind: str, **extra: Any) -> dict[str, Any]:
        before = quiet()
        log(f"- {name} ...")
        limit = timeout + (cfg["lithops_budget_s"] if kind == "lithops" else 0)
        out = c.run_child(script, kind, {**cfg, **extra}, limit, log)
        if before is not None:
            out["quiet_before"] = before
        sections[name] = out
        return out

    serial = child("serial", "serial")
    if not serial.get("ok"):
        raise SystemExit(
            f"the serial calibration failed: {serial.get('error')}\n{serial.get('output_tail', '')}"
        )
    burn_args = {
        "burn_iterations": serial["burn_iterations"],
        "burn_expected": serial["burn_expected"],
    }

    # altus first: the peers reuse the chunk sizes it chose
    chunks = {"noop": None, "cpu": None, "mem": None}
    if "altus" in systems:
        res = child("altus", "altus", **burn_args)
        if res.get("ok"):
            chunks["noop"] = res["noop"]["chunksize"]
            chunks["cpu"] = res["cpu"]["chunksize"]
        mem = child("mem_altus", "mem", system="altus")
        if mem.get("ok"):
            chunks["mem"] = mem["chunksize"]
    fallback = {
        "noop": math.ceil(cfg["tasks"] / (4 * cfg["workers"])),
        "cpu": math.ceil(cfg["cpu_tasks"] / (4 * cfg["workers"])),
        "mem": math.ceil(cfg["mem_tasks"] / (4 * cfg["workers"])),
    }
    chunk_source = {
        k: "altus" if v else "fallback ceil(n / (4 x workers))" for k, v in chunks.items()
    }
    chunks = {k: v or fallback[k] for k, v in chunks.items()}
    sections["chunksizes"] = {"values": chunks, "source": chunk_source}

    if "ppe" in systems:
        child("ppe", "ppe", noop_chunksize=chunks["noop"], cpu_chunksize=chunks["cpu"], **burn_args)
        child("mem_ppe", "mem", system="ppe", mem_chunksize=chunks["mem"])
    if "dask" in systems:
        child("dask", "dask", **burn_args)
    lithops_main = {"version": 1}
    if "lithops" in systems:
        # Lithops' default localhost runner (v2) starts one Python process per task: probe it
        # and extrapolate; its batch runner (localhost version 1) runs the full-size map.
        child(
            "lithops_default",
            "lithops",
            lithops_options={},
            lithops_probe_tasks=cfg["lithops_default_probe_tasks"],
            lithops_budget_s=cfg["lithops_budget_s"],
            noop_chunksize=chunks["noop"],
        )
        child("lithops", "lithops", lithops_options=lithops_main, noop_chunksize=chunks["noop"])

    colds = [(s, s, {}) for s in systems if s != "lithops"]
    if "lithops" in systems:
        colds += [
            ("lithops", "lithops", {"lithops_options": lithops_main}),
            ("lithops_default", "lithops", {"lithops_options": {}}),
        ]
    for name, system, opts in colds:
        before = quiet()
        samples, imports, errors = [], [], []
        for _ in range(cfg["repeats"]):
            res = c.run_child(script, "cold", {**cfg, "system": system, **opts}, timeout)
            if res.get("ok"):
                samples.append(res["cold_start_s"])
                imports.append(res["import_s"])
            else:
                errors.append(res)
        sections[f"cold_{name}"] = {
            "ok": bool(samples),
            **(c.summarize(samples) if samples else {}),
            **({"import_median_s": round(c.median(imports), 6)} if imports else {}),
            **({"errors": errors} if errors else {}),
            **({"quiet_before": before} if before else {}),
        }
        log(
            f"- cold start {name}: "
            + (f"{c.median(samples):.3f} s" if samples else f"FAILED {errors[0].get('error')}")
        )
    return sections


# -- report -----------------------------------------------------------------------------------------


def _get(sections: dict[str, Any], *path: str) -> Any:
    node: Any = sections
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ok(sections: dict[str, Any], name: str) -> bool:
    return bool(_get(sections, name, "ok"))


def _why(sections: dict[str, Any], name: str) -> str:
    section = sections.get(name)
    if section is None:
        return "not selected"
    return str(section.get("skipped_full") or section.get("error") or "no figure")


def build_report(
    cfg: dict[str, Any], machine: dict[str, Any], sections: dict[str, Any]
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    n, workers, reps = cfg["tasks"], cfg["workers"], cfg["repeats"]
    lines: list[str] = []
    summary: dict[str, Any] = {"noop": {}, "cpu": {}, "memory": {}, "cold_start": {}}
    altus_noop = _get(sections, "altus", "noop", "median_s") if _ok(sections, "altus") else None

    lines.append(
        f"altus batch throughput - {workers} workers for every system on "
        f"{machine['cpu_count']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
        f"{machine['date_utc']}"
    )
    busy = machine.get("busy_cpus_at_start")
    if busy is not None and busy > cfg["quiet_cpus"]:
        lines.append(
            f"WARNING: other processes kept {busy:.2f} CPUs busy when the run began; "
            "figures from a busy machine are noisy (see load_before/after per section)"
        )
    store = _get(sections, "altus", "store")
    if store:
        lines.append(
            f"altus store: {store} ({_get(sections, 'altus', 'store_fs_type')}), "
            "removed after the run"
        )
    lines.append("")

    # 1. no-op
    def cold(system: str) -> float | None:
        return _get(sections, f"cold_{system}", "median_s")

    noop_rows: list[tuple[str, str, str, str | None]] = [
        ("altus  Knot.map + results (file store)", "altus", "noop", "altus"),
        ("ProcessPoolExecutor, altus's chunking", "ppe", "noop", "ppe"),
        ("ProcessPoolExecutor, chunksize=1", "ppe", "noop_chunk1", None),
        ("Dask LocalCluster  client.map + gather", "dask", "noop", "dask"),
        ("Lithops localhost (v1 batch runner)", "lithops", "noop", "lithops"),
    ]
    rows = []
    for label, section, key, cold_key in noop_rows:
        fig = _get(sections, section, key) if _ok(sections, section) else None
        wall = fig.get("median_s") if fig else None
        tps = n / wall if wall else None
        ratio = (wall / altus_noop) if (wall and altus_noop) else None
        cold_s = cold(cold_key) if cold_key else None
        note = ""
        if fig is None:
            note = "not measured: " + _why(sections, section)[:90]
        elif section == "lithops" and _get(sections, "lithops", "repeats_note"):
            note = _get(sections, "lithops", "repeats_note")
        rows.append(
            [
                label,
                fig.get("chunksize") if fig else "-",
                c.fmt_s(wall),
                c.fmt_rate(tps),
                c.fmt_x(ratio),
                c.fmt_s(cold_s),
                note,
            ]
        )
        summary["noop"][f"{section}.{key}"] = {
            "label": label,
            "wall_s": wall,
            "tasks_per_s": tps,
            "altus_speedup": ratio,
        }
    lith_default = sections.get("lithops_default")
    if lith_default is not None:
        est = _get(sections, "lithops_default", "probe", "estimated_full_s")
        done = _get(sections, "lithops_default", "noop", "median_s")
        wall = done or est
        ratio = wall / altus_noop if (wall and altus_noop) else None
        note = (
            ""
            if done
            else "estimated from two small probes; this runner starts one process per task"
            if est
            else "not measured: " + _why(sections, "lithops_default")[:90]
        )
        rows.append(
            [
                "Lithops localhost (default v2 runner)",
                _get(sections, "chunksizes", "values", "noop") if wall else "-",
                ("~" if not done and est else "") + c.fmt_s(wall),
                c.fmt_rate(n / wall if wall else None),
                c.fmt_x(ratio),
                c.fmt_s(cold("lithops_default")),
                note,
            ]
        )
        summary["noop"]["lithops_default"] = {
            "wall_s": done,
            "estimated_wall_s": est,
            "altus_speedup": ratio,
        }
    lines.append(
        f"1) No-op map: {n:,} tasks of noop(x) -> x, warm pools, median of "
        f"{cfg['noop_repeats']} runs (altus, ProcessPoolExecutor with altus's chunking) "
        f"or {reps} (the others)"
    )
    lines.append(
        c.table(
            ["system", "chunk", "wall s", "tasks/s", "altus speed-up", "cold start s", "note"],
            rows,
            [False, True, True, True, True, True, False],
        )
    )
    lines.append(
        "   cold start = creating the Knot / executor / cluster until the first result, "
        f"fresh process, imports excluded, median of {reps}"
    )
    lines.append("")

    # 2. CPU-bound
    cpu_tasks = cfg["cpu_tasks"]
    one = _get(sections, "serial", "one_task_s")
    rows = []
    for label, section in (
        ("altus", "altus"),
        ("ProcessPoolExecutor, altus's chunking", "ppe"),
        ("Dask LocalCluster", "dask"),
    ):
        fig = _get(sections, section, "cpu") if _ok(sections, section) else None
        fig = fig or {}
        eff, util = fig.get("efficiency"), fig.get("utilization")
        rows.append(
            [
                label,
                fig.get("chunksize", "-"),
                c.fmt_s(fig.get("serial_median_s")),
                c.fmt_s(fig.get("median_s")),
                c.fmt_pct(eff),
                c.fmt_pct(util),
                "" if fig else "not measured: " + _why(sections, section)[:90],
            ]
        )
        summary["cpu"][section] = {
            "wall_s": fig.get("median_s"),
            "serial_s": fig.get("serial_median_s"),
            "efficiency": eff,
            "utilization": util,
        }
    bare = _get(sections, "serial", "bare_processes") or {}
    rows.append(
        [
            f"(ceiling: {workers} bare forked processes)",
            cpu_tasks // workers,
            c.fmt_s(c.median(bare["serial_samples_s"]) if bare else None),
            c.fmt_s(bare.get("median_s")),
            c.fmt_pct(bare.get("efficiency")),
            "-",
            "no pool at all: the most this machine gives",
        ]
    )
    summary["cpu"]["bare_processes"] = {
        "wall_s": bare.get("median_s"),
        "efficiency": bare.get("efficiency"),
    }
    lines.append(
        f"2) CPU-bound map: {cpu_tasks} tasks x {c.fmt_s(one)} s of pure-Python CPU, median of "
        f"{reps} runs, each paired with a serial run of the same tasks just before it"
    )
    lines.append(
        c.table(
            ["system", "chunk", "serial s", "wall s", "efficiency", "CPU utilization", "note"],
            rows,
            [False, True, True, True, True, True, False],
        )
    )
    lines.append(
        f"   efficiency = serial / (wall x {workers} workers), the target's figure; "
        f"CPU utilization = CPU seconds the tasks got in the workers / (wall x {workers}), "
        "immune to the host's CPU speed drifting between runs"
    )
    lines.append("")

    # 3. memory
    rows = []
    mem_n = cfg["mem_tasks"]
    for label, section in (
        ("altus", "mem_altus"),
        ("ProcessPoolExecutor, altus's chunking", "mem_ppe"),
    ):
        fig = sections.get(section) if _ok(sections, section) else None
        rows.append(
            [
                label,
                fig.get("chunksize") if fig else "-",
                c.fmt_s(fig.get("wall_s") if fig else None),
                c.fmt_mib(fig.get("rss_before_bytes") if fig else None),
                c.fmt_mib(fig.get("peak_bytes") if fig else None),
                c.fmt_mib(fig.get("growth_bytes") if fig else None),
                c.fmt_mib(fig.get("ru_maxrss_after_bytes") if fig else None),
                "" if fig else "not measured: " + _why(sections, section)[:90],
            ]
        )
        summary["memory"][section] = {
            "peak_mib": fig["peak_bytes"] / c.MiB if fig else None,
            "growth_mib": fig["growth_bytes"] / c.MiB
            if fig and fig["growth_bytes"] is not None
            else None,
        }
    lines.append(
        f"3) Client memory: one {mem_n:,}-task no-op map (submit + all results) "
        "in a fresh process; the submitting process only, not its workers"
    )
    lines.append(
        c.table(
            [
                "system",
                "chunk",
                "wall s",
                "RSS before MiB",
                "peak MiB",
                "growth MiB",
                "ru_maxrss MiB",
                "note",
            ],
            rows,
            [False, True, True, True, True, True, True, False],
        )
    )
    lines.append(
        "   peak = RSS high-water mark while the map ran (VmHWM reset just before it); "
        "growth = peak - RSS before; ru_maxrss = getrusage high-water mark after"
    )
    lines.append("")

    for name in [*cfg["systems"], "lithops_default"]:
        if f"cold_{name}" in sections:
            summary["cold_start"][name] = cold(name)

    # targets
    targets: list[dict[str, Any]] = []

    def target(
        name: str, value: float | None, limit: float, ok: bool | None, shown: str, missing: str
    ) -> None:
        status = "N/A" if ok is None else ("PASS" if ok else "FAIL")
        if value is None and not _ok(sections, "altus"):
            status = "FAIL"  # altus itself produced no figure
        targets.append(
            {
                "name": name,
                "value": value,
                "limit": limit,
                "status": status,
                "detail": shown if value is not None else missing,
            }
        )

    dask = _get(sections, "dask", "noop", "median_s") if _ok(sections, "dask") else None
    r = dask / altus_noop if (dask and altus_noop) else None
    target(
        f"altus no-op throughput >= {TARGET_DASK_RATIO:g}x Dask LocalCluster",
        r,
        TARGET_DASK_RATIO,
        None if r is None else r >= TARGET_DASK_RATIO,
        f"{c.fmt_x(r)} ({c.fmt_rate(n / altus_noop if altus_noop else None)} vs "
        f"{c.fmt_rate(n / dask if dask else None)} tasks/s)",
        "no figure: altus "
        + ("ok" if altus_noop else _why(sections, "altus"))
        + "; dask "
        + ("ok" if dask else _why(sections, "dask")),
    )
    ppe = _get(sections, "ppe", "noop", "median_s") if _ok(sections, "ppe") else None
    r = altus_noop / ppe if (ppe and altus_noop) else None
    target(
        f"altus no-op wall within {TARGET_PPE_RATIO:g}x of ProcessPoolExecutor "
        f"(chunksize={_get(sections, 'chunksizes', 'values', 'noop')})",
        r,
        TARGET_PPE_RATIO,
        None if r is None else r <= TARGET_PPE_RATIO,
        f"{r:.2f}x ({c.fmt_s(altus_noop)} s vs {c.fmt_s(ppe)} s)" if r else "",
        "no figure: altus "
        + ("ok" if altus_noop else _why(sections, "altus"))
        + "; ppe "
        + ("ok" if ppe else _why(sections, "ppe")),
    )
    eff = summary["cpu"].get("altus", {}).get("efficiency")
    ppe_eff = summary["cpu"].get("ppe", {}).get("efficiency")
    target(
        f"altus CPU-bound parallel efficiency >= {TARGET_EFFICIENCY:.0%} on {workers} workers",
        eff,
        TARGET_EFFICIENCY,
        None if eff is None else eff >= TARGET_EFFICIENCY,
        f"{c.fmt_pct(eff)} (altus CPU utilization "
        f"{c.fmt_pct(summary['cpu'].get('altus', {}).get('utilization'))}; machine ceiling "
        f"{c.fmt_pct(summary['cpu'].get('bare_processes', {}).get('efficiency'))}, "
        f"ProcessPoolExecutor {c.fmt_pct(ppe_eff)}, Dask "
        f"{c.fmt_pct(summary['cpu'].get('dask', {}).get('efficiency'))})",
        "no figure: " + _why(sections, "altus"),
    )
    mem = summary["memory"].get("mem_altus", {})
    ppe_mem = summary["memory"].get("mem_ppe", {})
    targets.append(
        {
            "name": f"altus peak client memory, {mem_n:,}-task map",
            "value": mem.get("peak_mib"),
            "limit": None,
            "status": "INFO",
            "detail": (
                f"peak {mem['peak_mib']:.1f} MiB, growth {mem['growth_mib']:.1f} MiB "
                f"(ProcessPoolExecutor: peak "
                f"{ppe_mem['peak_mib'] if ppe_mem.get('peak_mib') is not None else float('nan'):.1f}"
                f" MiB, growth "
                f"{ppe_mem['growth_mib'] if ppe_mem.get('growth_mib') is not None else float('nan'):.1f}"
                " MiB)"
            )
            if mem.get("peak_mib") is not None
            else "no figure: " + _why(sections, "mem_altus"),
        }
    )
    if "lithops" in cfg["systems"]:
        lith = _get(sections, "lithops", "noop", "median_s") if _ok(sections, "lithops") else None
        detail = (
            f"ran: {c.fmt_s(lith)} s for {n:,} tasks with the v1 batch runner "
            f"({c.fmt_x(lith / altus_noop) if altus_noop else '-'} slower than altus)"
            if lith
            else "did not run at full size: " + _why(sections, "lithops")
        )
        est = _get(sections, "lithops_default", "probe", "estimated_full_s")
        if est:
            detail += f"; default v2 runner ~{est:.0f} s (estimated)"
        targets.append(
            {
                "name": "Lithops localhost on the no-op map",
                "value": lith,
                "limit": None,
                "status": "INFO",
                "detail": detail,
            }
        )

    lines.append("Targets")
    for t in targets:
        lines.append(f"  [{t['status']}] {t['name']}: {t['detail']}")
    return "\n".join(lines), targets, summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.params_file, args.result_file)
    cfg = settings(args)
    unknown = set(cfg["systems"]) - {"altus", "ppe", "dask", "lithops"}
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}")
    quiet = c.wait_until_quiet(cfg["quiet_cpus"], cfg["wait_quiet_s"], log)
    machine = c.machine_info(PACKAGES, cfg["store_root"] or tempfile.gettempdir())
    machine.update(quiet)
    log(
        f"batch_throughput: {cfg['tasks']} no-op tasks, {cfg['workers']} workers, "
        f"systems {','.join(cfg['systems'])}{' (quick)' if cfg['quick'] else ''}"
    )
    started = time.perf_counter()
    sections = run_all(cfg)
    text, targets, summary = build_report(cfg, machine, sections)
    print(text, flush=True)

    figures = {"config": cfg, "machine": machine, "targets": targets, "summary": summary}
    c.save_result(
        args.out, "batch_throughput", {**figures, "sections": sections, "table": text}, started, log
    )
    return c.exit_status(targets, args.strict)


if __name__ == "__main__":
    sys.exit(main())
