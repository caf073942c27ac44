"""Job records, pool logs and state are their owner's alone, tried as a real second user.

A map runs in a child process whose XDG homes (and so its default store, its
pool's state folder and logs) are below ``shared_tmp``, a folder the other user
can reach; only the modes altus sets can keep that user out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import OtherUser

SECRET = "hunter2-correct-horse"

MAP_SCRIPT = f"""
import sys
from altus import Knot

def leak(x):
    print("password: {SECRET}")
    print("stderr too: {SECRET}", file=sys.stderr)
    return {{"api_key": "{SECRET}", "x": x}}

job = Knot(leak, name="leaky").map(range(3))
assert job.wait(timeout=120), job.status()
assert job.results()[2]["x"] == 2
print(job.id)
"""


def run_map(homes: Path, **env: str) -> str:
    """Run a leaky map with its XDG homes below ``homes``; the job's id."""
    for folder in ("data", "state", "config", "cache"):
        (homes / folder).mkdir(mode=0o755, exist_ok=True)
        (homes / folder).chmod(0o755)  # as open as a home's usual ~/.local/share
    done = subprocess.run(
        [sys.executable, "-c", MAP_SCRIPT],
        env={
            **os.environ,
            **{f"XDG_{name.upper()}_HOME": str(homes / name) for name in ("data", "state")},
            "XDG_CONFIG_HOME": str(homes / "config"),
            "XDG_CACHE_HOME": str(homes / "cache"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def written_by_altus(homes: Path) -> Iterator[Path]:
    for folder in (homes / "data" / "altus", homes / "state" / "altus"):
        yield folder
        yield from folder.rglob("*")


def test_another_user_can_read_nothing_of_a_job_or_the_pool(
    other_user: OtherUser, shared_tmp: Path
) -> None:
    job_id = run_map(shared_tmp)
    job = shared_tmp / "data" / "altus" / "jobs" / job_id
    assert (job / "spec.json").is_file()
    assert list((job / "logs").iterdir())
    assert (shared_tmp / "state" / "altus" / "local-pool").is_dir()
    paths = list(written_by_altus(shared_tmp))
    files = [str(path) for path in paths if path.is_file()]
    folders = [str(path) for path in paths if path.is_dir()]
    for path in files:
        assert other_user.run(["cat", path]).returncode != 0, path
    for path in folders:
        assert other_user.run(["ls", path]).returncode != 0, path
    found = other_user.run(["grep", "-r", SECRET, str(shared_tmp)])
    assert SECRET not in found.stdout
    assert found.returncode != 0


def test_group_mode_lets_the_store_folders_group_read(
    other_user: OtherUser, shared_tmp: Path
) -> None:
    """With ``[store] mode = "group"`` a member of the store folder's group reads the record."""
    store = shared_tmp / "data" / "altus" / "jobs"
    store.mkdir(parents=True)
    for folder in (store.parent, store):
        os.chown(folder, -1, other_user.gid)
        folder.chmod(0o2750)
    job_id = run_map(shared_tmp, ALTUS_STORE__MODE="group")
    spec = store / job_id / "spec.json"
    assert other_user.run(["cat", str(spec)]).returncode == 0
    logs = other_user.run(["grep", "-r", SECRET, str(store / job_id / "logs")])
    assert SECRET in logs.stdout
    assert oct(spec.stat().st_mode & 0o777) == oct(0o640)


@pytest.mark.parametrize("mode", ["public", ""])
def test_an_unknown_store_mode_is_a_config_error(mode: str, tmp_path: Path) -> None:
    from altus.config import load_settings
    from altus.errors import ConfigError

    (tmp_path / "altus.toml").write_text(f'[store]\nmode = "{mode}"\n')
    with pytest.raises(ConfigError, match=r"altus.toml: \[store\] mode: must be one of"):
        load_settings(cwd=tmp_path)
