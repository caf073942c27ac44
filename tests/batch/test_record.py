"""The job record layout: specs, atomic creation, commits and damage, without any worker."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from altus.batch.record import (
    FAILURE_FIELDS,
    FORMAT,
    BatchName,
    Commit,
    JobRecord,
    JobSpec,
    new_job_id,
)
from altus.errors import JobNotFound, RecordError
from altus.storage import LocalStore, Store


@pytest.fixture
def root(tmp_path: Path) -> Store:
    store = LocalStore(tmp_path / "store")
    store.make_root()  # a write never makes a store's own root
    return store


@pytest.fixture
def spec() -> JobSpec:
    return JobSpec(
        id="fit-20250101-120000-abcd",
        name="fit",
        function="lab.models.fit",
        backend="local",
        n_tasks=10,
        bounds=(0, 3, 6, 10),
        calling="star",
        retries=3,
        timeout=12.5,
        workers=4,
        resources={"cpus": 2, "memory": 1 << 30, "gpus": 0, "time": None},
        backend_options={"partition": "short"},
        created=1735732800.25,
        host="node-1",
        user="ada",
        altus_version="0.1.0",
        python="3.11.7",
    )


def make(root: Store, spec: JobSpec) -> JobRecord:
    chunks = [f"chunk {k}".encode() for k in range(spec.n_chunks)]
    record = JobRecord.create(root, spec, b"the function", chunks)
    assert record is not None
    return record


def commit_tasks(record: JobRecord, name: BatchName, tasks: list[int]) -> bool:
    n = len(tasks)
    commit = Commit(tasks=tasks, start=[0.0] * n, duration=[0.0] * n, peak_memory=[0] * n)
    return record.commit(name, commit, b"results of " + str(name).encode())


# -- the spec ---------------------------------------------------------------------------------


def test_spec_round_trips_through_json(spec: JobSpec) -> None:
    again = JobSpec.from_json(spec.to_json(), where="spec.json")
    assert again == spec
    assert again.n_chunks == 3
    assert again.format == FORMAT


def test_spec_json_is_plain_readable_json(spec: JobSpec) -> None:
    fields = json.loads(spec.to_json())
    assert fields["bounds"] == [0, 3, 6, 10]
    assert fields["function"] == "lab.models.fit"
    assert fields["format"] == FORMAT


def test_spec_from_a_newer_format_is_refused(spec: JobSpec) -> None:
    newer = replace(spec, format=FORMAT + 1).to_json()
    with pytest.raises(RecordError, match=r"where/spec\.json.*newer"):
        JobSpec.from_json(newer, where="where/spec.json")


def test_spec_from_an_older_format_is_refused(spec: JobSpec) -> None:
    older = replace(spec, format=FORMAT - 1).to_json()
    with pytest.raises(RecordError, match=r"where/spec\.json.*format 1.*older altus"):
        JobSpec.from_json(older, where="where/spec.json")


@pytest.mark.parametrize(
    "data", [b"", b'{"id": "x"', b"[]", b'{"id": "x"}', b"\xff\xfe not json"], ids=repr
)
def test_damaged_spec_is_a_record_error_naming_it(data: bytes) -> None:
    with pytest.raises(RecordError, match=r"somewhere/spec\.json") as caught:
        JobSpec.from_json(data, where="somewhere/spec.json")
    assert not isinstance(caught.value, JobNotFound)


# -- creating and opening ----------------------------------------------------------------------


def test_created_record_opens_with_the_same_parts(root: Store, spec: JobSpec) -> None:
    make(root, spec)
    record = JobRecord.find(root, spec.id)
    assert record.spec == spec
    assert record.function_blob() == b"the function"
    assert [record.input_blob(k) for k in range(3)] == [b"chunk 0", b"chunk 1", b"chunk 2"]
    assert JobRecord.open(root.child(spec.id)).spec == spec


def test_inputs_are_one_file_per_chunk(root: Store, spec: JobSpec) -> None:
    record = make(root, spec)
    assert sorted(record.store.children("inputs")) == ["000000.pkl", "000001.pkl", "000002.pkl"]


def test_create_refuses_an_existing_job_id(root: Store, spec: JobSpec) -> None:
    """Two jobs that draw the same id must not write into one record."""
    make(root, spec)
    second = replace(spec, name="other", n_tasks=1, bounds=(0, 1))
    assert JobRecord.create(root, second, b"another function", [b"other inputs"]) is None
    record = JobRecord.find(root, spec.id)
    assert record.spec == spec
    assert record.function_blob() == b"the function"
    assert record.input_blob(0) == b"chunk 0"


def test_store_create_lets_exactly_one_writer_win(root: Store) -> None:
    assert root.create("status/batch.json", b"first") is True
    assert root.create("status/batch.json", b"second") is False
    assert root.read("status/batch.json") == b"first"
    assert not [name for name in root.children("status") if name.startswith(".tmp-")]


def test_a_batch_is_committed_once(root: Store, spec: JobSpec) -> None:
    record = make(root, spec)
    name = BatchName(0, 1, 0, "b0")
    assert commit_tasks(record, name, [3, 4]) is True
    assert commit_tasks(record, name, [3, 4, 5]) is False
    assert list(record.read_status(str(name)).tasks) == [3, 4]
    assert record.recorded_tasks(0) == {3, 4}


@pytest.mark.parametrize("tasks", [[], [5], [3, 4, 5], [9, 2, 3, 4, 8, 1], [0, 2, 4]], ids=str)
def test_status_round_trips_in_task_order(root: Store, spec: JobSpec, tasks: list[int]) -> None:
    record = make(root, replace(spec, bounds=(0, 10)))  # one chunk: a batch holds its own tasks
    commit = Commit(
        tasks=tasks,
        clock=1_700_000_000.25,
        start=[1234.5 + t for t in tasks],
        duration=[t / 10 for t in tasks],
        peak_memory=[t << 33 for t in tasks],
        failures={"2": dict.fromkeys(FAILURE_FIELDS, "raised")} if 2 in tasks else {},
        output={str(t): [t, 0] for t in tasks[:1]},
    )
    record.commit(BatchName(0, 0, 0, "b0"), commit, b"")
    status = record.read_status("r0-c000000-a0-b0")
    assert list(status.tasks) == tasks
    assert status.clock == commit.clock
    assert list(status.start) == commit.start
    assert list(status.duration) == commit.duration
    assert list(status.peak_memory) == commit.peak_memory
    assert status.failures == commit.failures
    assert status.output == commit.output
    assert status.pid == os.getpid()


def test_recorded_tasks_are_per_round(root: Store, spec: JobSpec) -> None:
    record = make(root, spec)
    commit_tasks(record, BatchName(0, 0, 0, "b0"), [0, 1])
    commit_tasks(record, BatchName(0, 2, 1, "b0"), [7, 8])
    round_ = 1
    assert record.add_round(round_, [[1, 8]])
    assert not record.add_round(round_, [[1]])  # one process creates a round
    commit_tasks(record, BatchName(round_, 0, 0, "b0"), [8])
    assert record.recorded_tasks(0) == {0, 1, 7, 8}
    assert record.recorded_tasks(round_) == {8}
    assert record.rounds() == [0, 1]
    assert record.chunk_tasks(1, 0) == [1, 8]


def test_unknown_id_is_job_not_found_naming_it(root: Store) -> None:
    with pytest.raises(JobNotFound, match="fit-19990101-000000-0000"):
        JobRecord.find(root, "fit-19990101-000000-0000")


@pytest.mark.parametrize("job_id", ["", "../outside", "a/b", ".hidden"])
def test_ids_that_are_not_a_record_name_are_not_found(root: Store, job_id: str) -> None:
    with pytest.raises(JobNotFound):
        JobRecord.find(root, job_id)


@pytest.mark.parametrize("key", ["function.pkl", "inputs/000001.pkl"])
def test_missing_part_is_a_record_error_naming_it(root: Store, spec: JobSpec, key: str) -> None:
    record = make(root, spec)
    record.store.delete(key)
    with pytest.raises(RecordError, match=re.escape(key)):
        record.function_blob() if key == "function.pkl" else record.input_blob(1)


def test_damaged_status_file_is_a_record_error_naming_it(root: Store, spec: JobSpec) -> None:
    record = make(root, spec)
    record.store.write("status/r0-c000000-a0-b0.json", b'{"tasks": [0')
    with pytest.raises(RecordError, match=r"status/r0-c000000-a0-b0\.json"):
        record.recorded_tasks(0)


# -- names and chunks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [BatchName(0, 0, 0, "b0"), BatchName(3, 12345, 2, "b17"), BatchName(1, 4, 1, "died7")]
)
def test_batch_names_round_trip(name: BatchName) -> None:
    assert BatchName.parse(str(name)) == name


@pytest.mark.parametrize("stem", ["", "r0-c1", "x0-c000001-a0-b0", "r0-c000001-a0-zz", "r-c-a-b"])
def test_other_names_are_not_batches(stem: str) -> None:
    assert BatchName.parse(stem) is None


def test_chunks_follow_the_bounds(root: Store, spec: JobSpec) -> None:
    record = make(root, spec)
    assert [list(record.chunk_tasks(0, k)) for k in range(3)] == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8, 9],
    ]
    assert [record.input_chunk_of(task) for task in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]


def test_job_ids_are_readable_and_sortable() -> None:
    job_id = new_job_id("Fit Subject/v2!")
    assert re.fullmatch(r"fit-subject-v2-\d{8}-\d{6}-[0-9a-f]{4}", job_id)
    assert new_job_id("???").startswith("job-")
