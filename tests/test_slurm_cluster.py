"""The test Slurm cluster (``scripts/slurm-cluster``) runs, finishes and cancels jobs."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from slurm_cluster import slurm_cluster_env

__all__ = ["slurm_cluster_env"]  # the session fixture, used here by name

WAIT = 60  # seconds: generous for a loaded CI machine; jobs here take about one


def slurm(env: Mapping[str, str], *args: str) -> str:
    """Run a Slurm command against the test cluster; its stdout."""
    done = subprocess.run(
        args, env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


def states(env: Mapping[str, str], job_id: str) -> list[str]:
    """The state of each job (each array element) of JOB_ID, finished ones included."""
    return slurm(env, "squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").split()


def test_array_elements_all_run(slurm_cluster_env: dict[str, str], tmp_path: Path) -> None:
    job_id = slurm(
        slurm_cluster_env,
        "sbatch",
        "--parsable",
        "--array=0-3",
        f"--output={tmp_path}/slurm-%A_%a.out",
        "--wrap",
        f'echo "task $SLURM_ARRAY_TASK_ID" > {tmp_path}/out-$SLURM_ARRAY_TASK_ID',
    ).strip()

    # squeue lists a job until it has finished; then only with -t all.
    wait_for(
        lambda: not slurm(slurm_cluster_env, "squeue", "-h", "-j", job_id).strip(),
        f"array job {job_id} to finish",
    )
    assert states(slurm_cluster_env, job_id) == ["COMPLETED"] * 4
    for task in range(4):
        assert (tmp_path / f"out-{task}").read_text() == f"task {task}\n"


def test_scancel_ends_a_running_job(slurm_cluster_env: dict[str, str], tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    job_id = slurm(
        slurm_cluster_env,
        "sbatch",
        "--parsable",
        f"--output={tmp_path}/slurm-%j.out",
        "--wrap",
        f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 600",
    ).strip()
    wait_for(pid_file.exists, f"job {job_id} to start")
    pid = int(pid_file.read_text())
    assert states(slurm_cluster_env, job_id) == ["RUNNING"]

    slurm(slurm_cluster_env, "scancel", job_id)

    wait_for(lambda: states(slurm_cluster_env, job_id) == ["CANCELLED"], f"job {job_id} to end")
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), f"the job's process {pid} to end")
