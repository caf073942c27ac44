"""A result handed out survives a power cut (issue 12, item 10).

The client makes the record durable (``syncfs`` of the store's filesystem)
after it read the status files that vouch for a result and before it hands
that result out: through ``results()``, ``result()`` or a future. Traced for
real with ``strace`` on a client process and its local pool; a second
``results()`` with nothing new costs no second sync.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT = """
import os, sys
from concurrent.futures import as_completed
import altus

def square(x):
    return x * x

knot = altus.Knot(square, workers=2, store=sys.argv[1])
job = knot.map(range(40), chunksize=5)
values = job.results()
os.write(1, f"RESULTS {sum(values)}\\n".encode())
job.results()
os.write(1, f"AGAIN {job.result(3)}\\n".encode())
futures = knot.map(range(10), chunksize=2).futures
first = next(as_completed(futures)).result()
os.write(1, f"FUTURE {first}\\n".encode())
"""


def trace(tmp_path: Path) -> list[str]:
    """The client's own system calls (not its pool's) of interest, in order."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    out = tmp_path / "strace.txt"
    subprocess.run(
        [
            "strace",
            "-f",
            "-s",
            "300",
            "-e",
            "trace=syncfs,openat,write,clone,clone3",
            "-o",
            str(out),
            sys.executable,
            str(script),
            str(tmp_path / "jobs"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = out.read_text().splitlines()
    client = {lines[0].split()[0]}  # the main thread, then every thread it starts
    threading: set[str] = set()  # client threads inside a clone of a thread
    calls = []
    for line in lines:
        tid, call = line.split(None, 1)
        if tid not in client:
            continue
        if re.match(r"(<\.\.\. )?clone3?\b", call):
            if "CLONE_THREAD" in call:
                threading.add(tid)
            new_thread = re.search(r"= (\d+)$", call)
            if new_thread and tid in threading:
                client.add(new_thread[1])
                threading.discard(tid)
            continue
        calls.append(call)
    return calls


def position(calls: list[str], pattern: str, start: int = 0) -> int:
    for index in range(start, len(calls)):
        if re.search(pattern, calls[index]):
            return index
    raise AssertionError(f"no call matching {pattern!r} after call {start}")


@pytest.mark.slow
def test_results_are_durable_before_they_are_handed_out(tmp_path: Path) -> None:
    calls = trace(tmp_path)
    handed = position(calls, r'^write\(1, "RESULTS')
    read_statuses = [i for i in range(handed) if re.search(r"openat\(.*/status/", calls[i])]
    assert read_statuses, "the client read no status file before handing out results"
    syncs = [i for i in range(handed) if calls[i].startswith("syncfs(")]
    assert syncs, "results were handed out without any sync"
    assert syncs[-1] > read_statuses[-1], (
        "results were handed out without a sync after the last status file was read"
    )
    again = position(calls, r'^write\(1, "AGAIN', handed)
    assert not any(call.startswith("syncfs(") for call in calls[handed:again]), (
        "a second results() with nothing new synced again"
    )
    future = position(calls, r'^write\(1, "FUTURE', again)
    assert any(call.startswith("syncfs(") for call in calls[again:future]), (
        "a future got its result before the record was synced"
    )
