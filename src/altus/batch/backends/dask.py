"""``backend="dask"``: chunks as tasks of a Dask cluster, the record still the truth.

``Knot(func, backend="dask", address="tcp://scheduler:8786")`` uses a running
scheduler; without ``address`` the client starts a ``LocalCluster`` (one
process per worker, ``workers`` of them) that lives as long as this process.

Each chunk is one Dask task that runs ``python -m altus.batch.supervisor``
in a child process: a task's output is captured at the file-descriptor level,
which threads of one Dask worker could not share, and a task that crashes its
process takes the child, never the Dask worker. The supervisor retries dead
workers under the record's rule; a Dask worker lost under a chunk
(``KilledWorker``) has the chunk rescheduled by Dask, and the supervisor
resumes it from the record. Tasks are ``fire_and_forget``: on a scheduler of
its own, a job goes on after the client exits, and any process can attach.

A cancel drops the chunks no Dask worker was given yet and leaves running ones
to stop on the round's cancel marker: until their supervisors have exited the
job counts as active, so a removal or a retry never meets their last commit.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
import threading
import time
from typing import Any, ClassVar

from altus.batch.backends.base import Backend, Launch, cancel_on_interrupt, worker_environment
from altus.batch.record import JobRecord
from altus.errors import BackendError

__all__ = ["DaskBackend", "run_chunk_in_child"]

STATE = "dask"
CONNECT_TIMEOUT = 10.0
_UNSTARTED = {"released", "waiting", "no-worker", "queued"}
"""Scheduler states of a key no worker has been given: it can be dropped unrun."""
_ACTIVE = _UNSTARTED | {"processing"}
"""A ``processing`` key's supervisor may be running, and committing, until its task ends."""


def run_chunk_in_child(
    url: str, round_: int, chunk: int, environment: dict[str, str], python: str
) -> int:
    """What a Dask worker runs for one chunk: the supervisor, in a child process."""
    command = [python, "-m", "altus.batch.supervisor", url, str(chunk), "--round", str(round_)]
    from altus.batch.supervisor import die_with_parent

    done = subprocess.run(
        command, env=environment, stdin=subprocess.DEVNULL, check=False,
        preexec_fn=die_with_parent,  # a Dask worker killed under the chunk takes it along
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"altus supervisor of chunk {chunk} exited with {done.returncode}")
    return chunk


