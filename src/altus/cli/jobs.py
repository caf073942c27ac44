"""``altus jobs``: list, inspect, cancel, retry and remove batch jobs in a store.

Each command is a few lines over ``altus.Job`` and ``altus.jobs``; the library
is imported inside the commands so that loading this group stays cheap.
Errors are not handled here: they reach ``altus.cli.main``, which prints one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from altus.cli.options import json_option
from altus.cli.output import first_line, format_time, print_fields, print_json, print_table
from altus.errors import AltusError

if TYPE_CHECKING:
    from altus.batch.job import Job, JobSummary, TaskErrorInfo, TaskLogs

__all__ = ["jobs"]

STATES = ("pending", "running", "done", "failed", "cancelled")
LOG_TASK_LIMIT = 20
ERROR_ROW_LIMIT = 50

F = TypeVar("F", bound=Callable[..., Any])


def _store_option(command: F) -> F:
    return click.option(
        "--store",
        metavar="URL",
        default=None,
        help="Store holding the job records (default: the batch.store setting, "
        "else the altus data folder).",
    )(command)


def _job_argument(command: F) -> F:
    return click.argument("job_id", metavar="ID")(command)


@click.group()
def jobs() -> None:
    """List, inspect, cancel, retry and remove batch jobs.

    A job is one Knot(func).map(inputs). Its record (spec, results, errors and
    logs) lives in a store and outlives the process that submitted it, so these
    commands work from any shell that can reach the store.
    """


@jobs.command("list")
@_store_option
@json_option
def list_jobs(store: str | None, as_json: bool) -> None:
    """List the jobs in the store, newest first."""
    import altus

    summaries = sorted(altus.jobs(store=store), key=lambda summary: summary.created, reverse=True)
    if as_json:
        print_json([dataclasses.asdict(summary) for summary in summaries])
    elif not summaries:
        click.echo("no jobs in this store", err=True)
    else:
        headers = ("ID", "NAME", "FUNCTION", "BACKEND", "STATE", "DONE", "FAILED", "TASKS")
        print_table((*headers, "CREATED", "HOST"), [_summary_row(s) for s in summaries])
        for summary in summaries:
            for why in summary.damaged:
                click.echo(f"damaged: {why}", err=True)


@jobs.command()
@_job_argument
@_store_option
@json_option
def show(job_id: str, store: str | None, as_json: bool) -> None:
    """Show a job's spec, its task counts by state and its failed tasks."""
    job = _attach(job_id, store)
    state, counts, errors, damaged = job.state(), job.status(), job.errors(), job.damaged
    if as_json:
        spec = dataclasses.asdict(job.spec)
        errors_json = [dataclasses.asdict(error) for error in errors]
        shown = {"spec": spec, "state": state, "counts": counts, "errors": errors_json}
        print_json({**shown, "damaged": damaged})
        return
    print_fields(_spec_fields(job, state, counts))
    if damaged:
        click.echo(f"\ndamaged files ({len(damaged)}): what they hold is left out")
        for why in damaged.values():
            click.echo(why)
    if errors:
        click.echo(f"\nfailed tasks ({len(errors)})")
        rows = [_error_row(error) for error in errors[:ERROR_ROW_LIMIT]]
        print_table(("TASK", "ERROR", "MESSAGE"), rows)
        if len(errors) > ERROR_ROW_LIMIT:
            click.echo(f"... and {len(errors) - ERROR_ROW_LIMIT} more (--json lists them all)")


@jobs.command()
@_job_argument
@click.argument("task", type=click.IntRange(min=0), required=False)
@_store_option
@json_option
def logs(job_id: str, task: int | None, store: str | None, as_json: bool) -> None:
    """Print the captured stdout and stderr of TASK, or of the failed tasks.

    With TASK, its stdout goes to stdout and its stderr to stderr, verbatim.
    Without it, the logs of the failed tasks are shown; if none failed, those
    of the tasks that printed anything. At most 20 tasks are shown, and a note
    on stderr says when there are more.
    """
    job = _attach(job_id, store)
    if task is not None:
        _print_task_logs(job, task, as_json)
        return
    selection, entries, more = _select_logs(job)
    if as_json:
        logs_json = [dataclasses.asdict(entry) for entry in entries]
        print_json({"job": job.id, "selection": selection, "more": more, "logs": logs_json})
        return
    for entry in entries:
        _print_log_block(entry)
    _note_selection(job.id, selection, len(entries), more)


@jobs.command()
@_job_argument
@_store_option
def cancel(job_id: str, store: str | None) -> None:
    """Cancel a job: stop its workers and mark its unfinished tasks cancelled."""
    job = _attach(job_id, store)
    job.cancel()
    click.echo(f"job {job.id}: {job.state()}")


