"""``backend="slurm"``: one Slurm job array per launch, one element per chunk.

Each element runs ``python -m altus.batch.supervisor RECORD CHUNK --round R``
(``supervisor.py``): it retries a chunk's dead workers under the record's
rule and resumes from the record when Slurm requeues it (``--requeue``: node
failure, preemption). The job script is written into the record
(``backend/slurm-r<R>.sh``) and kept for inspection; the array's job id goes
into ``backend/slurm.json``, so any process that can read the record can
watch (``squeue``) or cancel (``scancel``) it.

Options, from ``Knot(func, backend="slurm", **options)``: ``partition``,
``account``, ``qos``, ``throttle`` (elements at once, ``%N``),
``sbatch_options`` (a list of extra ``--flag=value`` strings), ``python``
(the interpreter on the nodes; default: the client's) or ``env`` (a spec
altus builds into a cached environment, as ``altus env build`` does; it must
have altus and cloudpickle, and sit on a filesystem the nodes see), ``log_dir`` (where
Slurm writes each element's own output; default: the record's folder for a
``file://`` record, else this machine's state folder). ``resources`` map to
``--cpus-per-task``, ``--mem``, ``--gres=gpu:N`` and ``--time``.

A round runs until every element has ended: a stopped or suspended element
may resume and commit, so only Slurm's final states count as ended, and an
squeue that does not answer is an error, never "nothing runs".

The record must live where every node can read it: a shared filesystem, or
``s3://``. Nothing here checks that; a worker that cannot read it fails its
element, which ``altus jobs show`` reports with Slurm's state.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from altus.batch.backends.base import (
    Backend,
    Launch,
    Resources,
    cancel_on_interrupt,
    worker_environment,
)
from altus.batch.record import JobRecord
from altus.config import load_settings
from altus.detached import private_folder
from altus.errors import BackendError, BackendUnavailable

__all__ = ["SlurmBackend", "job_script"]

STATE = "slurm"
COMMAND_TIMEOUT = 60
_ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REVOKED", "TIMEOUT",
}  # fmt: skip
"""Element states with no process left: squeue shows COMPLETING until Slurm has killed
them all. Any other state, one this list does not name too, may still run or resume
(STOPPED, SUSPENDED, REQUEUE_HOLD, SPECIAL_EXIT...) and commit."""
_FORGOTTEN = "Invalid job id specified"
"""What squeue says when it knows none of the ids (they ended over MinJobAge ago)."""


class SlurmBackend(Backend):
    name: ClassVar[str] = "slurm"

    def launch(self, launch: Launch) -> None:
        if launch.n_chunks == 0:
            return  # an empty map: nothing to run, and Slurm has no empty arrays
        record = launch.record
        options = dict(record.spec.backend_options)
        python = _python(options)
        script = job_script(record, launch.round, launch.resources, options, python)
        key = f"backend/slurm-r{launch.round}.sh"
        record.store.write(key, script.encode())
        _make_log_dir(record, options)
        last = launch.n_chunks - 1
        throttle = options.get("throttle") or launch.workers
        array = f"0-{last}" + (f"%{int(throttle)}" if throttle else "")
        environment = worker_environment(same_python=python == sys.executable)
        output = _sbatch(["--parsable", f"--array={array}"], script, environment)
        job_id = output.strip().split(";")[0]
        state = record.backend_state(STATE) or {"rounds": {}}
        state["rounds"][str(launch.round)] = job_id
        record.write_backend_state(STATE, state)
        cancel_on_interrupt(self, record, launch.round)

    def cancel(self, record: JobRecord, round_: int) -> None:
        job_id = _job_ids(record).get(round_)
        if job_id:
            _run(["scancel", job_id], check=False)

    def is_active(self, record: JobRecord) -> bool:
        """Whether an element of any round may still run; ``BackendError`` when Slurm cannot
        say (an unanswered squeue is no proof that nothing runs: a removal must not go on)."""
        return any(state not in _ENDED for state, _reason in self._states(record).values())

    def why_inactive(self, record: JobRecord) -> str | None:
        states = self._states(record)
        ended = {f"{element} {state}" for element, (state, _r) in states.items()}
        if not ended:
            return "Slurm no longer knows the job's array (it ended a while ago)"
        return "Slurm ended its elements: " + ", ".join(sorted(ended)[:5])

    def describe(self, record: JobRecord) -> str | None:
        """Slurm's view: the array's job ids and each element's state and reason."""
        ids = _job_ids(record)
        if not ids:
            return None
        try:
            states = self._states(record)
        except BackendError as exc:
            return str(exc)
        shown = [f"{element} {state} ({reason})" for element, (state, reason) in states.items()]
        jobs = ", ".join(ids.values())
        return f"slurm job {jobs}: " + ("; ".join(shown[:10]) or "no longer in squeue")

    def _states(self, record: JobRecord) -> dict[str, tuple[str, str]]:
        """``element → (state, reason)`` of every element squeue still lists."""
        ids = _job_ids(record)
        if not ids:
            return {}
        done = _run(
            ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r",
             f"--jobs={','.join(ids.values())}"],
            check=False,
        )  # fmt: skip
        if done.returncode != 0 and _FORGOTTEN not in done.stderr:
            message = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise BackendError(f"Slurm cannot say whether the job's elements still run: {message}")
        states = {}
        for line in done.stdout.splitlines():
            element, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            if element:
                states[element] = (state, reason)
        return states


