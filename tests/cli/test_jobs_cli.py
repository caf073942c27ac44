"""``altus jobs`` on real jobs, submitted with the library by a separate script.

The script is its own ``__main__``, so its functions travel to the workers by
value, as a scientist's would; the test only talks to the job through the CLI.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from altus.cli.main import cli

RunAltus = Callable[..., subprocess.CompletedProcess[str]]

SUBMIT = '''
"""Usage: submit.py STORE fail|nap FIXED_MARKER — submit 6 tasks, print the job id."""
import sys
import time
from pathlib import Path

import altus

STORE, MODE, FIXED = sys.argv[1], sys.argv[2], Path(sys.argv[3])


def square(x):
    print(f"working on {x}")
    if x == 3 and not FIXED.exists():
        print(f"about to fail on {x}", file=sys.stderr)
        raise ValueError(f"bad input {x}\\nsecond line")
    return x * x


def nap(x):
    time.sleep(60)
    return x


if __name__ == "__main__":
    func = square if MODE == "fail" else nap
    job = altus.Knot(func, name=MODE, store=STORE, retries=0, workers=2).map(range(6))
    print(job.id, flush=True)
    job.wait(timeout=60)
'''


class Jobs:
    """Submits jobs to one store and reads them back through the CLI."""

    def __init__(self, folder: Path, run_altus: RunAltus) -> None:
        self.store = (folder / "store").as_uri()
        self.fixed = folder / "fixed"
        self.script = folder / "submit.py"
        self.script.write_text(SUBMIT)
        self.run_altus = run_altus
        self.clients: list[subprocess.Popen[str]] = []

    def submit_finished(self) -> str:
        """A job of ``square`` over 0..5, waited for; task 3 fails unless ``fixed`` exists."""
        done = subprocess.run(
            [sys.executable, str(self.script), self.store, "fail", str(self.fixed)],
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )
        return done.stdout.split()[0]

    def submit_running(self) -> str:
        """A job of six one-minute naps; the submitting script is stopped at teardown."""
        client = subprocess.Popen(
            [sys.executable, str(self.script), self.store, "nap", str(self.fixed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.clients.append(client)
        assert client.stdout is not None
        return client.stdout.readline().strip()

    def altus(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run_altus("jobs", *args, "--store", self.store, input=input)

    def show(self, job_id: str) -> dict[str, Any]:
        done = self.altus("show", job_id, "--json")
        assert done.returncode == 0, done.stderr
        shown: dict[str, Any] = json.loads(done.stdout)
        return shown

    def wait_until_finished(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (shown := self.show(job_id))["state"] == "running":
            assert time.monotonic() < deadline, f"job {job_id} still running: {shown['counts']}"
            time.sleep(0.2)
        return shown

    def stop_clients(self) -> None:
        """Ctrl-C each submitting script: its ``wait`` cancels the job it launched."""
        for client in self.clients:
            if client.poll() is None:
                client.send_signal(signal.SIGINT)
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()


@pytest.fixture
def jobs(tmp_path: Path, run_altus: RunAltus) -> Iterator[Jobs]:
    helper = Jobs(tmp_path, run_altus)
    yield helper
    helper.stop_clients()


@pytest.fixture
def failed_job(jobs: Jobs) -> str:
    return jobs.submit_finished()


def assert_one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("altus: error: ")
    for fragment in fragments:
        assert fragment in line


# -- list ---------------------------------------------------------------------------------


def test_list_shows_the_job(jobs: Jobs, failed_job: str) -> None:
    done = jobs.altus("list")
    assert done.returncode == 0
    header, *rows = done.stdout.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "FUNCTION", "BACKEND", "STATE"]
    [row] = [row for row in rows if row.startswith(failed_job)]
    assert row.split()[1:8] == ["fail", "__main__.square", "local", "failed", "5", "1", "6"]


def test_list_json(jobs: Jobs, failed_job: str) -> None:
    done = jobs.altus("list", "--json")
    assert done.returncode == 0
    [entry] = json.loads(done.stdout)
    assert entry["id"] == failed_job
    assert entry["state"] == "failed"
    assert entry["n_tasks"] == 6
    assert entry["counts"] == {"pending": 0, "running": 0, "done": 5, "failed": 1, "cancelled": 0}


def test_list_in_process(jobs: Jobs, failed_job: str) -> None:
    result = CliRunner().invoke(cli, ["jobs", "list", "--json", "--store", jobs.store])
    assert result.exit_code == 0, result.output
    assert [entry["id"] for entry in json.loads(result.stdout)] == [failed_job]


def test_list_of_an_empty_store(jobs: Jobs) -> None:
    Path(jobs.store.removeprefix("file://")).mkdir()
    assert jobs.altus("list").stderr == "no jobs in this store\n"
    assert json.loads(jobs.altus("list", "--json").stdout) == []


def test_list_of_a_store_that_is_not_there_says_so(run_altus: Any, tmp_path: Path) -> None:
    """A mistyped ``--store`` is not an empty store; the default one, not made yet, is."""
    missing = (tmp_path / "nonexistent").as_uri()
    done = run_altus("jobs", "list", "--store", missing)
    assert done.returncode == 1
    assert done.stderr == f"altus: error: no store at {missing}: the folder does not exist\n"
    default = run_altus("jobs", "list")
    assert (default.returncode, default.stderr) == (0, "no jobs in this store\n")


# -- show ---------------------------------------------------------------------------------


def test_show_spec_counts_and_failures(jobs: Jobs, failed_job: str) -> None:
    done = jobs.altus("show", failed_job)
    assert done.returncode == 0
    fields = dict(line.split(None, 1) for line in done.stdout.split("\n\n")[0].splitlines())
    assert fields["job"] == failed_job
    assert fields["state"] == "failed"
    assert fields["function"] == "__main__.square"
    assert fields["backend"] == "local"
    assert fields["tasks"].startswith("6 in ")
    assert fields["counts"] == "pending 0, running 0, done 5, failed 1, cancelled 0"
    assert {"resources", "created", "versions"} <= fields.keys()
    failures = done.stdout.split("\n\n")[1].splitlines()
    assert failures[0] == "failed tasks (1)"
    assert failures[2].split(None, 2) == ["3", "ValueError", "bad input 3"]
    assert "second line" not in done.stdout


def test_show_json(jobs: Jobs, failed_job: str) -> None:
    shown = jobs.show(failed_job)
    assert shown["spec"]["id"] == failed_job
    assert shown["spec"]["n_tasks"] == 6
    assert shown["state"] == "failed"
    assert shown["counts"]["failed"] == 1
    [error] = shown["errors"]
    assert (error["task"], error["error_type"]) == (3, "ValueError")
    assert error["message"].startswith("bad input 3")
    assert "Traceback" in error["traceback"]


# -- logs ---------------------------------------------------------------------------------


def test_logs_of_one_task(jobs: Jobs, failed_job: str) -> None:
    done = jobs.altus("logs", failed_job, "3")
    assert done.returncode == 0
    assert done.stdout == "working on 3\n"
    assert done.stderr == "about to fail on 3\n"


def test_logs_of_one_task_json(jobs: Jobs, failed_job: str) -> None:
    done = jobs.altus("logs", failed_job, "0", "--json")
    assert json.loads(done.stdout) == {"task": 0, "stdout": "working on 0\n", "stderr": ""}


def test_logs_without_a_task_show_the_failed_tasks(jobs: Jobs, failed_job: str) -> None:
    done = jobs.altus("logs", failed_job)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "==> task 3 <==",
        "--- stdout ---",
        "working on 3",
        "--- stderr ---",
        "about to fail on 3",
    ]
    parsed = json.loads(jobs.altus("logs", failed_job, "--json").stdout)
    assert (parsed["selection"], parsed["more"]) == ("failed", False)
    assert [entry["task"] for entry in parsed["logs"]] == [3]


def test_logs_without_failures_show_tasks_with_output(jobs: Jobs) -> None:
    jobs.fixed.touch()
    job_id = jobs.submit_finished()
    done = jobs.altus("logs", job_id)
    assert done.returncode == 0
    assert [line for line in done.stdout.splitlines() if line.startswith("==>")] == [
        f"==> task {task} <==" for task in range(6)
    ]
    assert "no failed tasks" in done.stderr


def test_logs_of_a_task_out_of_range(jobs: Jobs, failed_job: str) -> None:
    assert_one_error_line(jobs.altus("logs", failed_job, "99"), failed_job, "99")


@pytest.mark.parametrize(
    "command",
    [["show"], ["logs"], ["cancel"], ["retry"], ["rm", "--yes"]],
)
def test_unknown_job_id(jobs: Jobs, command: list[str]) -> None:
    done = jobs.altus(command[0], "no-such-job", *command[1:])
    assert_one_error_line(done, "no-such-job")


# -- cancel, retry, rm -----------------------------------------------------------------------


def test_cancel_a_running_job(jobs: Jobs) -> None:
    job_id = jobs.submit_running()
    assert jobs.show(job_id)["state"] == "running"
    done = jobs.altus("cancel", job_id)
    assert done.returncode == 0
    assert done.stdout == f"job {job_id}: cancelled\n"
    shown = jobs.show(job_id)
    assert shown["state"] == "cancelled"
    assert shown["counts"]["cancelled"] == 6


def test_retry_reruns_the_failed_task(jobs: Jobs, failed_job: str) -> None:
    jobs.fixed.touch()
    done = jobs.altus("retry", failed_job)
    assert done.returncode == 0
    assert done.stdout == f"job {failed_job}: resubmitted 1 task(s)\n"
    shown = jobs.wait_until_finished(failed_job)
    assert shown["state"] == "done"
    assert shown["counts"]["done"] == 6


def test_retry_with_nothing_to_retry(jobs: Jobs) -> None:
    jobs.fixed.touch()
    job_id = jobs.submit_finished()
    done = jobs.altus("retry", job_id)
    assert done.returncode == 0
    assert done.stdout == f"job {job_id}: nothing to retry (done)\n"


def test_retry_all_reruns_cancelled_tasks(jobs: Jobs) -> None:
    job_id = jobs.submit_running()
    jobs.altus("cancel", job_id)
    assert jobs.altus("retry", job_id).stdout == f"job {job_id}: nothing to retry (cancelled)\n"
    done = jobs.altus("retry", job_id, "--all")
    assert done.returncode == 0
    assert done.stdout == f"job {job_id}: resubmitted 6 task(s)\n"
    assert jobs.show(job_id)["state"] == "running"
    assert jobs.altus("cancel", job_id).returncode == 0


def test_rm_refuses_a_running_job_unless_forced(jobs: Jobs) -> None:
    job_id = jobs.submit_running()
    assert_one_error_line(jobs.altus("rm", job_id, "--yes"), job_id, "running", "--force")
    assert jobs.show(job_id)["state"] == "running"
    done = jobs.altus("rm", job_id, "--yes", "--force")
    assert done.returncode == 0
    assert_one_error_line(jobs.altus("show", job_id), job_id)


def test_rm_asks_first(jobs: Jobs, failed_job: str) -> None:
    declined = jobs.altus("rm", failed_job, input="n\n")
    assert declined.returncode == 1
    assert "Aborted" in declined.stderr
    assert jobs.show(failed_job)["state"] == "failed"
    confirmed = jobs.altus("rm", failed_job, input="y\n")
    assert confirmed.returncode == 0
    assert confirmed.stdout.endswith(f"removed job {failed_job}\n")
    assert json.loads(jobs.altus("list", "--json").stdout) == []


# -- damaged records ---------------------------------------------------------------------------


def test_list_and_show_name_a_damaged_round(jobs: Jobs, failed_job: str) -> None:
    """A `{` in rounds/1.json: the job is listed and shown as damaged, the file named."""
    other = jobs.submit_finished()
    jobs.fixed.touch()
    assert jobs.altus("retry", failed_job).returncode == 0
    assert jobs.wait_until_finished(failed_job)["state"] == "done"
    round_file = Path(jobs.store.removeprefix("file://")) / failed_job / "rounds" / "1.json"
    round_file.write_text("{")
    listed = jobs.altus("list")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert [row.split()[4] for row in rows if row.startswith(failed_job)] == ["damaged"]
    assert [row.split()[4] for row in rows if row.startswith(other)] == ["failed"]
    [note] = listed.stderr.splitlines()
    assert note.startswith("damaged: ")
    assert f"{failed_job}/rounds/1.json is damaged" in note
    shown = jobs.altus("show", failed_job)
    assert shown.returncode == 0, shown.stderr
    assert "state      damaged" in shown.stdout
    assert "damaged files (1)" in shown.stdout
    assert f"{failed_job}/rounds/1.json is damaged" in shown.stdout
    assert jobs.show(failed_job)["counts"]["failed"] == 1  # round 0's outcome stands
