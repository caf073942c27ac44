"""The Slurm backend on a real single-node Slurm cluster (``scripts/slurm-cluster``):
the shared batch suite, plus job arrays, job scripts, requeues and Slurm's own messages."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import altus
from abstract import tasks
from abstract.batch import BatchBackendSuite, recorded_counts, wait_until
from altus.batch.backends.slurm import SlurmBackend
from altus.batch.record import BatchName
from altus.errors import BackendError, BackendUnavailable, JobBusy
from slurm_cluster import slurm_cluster_env

__all__ = ["slurm_cluster_env"]  # the session fixture, used here by name


@pytest.fixture(autouse=True)
def _slurm(slurm_cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here talks to the session's Slurm cluster."""
    for name, value in slurm_cluster_env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def backend_name() -> str:
    return "slurm"


@pytest.fixture
def knot_options() -> dict[str, Any]:
    return {}


@pytest.mark.slow
class TestSlurm(BatchBackendSuite):
    pass


def squeue(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "--noheader", "--array", "--states=all", "--format=%i %T %r", f"--jobs={job_id}"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


def test_one_array_per_map_with_resources_and_options_in_the_kept_script(
    store_url: str,
) -> None:
    knot = altus.Knot(
        tasks.square, backend="slurm", store=store_url, throttle=3, partition="debug",
        resources={"cpus": 1, "memory": "200M", "time": 600},
        sbatch_options=["--comment=altus-test"],
    )  # fmt: skip
    job = knot.map(range(12), chunksize=2)
    assert job.results() == [x * x for x in range(12)]
    script = job.record.store.read("backend/slurm-r0.sh").decode()
    for flag in ("--cpus-per-task=1", "--mem=200M", "--time=10", "--partition=debug",
                 "--comment=altus-test", "--requeue"):  # fmt: skip
        assert f"#SBATCH {flag}" in script
    assert "-m altus.batch.supervisor" in script
    job_id = job.record.backend_state("slurm")["rounds"]["0"]
    shown = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False
    ).stdout
    assert "ArrayTaskThrottle=3" in shown or "%3" in shown or "ArrayTaskId" in shown


def test_a_requeued_element_loses_and_duplicates_nothing(store_url: str, tmp_path: Path) -> None:
    job = altus.Knot(tasks.nap, backend="slurm", store=store_url).map([0.3] * 8, chunksize=8)
    job_id = job.record.backend_state("slurm")["rounds"]["0"]
    wait_until(lambda: len(job.record.recorded_tasks(0)) >= 2, 60, "two tasks recorded")
    subprocess.run(["scontrol", "requeue", f"{job_id}_0"], check=True)  # as preemption does
    assert job.results() == [0.3] * 8
    assert set(recorded_counts(job).values()) == {1}


def test_a_held_job_shows_slurms_reason(store_url: str, run_altus: Any) -> None:
    knot = altus.Knot(tasks.square, backend="slurm", store=store_url, sbatch_options=["--hold"])
    job = knot.map(range(2))
    wait_until(lambda: "PENDING" in squeue(job.record.backend_state("slurm")["rounds"]["0"]))
    shown = run_altus("jobs", "show", job.id, "--store", store_url)
    assert "PENDING" in shown.stdout
    assert "JobHeldUser" in shown.stdout
    job.cancel()


def test_a_rejected_submission_is_slurms_own_message(store_url: str) -> None:
    knot = altus.Knot(tasks.square, backend="slurm", store=store_url, resources={"gpus": 1})
    with pytest.raises(BackendError, match=r"^Slurm refused the job array: sbatch: error: "):
        knot.map([1])


