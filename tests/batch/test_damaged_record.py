"""One damaged file of a job record affects only what it holds.

Each test makes a real record with the local backend, damages one file on
disk the way a full disk, a crash of some other tool or a careless edit would,
and checks that the listing still lists every job, that the damaged job is
shown as damaged with the file named, and that every readable result is still
given. Nothing here ever answers with an ``internal error``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import altus
from abstract import tasks
from altus.batch.record import JobSpec
from altus.errors import RecordError

RunAltus = Callable[..., subprocess.CompletedProcess[str]]

EXPECTED = [0, 1, 2, None, 4, 5]
"""``fail_on_three`` over range(6); None stands for task 3's ValueError."""


class Records:
    """Jobs of ``fail_on_three`` over 0..5 in one ``file://`` store, and their folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def submit(self, *, retry: bool = False) -> str:
        job = altus.Knot(tasks.fail_on_three, store=self.url, retries=0, workers=2).map(range(6))
        job.wait(timeout=60)
        if retry:  # a round 1 that runs task 3 again (and fails it again)
            job.retry()
            job.wait(timeout=60)
        return job.id

    def file(self, job_id: str, key: str) -> Path:
        return self.root / job_id / key

    def status_of(self, job_id: str, task: int) -> Path:
        """The status file of round 0 that lists ``task``."""
        for path in sorted(self.file(job_id, "status").glob("r0-*.json")):
            runs = json.loads(path.read_bytes())["tasks"]
            if any(first <= task < stop for first, stop in runs):
                return path
        raise AssertionError(f"no status file lists task {task}")

    def edit_status(self, job_id: str, task: int, **fields: Any) -> str:
        path = self.status_of(job_id, task)
        status = json.loads(path.read_bytes())
        path.write_text(json.dumps({**status, **fields}))
        return f"status/{path.name}"

    def results(self, job_id: str) -> list[Any]:
        return altus.Job.attach(job_id, store=self.url).results(errors="return")


@pytest.fixture
def records(tmp_path: Path) -> Records:
    root = tmp_path / "store"
    root.mkdir()
    return Records(root)


def list_jobs(run_altus: RunAltus, store: str) -> tuple[dict[str, dict[str, Any]], str]:
    """``altus jobs list --json`` by id, and the human listing (stdout + stderr)."""
    listed = run_altus("jobs", "list", "--json", "--store", store)
    assert listed.returncode == 0, listed.stderr
    human = run_altus("jobs", "list", "--store", store)
    assert human.returncode == 0, human.stderr
    assert "internal error" not in human.stderr
    return {entry["id"]: entry for entry in json.loads(listed.stdout)}, human.stdout + human.stderr


def row_of(listing: str, job_id: str) -> list[str]:
    [row] = [line for line in listing.splitlines() if line.startswith(job_id)]
    return row.split()


def assert_readable_results(results: list[Any], damaged: int, file: str) -> None:
    """Every task but ``damaged`` as it ran; ``damaged`` a RecordError naming ``file``."""
    for task, (value, expected) in enumerate(zip(results, EXPECTED, strict=True)):
        if task == damaged:
            assert isinstance(value, RecordError), value
            assert file in str(value)
            assert len(str(value).splitlines()) == 1
        elif expected is None:
            assert isinstance(value, ValueError)
        else:
            assert value == expected


# -- a damaged round ------------------------------------------------------------------------


def test_a_damaged_round_is_named_and_the_other_jobs_are_listed(
    records: Records, run_altus: RunAltus
) -> None:
    healthy = records.submit()
    damaged = records.submit(retry=True)
    records.file(damaged, "rounds/1.json").write_text("{")
    by_id, listing = list_jobs(run_altus, records.url)
    assert by_id[healthy]["state"] == "failed"
    assert by_id[healthy]["damaged"] == []
    assert row_of(listing, healthy)[4] == "failed"
    assert by_id[damaged]["state"] == "damaged"
    [why] = by_id[damaged]["damaged"]
    assert "rounds/1.json" in why
    assert row_of(listing, damaged)[4] == "damaged"
    assert f"{damaged}/rounds/1.json" in listing


def test_a_damaged_round_leaves_round_0_results(records: Records) -> None:
    job_id = records.submit(retry=True)
    records.file(job_id, "rounds/1.json").write_text('{"chunks": [[3, 600]]}')
    job = altus.Job.attach(job_id, store=records.url)
    assert list(job.damaged) == ["rounds/1.json"]
    assert "600" in job.damaged["rounds/1.json"]
    results = job.results(errors="return")
    assert [value for value in results if not isinstance(value, Exception)] == [0, 1, 2, 4, 5]
    assert isinstance(results[3], ValueError)


# -- a damaged status file ------------------------------------------------------------------


@pytest.mark.parametrize("tasks_field", [[[1000, 1001]], [[4, 5]], [[1, 2], [1, 2]], "x"], ids=str)
def test_a_status_file_with_tasks_out_of_range_is_named(
    records: Records, run_altus: RunAltus, tasks_field: object
) -> None:
    job_id = records.submit()
    file = records.edit_status(job_id, 1, tasks=tasks_field)
    by_id, listing = list_jobs(run_altus, records.url)
    assert by_id[job_id]["state"] == "damaged"
    assert any(file in why for why in by_id[job_id]["damaged"])
    assert file in listing
    assert_readable_results(records.results(job_id), damaged=1, file=file)


@pytest.mark.parametrize(
    "fields",
    [{"start": "AAAA"}, {"failures": {"77": {"exit_reason": "raised"}}}, {"failures": []}],
    ids=["short column", "failure of another task", "failures not a map"],
)
def test_a_status_file_whose_columns_do_not_match_is_named(
    records: Records, fields: dict[str, Any]
) -> None:
    job_id = records.submit()
    file = records.edit_status(job_id, 1, **fields)
    job = altus.Job.attach(job_id, store=records.url)
    assert list(job.damaged) == [file]
    assert_readable_results(job.results(errors="return"), damaged=1, file=file)


def test_a_truncated_status_file_hides_nothing_else(records: Records, run_altus: RunAltus) -> None:
    job_id = records.submit()
    path = records.status_of(job_id, 2)
    path.write_bytes(path.read_bytes()[:25])
    file = f"status/{path.name}"
    by_id, listing = list_jobs(run_altus, records.url)
    assert by_id[job_id]["state"] == "damaged"
    assert by_id[job_id]["counts"]["done"] == 4
    assert file in listing
    shown = run_altus("jobs", "show", job_id, "--store", records.url)
    assert shown.returncode == 0, shown.stderr
    assert file in shown.stdout
    shown_json = json.loads(
        run_altus("jobs", "show", job_id, "--json", "--store", records.url).stdout
    )
    assert list(shown_json["damaged"]) == [file]
    assert [error["task"] for error in shown_json["errors"]] == [3]
    assert_readable_results(records.results(job_id), damaged=2, file=file)


def test_a_task_whose_only_status_is_damaged_raises_a_record_error(records: Records) -> None:
    job_id = records.submit()
    path = records.status_of(job_id, 0)
    path.write_bytes(b'{"tasks": [[0, 1]')
    job = altus.Job.attach(job_id, store=records.url)
    assert job.wait(timeout=10) is True
    assert job.state() == "damaged"
    with pytest.raises(RecordError, match=rf"status/{path.name}"):
        job.result(0)
    with pytest.raises(RecordError, match=rf"status/{path.name}"):
        job.results(errors="raise")
    assert job.results(errors="skip") == [1, 2, 4, 5]


# -- a damaged results file -----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "too short"])
def test_a_damaged_results_file_names_it_for_its_tasks_only(records: Records, damage: str) -> None:
    job_id = records.submit()
    status = records.status_of(job_id, 4)
    path = records.file(job_id, f"results/{status.stem}.pkl")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-3])
    else:
        import pickle

        path.write_bytes(pickle.dumps([]))
    assert_readable_results(records.results(job_id), damaged=4, file=f"results/{path.name}")


# -- a damaged spec ---------------------------------------------------------------------------


def peak_rss_of(command: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``command`` as the only child of a fresh interpreter; its peak RSS in bytes.

    The interpreter also caps the child's address space, so code that tries to
    allocate gigabytes fails at once instead of taking the machine's memory.
    """
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "def cap():\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, preexec_fn=cap)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps([done.returncode, done.stdout, done.stderr, peak]))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    returncode, stdout, stderr, peak = json.loads(ran.stdout)
    return subprocess.CompletedProcess(command, returncode, stdout, stderr), peak