@jobs.command()
@_job_argument
@click.option("--all", "all_tasks", is_flag=True, help="Also rerun cancelled and lost tasks.")
@_store_option
def retry(job_id: str, all_tasks: bool, store: str | None) -> None:
    """Run a job's failed tasks again (with --all, its unfinished ones too), then return.

    Tasks that are done are never rerun. Follow the job with `altus jobs show ID`.
    """
    job = _attach(job_id, store)
    n_tasks = job.resubmit(failed_only=not all_tasks)  # refuses while a round still runs
    if n_tasks == 0:
        click.echo(f"job {job.id}: nothing to retry ({job.state()})")
    else:
        click.echo(f"job {job.id}: resubmitted {n_tasks} task(s)")


@jobs.command()
@_job_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Remove the job even if it is still running.")
@_store_option
def rm(job_id: str, yes: bool, force: bool, store: str | None) -> None:
    """Remove a job's record: its spec, results, errors and logs."""
    job = _attach(job_id, store)
    if not force and job.state() == "running":
        raise AltusError(f"job {job.id} is still running; cancel it first or pass --force")
    if not yes:
        click.confirm(f"Remove job {job.id} with all its results and logs?", abort=True)
    job.remove(force=force)
    click.echo(f"removed job {job.id}")


def _attach(job_id: str, store: str | None) -> Job:
    from altus import Job

    return Job.attach(job_id, store=store)


def _summary_row(summary: JobSummary) -> tuple[object, ...]:
    counts = summary.counts
    return (
        summary.id,
        summary.name or "-",
        summary.function,
        summary.backend,
        summary.state,
        counts.get("done", 0),
        counts.get("failed", 0),
        summary.n_tasks,
        format_time(summary.created, seconds=False),
        summary.host,
    )


def _spec_fields(job: Job, state: str, counts: dict[str, int]) -> list[tuple[str, str]]:
    spec = job.spec
    timeout = "none" if spec.timeout is None else f"{spec.timeout:g}s"
    asked = {key: value for key, value in spec.resources.items() if value is not None}
    resources = ", ".join(f"{key}={value}" for key, value in asked.items()) or "-"
    return [
        ("job", spec.id),
        ("name", spec.name or "-"),
        ("state", state),
        ("function", spec.function),
        ("backend", _backend_line(job)),
        ("resources", resources),
        ("tasks", f"{spec.n_tasks} in {spec.n_chunks} chunks, retries {spec.retries}"),
        ("timeout", timeout),
        ("counts", ", ".join(f"{name} {counts.get(name, 0)}" for name in STATES)),
        ("created", f"{format_time(spec.created)} on {spec.host} by {spec.user}"),
        ("versions", f"altus {spec.altus_version}, python {spec.python}"),
    ]


def _backend_line(job: Job) -> str:
    """The backend's name, and what it says of the job (Slurm: states and pending reasons)."""
    if job.finished():
        return job.spec.backend
    try:
        details = job.backend.describe(job.record)
    except AltusError as exc:
        details = f"cannot ask it: {exc}"
    return f"{job.spec.backend}: {details}" if details else job.spec.backend


def _error_row(error: TaskErrorInfo) -> tuple[object, ...]:
    return (error.task, error.error_type, first_line(error.message))


def _print_task_logs(job: Job, task: int, as_json: bool) -> None:
    entry = job.logs(task)
    if as_json:
        print_json(dataclasses.asdict(entry))
        return
    click.echo(entry.stdout, nl=False)
    click.echo(entry.stderr, nl=False, err=True)


def _select_logs(job: Job) -> tuple[str, list[TaskLogs], bool]:
    """The logs to show without a TASK: failed tasks first, else tasks with output."""
    failed = sorted({error.task for error in job.errors()})
    if failed:
        shown = failed[:LOG_TASK_LIMIT]
        return "failed", [job.logs(task) for task in shown], len(failed) > len(shown)
    found: list[TaskLogs] = []
    for task in range(job.spec.n_tasks):
        entry = job.logs(task)
        if entry.stdout or entry.stderr:
            if len(found) == LOG_TASK_LIMIT:
                return "output", found, True
            found.append(entry)
    return "output", found, False


def _print_log_block(entry: TaskLogs) -> None:
    click.echo(f"==> task {entry.task} <==")
    for stream, text in (("stdout", entry.stdout), ("stderr", entry.stderr)):
        if text:
            click.echo(f"--- {stream} ---")
            click.echo(text, nl=not text.endswith("\n"))
    if not (entry.stdout or entry.stderr):
        click.echo("(no output captured)")


def _note_selection(job_id: str, selection: str, shown: int, more: bool) -> None:
    kind = "failed tasks" if selection == "failed" else "tasks with output"
    if shown == 0:
        click.echo(f"job {job_id}: no failed tasks and no captured output", err=True)
    elif more:
        hint = f"`altus jobs logs {job_id} TASK` shows any one task"
        click.echo(f"showing the first {shown} {kind}; there are more ({hint})", err=True)
    elif selection == "output":
        click.echo(f"no failed tasks; showed the {shown} {kind}", err=True)