def test_without_sbatch_one_line_says_slurm_is_missing(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    knot = altus.Knot(tasks.square, backend="slurm", store=store_url)
    with pytest.raises(BackendUnavailable, match=r"^Slurm is not installed on this machine"):
        knot.map([1])


def test_cancel_ends_the_array(store_url: str) -> None:
    job = altus.Knot(tasks.nap, backend="slurm", store=store_url).map([30] * 4, chunksize=1)
    job_id = job.record.backend_state("slurm")["rounds"]["0"]
    wait_until(lambda: "RUNNING" in squeue(job_id), 60, "an element running")
    started = time.monotonic()
    job.cancel()
    wait_until(lambda: not SlurmBackend().is_active(job.record), 30, "the array gone")
    assert time.monotonic() - started < 30
    assert os.environ.get("SLURM_CONF")


def test_a_stopped_element_still_counts_as_running(store_url: str) -> None:
    """``scancel --signal=STOP`` leaves the elements STOPPED: they resume on SIGCONT and
    commit, so a retry beside them would run their tasks twice."""
    job = altus.Knot(tasks.nap, backend="slurm", store=store_url).map([30] * 2, chunksize=1)
    job_id = job.record.backend_state("slurm")["rounds"]["0"]
    try:
        wait_until(lambda: squeue(job_id).count("RUNNING") == 2, 60, "both elements running")
        subprocess.run(["scancel", "--signal=STOP", job_id], check=True)
        wait_until(lambda: squeue(job_id).count("STOPPED") == 2, 30, "the elements stopped")
        assert SlurmBackend().is_active(job.record)
        with pytest.raises(JobBusy, match=f"round 0 of job {job.id} is still running"):
            job.retry(failed_only=False)
        assert job.record.rounds() == [0]
    finally:
        job.cancel()


def unreachable_controller(tmp_path: Path) -> Path:
    """A copy of the cluster's slurm.conf naming a port where no slurmctld listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = Path(os.environ["SLURM_CONF"]).read_text()
    text = re.sub(r"(?m)^SlurmctldPort=\d+$", f"SlurmctldPort={port}", text)
    text = re.sub(r"(?m)^MessageTimeout=\d+$", "MessageTimeout=1", text)  # fail fast
    conf = tmp_path / "unreachable.conf"
    conf.write_text(text)
    return conf


def test_a_running_job_is_never_taken_for_stopped_when_squeue_cannot_answer(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = altus.Knot(tasks.nap, backend="slurm", store=store_url).map([30] * 2, chunksize=1)
    job_id = job.record.backend_state("slurm")["rounds"]["0"]
    try:
        wait_until(lambda: "RUNNING" in squeue(job_id), 60, "an element running")
        real = os.environ["SLURM_CONF"]
        monkeypatch.setenv("SLURM_CONF", str(unreachable_controller(tmp_path)))
        with pytest.raises(BackendError, match=r"^Slurm cannot say whether .* still run: "):
            SlurmBackend().is_active(job.record)
        with pytest.raises(BackendError, match="Unable to contact slurm controller"):
            job.remove(force=True)
        monkeypatch.setenv("SLURM_CONF", real)
        assert altus.Job.attach(job.id, store=store_url).id == job.id  # the record is kept
    finally:
        job.cancel()


def test_a_job_slurm_has_forgotten_has_ended(store_url: str) -> None:
    """Past MinJobAge squeue knows the array no more ("Invalid job id"): it has ended."""
    job = altus.Knot(tasks.square, backend="slurm", store=store_url).map([1])
    assert job.results() == [1]
    job.record.write_backend_state("slurm", {"rounds": {"0": "99999999"}})
    assert not SlurmBackend().is_active(job.record)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_element_near_its_time_limit_requeues_itself_and_resumes(store_url: str) -> None:
    """A chunk that needs longer than its one-minute limit: warned by Slurm, the supervisor
    requeues the element, which resumes from the record (about two minutes)."""
    knot = altus.Knot(tasks.nap, backend="slurm", store=store_url, resources={"time": 60})
    job = knot.map([4.0] * 24, chunksize=24)
    assert job.wait(timeout=280)
    assert job.results() == [4.0] * 24
    assert set(recorded_counts(job).values()) == {1}
    attempts = {BatchName.parse(stem).attempt for stem in job.record.status_names()}
    assert len(attempts) >= 2  # it ran in more than one go


@pytest.mark.slow
def test_elements_can_run_in_an_altus_environment(store_url: str, tmp_path: Path) -> None:
    project = Path(altus.__file__).resolve().parents[2]  # this checkout, installed into it
    spec = tmp_path / "requirements.txt"
    spec.write_text(f"{project}\n")
    job = altus.Knot(tasks.python_prefix, backend="slurm", store=store_url, env=str(spec)).map([0])
    [prefix] = job.results()
    assert "/altus/envs/" in prefix
    assert f"{Path(prefix)}/bin/python" in job.record.store.read("backend/slurm-r0.sh").decode()


def test_element_logs_of_a_record_on_s3_are_private(
    s3_env: dict[str, str], s3_bucket: str, clean_environ: Path
) -> None:
    """What elements print (tracebacks, a task's stray output) lands in altus's state
    folder when the record is on S3: a folder only its owner can enter."""
    job = altus.Knot(tasks.square, backend="slurm", store=f"s3://{s3_bucket}/jobs").map(range(2))
    assert job.gather(progress=False) == [0, 1]
    logs = clean_environ / "state" / "altus" / "slurm-logs"
    assert logs.is_dir()
    assert (logs.stat().st_mode & 0o777) == 0o700