@pytest.mark.parametrize(
    "bounds",
    [None, [0, 200_000_000], [0, 1, 2, 3, 4, 5, 200_000_000]],
    ids=["bounds unchanged", "one chunk of them", "the last of six chunks"],
)
def test_a_spec_declaring_200_million_tasks_is_listed_as_damaged_cheaply(
    records: Records, run_altus: RunAltus, bounds: list[int] | None
) -> None:
    healthy = records.submit()
    damaged = records.submit()
    path = records.file(damaged, "spec.json")
    spec = json.loads(path.read_bytes())
    spec["n_tasks"] = 200_000_000
    spec["bounds"] = bounds or spec["bounds"]
    path.write_text(json.dumps(spec))
    altus_list = [sys.executable, "-m", "altus.cli.main", "jobs", "list", "--store", records.url]
    started = time.monotonic()
    listed, peak = peak_rss_of([*altus_list, "--json"])
    assert time.monotonic() - started < 30
    assert listed.returncode == 0, listed.stderr
    assert peak < 200 << 20
    by_id = {entry["id"]: entry for entry in json.loads(listed.stdout)}
    assert by_id[healthy]["state"] == "failed"
    assert by_id[damaged]["state"] == "damaged"
    assert "spec.json" in by_id[damaged]["damaged"][0]
    shown = run_altus("jobs", "show", damaged, "--store", records.url)
    assert shown.returncode == 1
    [line] = shown.stderr.splitlines()
    assert line.startswith("altus: error: ")
    assert "spec.json" in line
    assert "internal error" not in line