def job_script(
    record: JobRecord, round_: int, resources: Resources, options: dict[str, Any], python: str
) -> str:
    """The sbatch script of one launch: directives, then the supervisor of element N."""
    log_dir = _log_dir(record, options)
    directives = [
        f"--job-name=altus-{record.id}"[:120],
        f"--output={log_dir}/%A_%a.out",
        "--requeue",
        "--open-mode=append",
        *_resource_flags(resources),
        *(f"--{name}={options[name]}" for name in ("partition", "account", "qos") if options.get(name)),
        *[str(flag) for flag in options.get("sbatch_options", ())],
    ]  # fmt: skip
    command = [python, "-m", "altus.batch.supervisor", record.url]
    lines = ["#!/bin/bash", *(f"#SBATCH {flag}" for flag in directives)]
    lines += [
        "# Written by altus: one element per chunk of the job record.",
        f'exec {shlex.join(command)} "$SLURM_ARRAY_TASK_ID" --round {round_}',
    ]
    return "\n".join(lines) + "\n"


def _python(options: dict[str, Any]) -> str:
    """``python``, else the Python of an altus environment built (or cached) from ``env``,
    else the client's own."""
    if options.get("python"):
        return str(options["python"])
    if options.get("env"):
        from altus import envs

        return str(envs.build(envs.read_spec(options["env"]), quiet=True).python)
    return sys.executable


def _resource_flags(resources: Resources) -> list[str]:
    flags = [f"--cpus-per-task={resources.cpus}"]
    if resources.memory:
        flags.append(f"--mem={math.ceil(resources.memory / (1 << 20))}M")
    if resources.gpus:
        flags.append(f"--gres=gpu:{resources.gpus}")
    if resources.time:
        minutes = math.ceil(resources.time / 60)
        # Slurm checks limits about every 30 s: warn early enough to requeue before the kill.
        flags += [f"--time={minutes}", f"--signal=B:USR1@{min(90, minutes * 30)}"]
    return flags


def _make_log_dir(record: JobRecord, options: dict[str, Any]) -> None:
    """The elements' output (tracebacks, a task's stray prints) is as private as the
    record: beside a ``file://`` record it is the record's own ``backend/`` folder (the
    store's mode); for other stores altus's state folder, 0700; a ``log_dir`` the user
    names keeps the modes they gave it."""
    folder = Path(_log_dir(record, options))
    if options.get("log_dir") or record.url.startswith("file://"):
        folder.mkdir(parents=True, exist_ok=True)
    else:
        private_folder(folder)


def _log_dir(record: JobRecord, options: dict[str, Any]) -> str:
    if options.get("log_dir"):
        return str(options["log_dir"])
    if record.url.startswith("file://"):
        return record.url.removeprefix("file://").rstrip("/") + "/backend"
    return str(load_settings().paths.state_dir / "slurm-logs")


def _job_ids(record: JobRecord) -> dict[int, str]:
    state = record.backend_state(STATE) or {}
    return {int(round_): str(job) for round_, job in state.get("rounds", {}).items()}


def _sbatch(arguments: list[str], script: str, environment: dict[str, str]) -> str:
    """Submit ``script`` on stdin (Slurm keeps its own copy, the record another); the
    elements get ``environment`` (sbatch exports the caller's by default)."""
    done = _run(["sbatch", *arguments], check=False, env=environment, stdin=script)
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackendError(f"Slurm refused the job array: {message}")
    return done.stdout


def _run(
    command: list[str], *, check: bool, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        raise BackendUnavailable(
            f"Slurm is not installed on this machine (no {command[0]} on PATH)"
        )
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=check,
            env=env or dict(os.environ), input=stdin,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"{command[0]} did not answer within {COMMAND_TIMEOUT} s") from exc
