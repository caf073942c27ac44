"""``examples/dti.ipynb`` runs top to bottom in the environment ``altus notebook start
examples/`` builds for it, against the demo cohort on altus's own S3 server.

The environment comes from the real command (``examples/requirements.txt``,
JupyterLab added), and the notebook is executed headlessly by that
environment's Python, its kernel too, as JupyterLab would run it: with the
notebook's folder as the working folder and the caller's environment, in
which the notebook has to find the S3 server itself (no ``AWS_*`` pointing at
it), as after ``altus demo --keep``. The executed notebook is kept at
``test-artifacts/dti.ipynb`` for a person to look at its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

import altus.data
import altus.notebook

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLES = REPOSITORY / "examples"
NOTEBOOK = EXAMPLES / "dti.ipynb"
ARTIFACT = REPOSITORY / "test-artifacts" / "dti.ipynb"
BUCKET = "s3://altus-demo"
BUILD_TIMEOUT = 600  # a cold uv cache downloads JupyterLab, DIPY and matplotlib

# A cell appended to the executed copy: which Python ran the kernel, and from where it
# imported DIPY and altus. Removed before the copy is kept.
PROBE = "import sys, dipy, altus; print(sys.executable, dipy.__file__, altus.__file__, sep='\\n')"

# Run by the environment's Python: append the probe, execute the notebook in its own folder
# (the kernel's working folder under JupyterLab too, where `import dti_at_scale` works), and
# write the result even when a cell fails (its traceback is then in the output). Not
# `python -m jupyter nbconvert`: `jupyter` runs the first `jupyter-nbconvert` on PATH, which
# may be another Python's, and so would its kernel be.
EXECUTE = """
import sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient
source, target, probe = sys.argv[1:]
notebook = nbformat.read(source, as_version=4)
notebook.cells.append(nbformat.v4.new_code_cell(probe))
client = NotebookClient(
    notebook, timeout=600, kernel_name="python3",
    resources={"metadata": {"path": str(Path(source).parent)}},
)
try:
    client.execute()
finally:
    nbformat.write(notebook, target)
"""


@pytest.fixture
def demo_cohort() -> Iterator[list[str]]:
    """Two subjects of the demo cohort in ``s3://altus-demo`` on altus's default S3 server.

    The server is the one ``altus demo --keep`` leaves running; this test's fresh XDG
    folders make it private to the test. ``AWS_*`` point at it only while the
    cohort is written, so the notebook must find it as a user's would. Stopped at the end.
    """
    from altus.demo import cohort
    from altus.storage import server

    info = server.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in info.environment().items():
                patch.setenv(name, value)
            altus.data.make_bucket(BUCKET, exist_ok=True)
            subjects = cohort.subject_ids(2)
            for subject in subjects:
                cohort.write_subject(subject, BUCKET)
        yield subjects
    finally:
        server.stop(timeout=5)


def test_the_notebook_is_saved_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"


def test_without_a_server_the_first_cell_says_to_run_the_demo_first() -> None:
    """No ``AWS_ENDPOINT_URL`` and no server in this test's fresh XDG folders."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    with pytest.raises(RuntimeError, match="run `altus demo --keep` in a terminal"):
        exec(first.source, {})


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT + 300)
def test_the_dti_notebook_runs_in_the_environment_altus_builds_for_it(
    demo_cohort: list[str], tmp_path: Path
) -> None:
    try:
        started = _altus("notebook", "start", str(EXAMPLES), "--name", "dti",
                         "--idle-timeout", "0", "--json")  # fmt: skip
        python = Path(json.loads(started.stdout)["python"])
        assert python != Path(sys.executable), "examples/ has a spec: altus builds its env"
        _altus("notebook", "stop", "dti")
    finally:
        altus.notebook.stop_all()

    executed = tmp_path / "dti.ipynb"
    done = subprocess.run(
        [str(python), "-c", EXECUTE, str(NOTEBOOK), str(executed), PROBE],
        cwd=EXAMPLES, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    notebook = nbformat.read(executed, as_version=4) if executed.exists() else None
    if notebook is not None:
        probe = notebook.cells.pop()
        ARTIFACT.parent.mkdir(exist_ok=True)
        nbformat.write(notebook, ARTIFACT)
    assert done.returncode == 0, f"{_errors(notebook)}\n{done.stderr[-3000:]}"
    assert notebook is not None

    kernel_python, dipy_file, altus_file = _text(probe).splitlines()
    env = python.parent.parent
    assert Path(kernel_python) == python, "the kernel ran in the built environment"
    assert Path(dipy_file).is_relative_to(env)
    assert Path(altus_file).is_relative_to(REPOSITORY / "src"), "altus from this checkout"

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "at http://127.0.0.1:" in _text(code[0]), "the notebook found the server itself"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the maps and the FA histogram"
    last = _text(code[-1])
    assert all(f"{subject}: median FA" in last for subject in demo_cohort), last

    from altus.storage import server

    info = server.status()
    assert info is not None
    with pytest.MonkeyPatch.context() as patch:
        for name, value in info.environment().items():
            patch.setenv(name, value)
        written = {e.key for e in altus.data.ls(f"{BUCKET}/derivatives/dti/", recursive=True)}
    expected = {f"derivatives/dti/{s}/{m}.nii.gz" for s in demo_cohort for m in ("FA", "MD")}
    assert expected <= written


def _altus(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``altus`` command; a notebook start may build the environment first."""
    done = subprocess.run(
        [sys.executable, "-m", "altus.cli.main", *args],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"altus {' '.join(args)}: {done.stderr}"
    return done


def _text(cell: Any) -> str:
    """What a cell printed (stdout)."""
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _errors(notebook: Any) -> str:
    """The tracebacks of the cells that failed, for the assertion message."""
    if notebook is None:
        return "no executed notebook was written"
    return "\n".join(
        f"{o.ename}: {o.evalue}"
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "error"
    )