BAD_FIELDS: list[dict[str, Any]] = [
    {"n_tasks": -1, "bounds": [0]},
    {"n_tasks": "6"},
    {"n_tasks": True, "bounds": [0, 1]},
    {"n_tasks": 6.0},
    {"bounds": [0, 3, 3, 6]},
    {"bounds": [1, 3, 6]},
    {"bounds": [0, 3, 5]},
    {"bounds": [0, "3", 6]},
    {"bounds": "0,6"},
    {"bounds": []},
    {"calling": "sideways"},
    {"retries": -1},
    {"timeout": "soon"},
    {"workers": 0},
    {"resources": []},
    {"name": 7},
    {"created": "yesterday"},
]


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=lambda bad: json.dumps(bad))
def test_a_spec_with_a_field_out_of_type_or_range_is_damaged(bad: dict[str, Any]) -> None:
    fields = {
        "id": "fit-20250101-120000-abcd",
        "name": "fit",
        "function": "lab.fit",
        "backend": "local",
        "n_tasks": 6,
        "bounds": [0, 3, 6],
        "format": 2,
        **bad,
    }
    with pytest.raises(RecordError, match=r"where/spec\.json is damaged"):
        JobSpec.from_json(json.dumps(fields).encode(), where="where/spec.json")


def test_retry_runs_the_tasks_of_a_torn_batch_again(records: Records) -> None:
    """A power cut can leave a status file whose bytes never reached the disk (nobody was
    told of its tasks): retry() runs those tasks again, and the job gives every result."""
    job_id = records.submit()
    records.status_of(job_id, 1).write_bytes(b"")
    job = altus.Job.attach(job_id, store=records.url)
    assert job.state() == "damaged"
    job.retry()
    assert job.wait(timeout=60)
    values = job.results(errors="return")
    assert values[:3] == [0, 1, 2]
    assert values[4:] == [4, 5]


@pytest.mark.parametrize("left", [0, 5], ids=["empty", "short"])
def test_retry_runs_the_tasks_whose_results_a_power_cut_tore(records: Records, left: int) -> None:
    """A status file can survive a power cut while its results file did not reach the
    disk whole: the results of its tasks are damaged, and retry() runs them again."""
    job_id = records.submit()
    status = records.status_of(job_id, 1)
    results = records.file(job_id, f"results/{status.stem}.pkl")
    results.write_bytes(results.read_bytes()[:left])
    job = altus.Job.attach(job_id, store=records.url)
    with pytest.raises(RecordError, match=rf"results/{status.stem}\.pkl"):
        job.result(1)
    job.retry()
    assert job.wait(timeout=60)
    values = job.results(errors="return")
    assert values[:3] == [0, 1, 2]
    assert values[4:] == [4, 5]