class DaskBackend(Backend):
    name: ClassVar[str] = "dask"

    def __init__(self) -> None:
        self._clients: dict[str | None, Any] = {}
        self._lock = threading.Lock()

    def launch(self, launch: Launch) -> None:
        from distributed import fire_and_forget

        record = launch.record
        options = record.spec.backend_options
        client = self._client(options.get("address"), launch.workers)
        python = str(options.get("python") or sys.executable)
        environment = worker_environment()
        keys = [_key(record, launch.round, chunk) for chunk in range(launch.n_chunks)]
        futures = [
            client.submit(
                run_chunk_in_child, record.url, launch.round, chunk, environment, python,
                key=key, pure=False, retries=0,
            )
            for chunk, key in enumerate(keys)
        ]  # fmt: skip
        fire_and_forget(futures)
        _wait_until_scheduled(client, record, launch.round, keys)
        del futures  # the scheduler holds the chunks for fire-and-forget; results are not kept
        state = record.backend_state(STATE) or {"rounds": {}}
        state["address"] = client.scheduler.address
        state["rounds"][str(launch.round)] = keys
        record.write_backend_state(STATE, state)
        cancel_on_interrupt(self, record, launch.round)

    def cancel(self, record: JobRecord, round_: int) -> None:
        """Dask drops the chunks no worker was given yet; a running supervisor stops on the
        round's cancel marker (written before this), and its task stays on the scheduler
        until it has. Cancelling that task in Dask would not stop the supervisor, only make
        the job look stopped while it may still commit (``is_active``)."""
        state = record.backend_state(STATE) or {}
        keys = state.get("rounds", {}).get(str(round_), [])
        client = self._existing_client(state.get("address"))
        if client is not None and keys:
            client.run_on_scheduler(_drop_unstarted, keys=keys)

    def is_active(self, record: JobRecord) -> bool:
        return bool(self._states(record) & _ACTIVE)

    def why_inactive(self, record: JobRecord) -> str | None:
        state = record.backend_state(STATE) or {}
        if self._existing_client(state.get("address")) is None:
            return f"the Dask scheduler at {state.get('address')} cannot be reached"
        return "the Dask scheduler no longer runs any of the job's chunks"

    def describe(self, record: JobRecord) -> str | None:
        states = sorted(self._states(record))
        return "dask tasks: " + (", ".join(states) or "none left on the scheduler")

    def _states(self, record: JobRecord) -> set[str]:
        state = record.backend_state(STATE) or {}
        keys = [key for round_keys in state.get("rounds", {}).values() for key in round_keys]
        client = self._existing_client(state.get("address"))
        if client is None or not keys:
            return set()

        def task_states(dask_scheduler: Any, keys: list[str]) -> list[str]:
            tasks = dask_scheduler.tasks
            return [tasks[key].state for key in keys if key in tasks]

        return set(client.run_on_scheduler(task_states, keys=keys))

    def _client(self, address: str | None, workers: int | None) -> Any:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = _connect(address, workers)
            return client

    def _existing_client(self, address: str | None) -> Any:
        """A client on ``address``: this process's own, or a new connection (attach)."""
        with self._lock:
            for client in self._clients.values():
                if client.scheduler.address == address:
                    return client
        if address is None:
            return None
        try:
            return self._client(address, None)
        except BackendError:
            return None


def _drop_unstarted(dask_scheduler: Any, keys: list[str]) -> int:
    """Forget the keys no worker holds yet, for every client that wants them (the
    fire-and-forget one): in the scheduler's loop, so none is given to a worker meanwhile."""
    tasks = dask_scheduler.tasks
    unstarted = [key for key in keys if key in tasks and tasks[key].state in _UNSTARTED]
    wanting = {client.client_key for key in unstarted for client in tasks[key].who_wants or ()}
    for client in wanting:
        stimulus = f"altus-cancel-{time.time()}"
        dask_scheduler.client_releases_keys(keys=unstarted, client=client, stimulus_id=stimulus)
    return len(unstarted)


def _unscheduled(dask_scheduler: Any, keys: list[str]) -> list[str]:
    """The keys the scheduler does not hold for the fire-and-forget client."""
    tasks = dask_scheduler.tasks
    return [
        key
        for key in keys
        if key not in tasks
        or not any(c.client_key == "fire-and-forget" for c in tasks[key].who_wants)
    ]


def _wait_until_scheduled(client: Any, record: JobRecord, round_: int, keys: list[str]) -> None:
    """Return once the scheduler holds every chunk for the fire-and-forget client (or the
    chunk is already done and released): from then on a client that dies, or another that
    attaches, finds the job running."""
    from altus.batch.failures import unrecorded_tasks

    deadline = time.monotonic() + CONNECT_TIMEOUT
    while keys := client.run_on_scheduler(_unscheduled, keys=keys):
        chunks = [int(key.rpartition("-c")[2]) for key in keys]
        if not any(unrecorded_tasks(record, round_, chunk) for chunk in chunks):
            return
        if time.monotonic() > deadline:
            raise BackendError(
                f"the Dask scheduler did not take the job within {CONNECT_TIMEOUT:g} s"
            )
        time.sleep(0.01)


def _key(record: JobRecord, round_: int, chunk: int) -> str:
    return f"altus-{record.id}-r{round_}-c{chunk}"


def _connect(address: str | None, workers: int | None) -> Any:
    from distributed import Client, LocalCluster

    if address is None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
        atexit.register(cluster.close)
        atexit.register(client.close)  # runs first: the client goes before its cluster
        return client
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise BackendError(
            f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT:g} s"
        ) from exc
    atexit.register(client.close)
    return client
