"""Every error altus raises on purpose.

Errors from the libraries underneath (pickle, subprocess, the filesystem) are
translated at the boundary with ``raise X(...) from exc`` so that a user, or
the CLI, only ever has to catch ``AltusError``. Storage keeps the built-in
``FileNotFoundError`` and ``PermissionError`` where they fit.

::

    AltusError
     ├── ConfigError              a setting or settings file is invalid
     ├── BackendError             a backend cannot start, watch or cancel workers
     │    └── BackendUnavailable  its extra or its engine is not installed here
     ├── StoreError               a store URL is unusable
     │    ├── ServerError         the local S3 server cannot be started or stopped
     │    ├── UnsafeKeyError      an object key would land outside the destination folder
     │    └── LayoutError         a dataset lacks a file its layout needs (altus demo --data)
     ├── RecordError              a job record is missing, damaged or too new
     │    ├── RecordDamaged       one file of a record cannot be read as what it is
     │    └── JobNotFound         no record with that id in the store
     │         └── JobRemoved     the job's record was removed (while a handle watched it)
     ├── SubmitError              the function or an input cannot be sent to a worker
     ├── JobLost                  nothing is running the job's unfinished tasks any more
     ├── JobBusy                  a round still runs (or its workers still stop): not now
     ├── EnvError                 an environment cannot be read, built or found
     ├── NotebookError            a notebook server cannot be started, reached or stopped
     └── TaskError                a task did not produce a result
          ├── TaskFailed          the function raised and the exception cannot be rebuilt
          ├── TaskTimeout         the task ran past the knot's timeout
          ├── WorkerDied          the worker process died under the task, past its retries
          └── TaskCancelled       the job was cancelled before the task finished
"""

from __future__ import annotations

__all__ = [
    "AltusError",
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "EnvError",
    "JobBusy",
    "JobLost",
    "JobNotFound",
    "JobRemoved",
    "LayoutError",
    "NotebookError",
    "RecordDamaged",
    "RecordError",
    "ServerError",
    "StoreError",
    "SubmitError",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskTimeout",
    "UnsafeKeyError",
    "WorkerDied",
]


class AltusError(Exception):
    """The root of every error altus raises on purpose."""


class ConfigError(AltusError):
    """A setting, an environment variable or a settings file is invalid."""


class BackendError(AltusError):
    """A backend could not start, watch or cancel its workers."""


class BackendUnavailable(BackendError):
    """The backend's Python extra or its engine is missing on this machine."""


class StoreError(AltusError):
    """A store URL cannot be used (unknown scheme, unreachable, not writable)."""


class ServerError(StoreError):
    """The local S3 server (``altus data serve``) could not be started, found or stopped."""


class UnsafeKeyError(StoreError):
    """An object key that cannot be written below the destination folder as it is."""


class LayoutError(StoreError):
    """A dataset lacks a file that its layout (HCP's, for ``altus demo --data``) needs."""


class RecordError(AltusError):
    """A job record is damaged, incomplete or written by a newer altus."""


class RecordDamaged(RecordError):
    """One file of a job record cannot be read as what it is; ``key`` names it in the record.

    Damage affects only what that file holds: readers name it and go on with the rest.
    """

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class JobNotFound(RecordError):
    """No job record with the given id exists in the store."""


class JobRemoved(JobNotFound):
    """The job's record was removed; a handle on it has nothing left to wait for."""


class SubmitError(AltusError):
    """The function or one of its inputs cannot be pickled for the workers."""


class JobLost(AltusError):
    """The job has unfinished tasks but nothing is running them any more."""


class JobBusy(AltusError):
    """A round of the job still runs, or the workers of a cancelled one have not stopped:
    another round cannot start (nor the record go) until no worker may still write."""


class EnvError(AltusError):
    """An environment spec cannot be read, its environment cannot be built, or none matches a name.

    A failed resolve or build carries the resolver's (or postBuild's) own words, condensed so that
    the first line of the message says what went wrong.
    """


class NotebookError(AltusError):
    """A notebook server could not be started, reached or stopped, or was asked for wrongly."""


class TaskError(AltusError):
    """A task did not produce a result; ``task`` is its index in the input."""

    def __init__(self, message: str, *, task: int | None = None, traceback: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.remote_traceback = traceback

    def __str__(self) -> str:
        message = super().__str__()
        if self.remote_traceback:
            return f"{message}\n\nRemote traceback:\n{self.remote_traceback}"
        return message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_task_error, (type(self), self.args[0], self.task, self.remote_traceback))


def _rebuild_task_error(
    cls: type[TaskError], message: str, task: int | None, traceback: str
) -> TaskError:
    return cls(message, task=task, traceback=traceback)


class TaskFailed(TaskError):
    """The function raised an exception that could not be rebuilt in this process."""


class TaskTimeout(TaskError):
    """The task ran longer than the knot's ``timeout``."""


class WorkerDied(TaskError):
    """The worker process died while running the task, more often than ``retries`` allows."""


class TaskCancelled(TaskError):
    """The job was cancelled before this task finished."""
