"""``altus demo`` end to end: its own S3 server, a simulated cohort, DTI on every subject.

The demo runs as a user runs it (the real ``altus`` command in a child
process), with the fresh XDG folders every test gets, so the S3 server it
starts is its own. The recovered FA maps are checked against each subject's
ground truth here, independently of the demo's own check.
"""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from altus.demo import cohort
from slurm_cluster import slurm_cluster_env

if TYPE_CHECKING:
    from tests.conftest import RunAltus

    from altus.storage.server import ServerInfo

__all__ = ["slurm_cluster_env"]  # the session fixture, used here by name

FA_TOLERANCE = 0.03
"""Median |fitted FA - true FA| over a subject's brain; measured 0.016-0.020 at SNR 25-40
(the b0s and the b = 1000 shell, as the pipeline fits)."""

pytestmark = pytest.mark.slow


def read_nifti(url: str, environment: dict[str, str]) -> np.ndarray:
    import nibabel as nib

    import altus.data

    with pytest.MonkeyPatch.context() as patch:
        for variable, value in environment.items():
            patch.setenv(variable, value)
        with altus.data.open(url) as stream:
            blob = gzip.decompress(stream.read())
    return np.asanyarray(nib.Nifti1Image.from_bytes(blob).dataobj)


def demo_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_demo_writes_fitted_maps_close_to_the_truth_then_reuses_the_cohort(
    run_altus: RunAltus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from altus.storage import server

    monkeypatch.chdir(tmp_path)
    first = demo_json(run_altus("demo", "--subjects", "3", "--json"))
    assert first["ok"] is True
    assert first["cohort_written"] == 3
    assert first["server_left_running"] is False
    assert server.status() is None, "the demo stops the server it started"
    subjects = ["990001", "990002", "990003"]
    assert first["subjects"] == subjects
    assert first["failures"] == {}
    assert all(error <= FA_TOLERANCE for error in first["fa_errors"].values())
    assert first["speedup"] > 1.0

    table = tmp_path / "altus-demo" / "dti_summary.csv"
    rows = list(csv.DictReader(table.open()))
    assert [row["subject"] for row in rows] == subjects
    assert {"brain_voxels", "mean_fa", "mean_md", "seconds", "fa_error"} <= set(rows[0])
    assert all(int(row["brain_voxels"]) > 30_000 for row in rows)
    figure = tmp_path / "altus-demo" / "dti_summary.png"
    assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert figure.stat().st_size > 20_000
    assert not list((tmp_path / "altus-demo").glob("*.partial"))

    # Again with --keep: the cohort is still in the bucket, and the server stays up.
    second = demo_json(run_altus("demo", "--subjects", "3", "--keep", "--json"))
    assert second["cohort_written"] == 0
    assert second["server_left_running"] is True
    info = server.status()
    assert info is not None
    try:
        check_maps_in_bucket(info, subjects, second["output"])  # type: ignore[arg-type]
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["slurm", "dask"])
def test_the_demo_runs_on_slurm_and_on_dask(
    backend: str,
    request: pytest.FixtureRequest,
    run_altus: RunAltus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = request.getfixturevalue("slurm_cluster_env") if backend == "slurm" else {}
    monkeypatch.chdir(tmp_path)
    done = run_altus("demo", "--subjects", "2", "--backend", backend, "--json", env=environment)
    result = demo_json(done)
    assert result["ok"] is True
    assert [row["subject"] for row in result["rows"]] == ["990001", "990002"]
    assert all(error <= FA_TOLERANCE for error in result["fa_errors"].values())
    shown = run_altus("jobs", "show", str(result["job_id"]), "--json", env=environment)
    assert json.loads(shown.stdout)["spec"]["backend"] == backend


def check_maps_in_bucket(info: ServerInfo, subjects: list[str], output: str) -> None:
    environment = info.environment()
    root = "s3://altus-demo"
    for subject in subjects:
        fitted = read_nifti(f"{output}/{subject}/FA.nii.gz", environment)
        md = read_nifti(f"{output}/{subject}/MD.nii.gz", environment)
        truth = read_nifti(f"{root}/{cohort.TRUTH_PREFIX}/{subject}/FA.nii.gz", environment)
        mask_url = f"{root}/{cohort.DATA_PREFIX}/{subject}/T1w/Diffusion/nodif_brain_mask.nii.gz"
        mask = read_nifti(mask_url, environment) > 0
        assert fitted.shape == truth.shape == cohort.SHAPE
        assert np.median(np.abs(fitted - truth)[mask]) <= FA_TOLERANCE
        assert abs(fitted[mask].mean() - truth[mask].mean()) <= 0.01
        assert 0.5e-3 < np.median(md[mask]) < 1.0e-3  # mm²/s, as in brain tissue


@pytest.fixture(scope="module")
def hcp_bucket(s3_server: ServerInfo) -> Iterator[str]:
    """A bucket in the HCP layout: two simulated subjects and one whose data is damaged."""
    import boto3

    import altus.data

    environment = s3_server.environment()
    name = f"hcp-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in environment.items():
            patch.setenv(variable, value)
        altus.data.make_bucket(f"s3://{name}")
        for subject in ("990001", "990002"):
            cohort.write_subject(subject, f"s3://{name}")
        client = boto3.client("s3", endpoint_url=s3_server.endpoint, **_keys(s3_server))
        folder = "HCP_1200/100000/T1w/Diffusion"
        source = "HCP_1200/990001/T1w/Diffusion"
        for file in ("bvals", "bvecs", "nodif_brain_mask.nii.gz"):
            client.copy_object(
                Bucket=name,
                Key=f"{folder}/{file}",
                CopySource={"Bucket": name, "Key": f"{source}/{file}"},
            )
        client.put_object(Bucket=name, Key=f"{folder}/data.nii.gz", Body=b"not a NIfTI file")
    yield f"s3://{name}/HCP_1200"
    client.delete_bucket(Bucket=name)


def _keys(info: ServerInfo) -> dict[str, str]:
    return {
        "aws_access_key_id": info.access_key,
        "aws_secret_access_key": info.secret_key,
        "region_name": info.region,
    }


def test_a_failing_subject_is_listed_and_the_others_finish(
    run_altus: RunAltus, hcp_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    output = tmp_path / "maps"
    done = run_altus(
        "demo", "--data", hcp_bucket, "--subjects", "3", "--output", str(output),
        "--report-dir", str(tmp_path / "report"), "--json",
    )  # fmt: skip
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["subjects"] == ["100000", "990001", "990002"]
    assert [row["subject"] for row in result["rows"]] == ["990001", "990002"]
    assert list(result["failures"]) == ["100000"]
    assert result["failures"]["100000"].startswith("nibabel.filebasedimages.ImageFileError: ")
    assert "data.nii.gz is not a gzip file" in result["failures"]["100000"]
    assert "subject 100000 failed:" in done.stderr
    assert "Traceback" not in done.stderr
    for subject in ("990001", "990002"):
        assert sorted(p.name for p in (output / subject).iterdir()) == ["FA.nii.gz", "MD.nii.gz"]
    assert not (output / "100000").exists()
    assert (tmp_path / "report" / "dti_summary.png").exists()
    assert result["endpoint"] is None, "with --data the demo starts no server"


def test_a_missing_file_is_named_in_one_line_before_anything_runs(
    run_altus: RunAltus, s3_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    import altus.data

    source = tmp_path / "HCP_1200"
    for subject in ("100206", "100307"):
        folder = source / subject / "T1w" / "Diffusion"
        folder.mkdir(parents=True)
        for file in cohort_files(without="bvecs" if subject == "100307" else None):
            (folder / file).write_bytes(b"x")
    altus.data.copy(f"{source}/", f"s3://{s3_bucket}/HCP_1200/", recursive=True)

    done = run_altus("demo", "--data", f"s3://{s3_bucket}/HCP_1200", "--report-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"altus: error: subject 100307 has no T1w/Diffusion/bvecs: "
        f"s3://{s3_bucket}/HCP_1200/100307/T1w/Diffusion/bvecs"
    ]
    assert not (tmp_path / "dti_summary.csv").exists()

    done = run_altus("demo", "--data", f"s3://{s3_bucket}/nothing-here")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"altus: error: s3://{s3_bucket}/nothing-here: no subject folders "
        "(expected <subject>/T1w/Diffusion/...)"
    )


def cohort_files(without: str | None) -> list[str]:
    return [f for f in ("data.nii.gz", "bvals", "bvecs", "nodif_brain_mask.nii.gz") if f != without]


def test_the_example_script_runs_on_a_bucket_and_lists_the_failure(
    hcp_bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    import sys

    example = Path(__file__).parents[2] / "examples" / "dti_at_scale.py"
    done = subprocess.run(
        [sys.executable, str(example), hcp_bucket, str(tmp_path / "maps"), "--summary",
         str(tmp_path / "summary.csv")],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "subject 100000 failed:" in done.stdout
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [row["subject"] for row in rows] == ["990001", "990002"]
    assert set(rows[0]) == {"subject", "brain_voxels", "mean_fa", "median_fa", "mean_md", "seconds"}
