"""DTI at scale: fit a tensor model to every subject's diffusion MRI, in parallel, with altus.

The analysis the HCP tutorials end with, for a whole cohort. For each subject
folder under DATA (the Human Connectome Project layout,
``<subject>/T1w/Diffusion/{data.nii.gz,bvals,bvecs,nodif_brain_mask.nii.gz}``),
one task downloads the four files, fits ``dti.TensorModel`` inside the brain
mask (to the b0s and the b = 1000 shell), writes ``FA.nii.gz`` and ``MD.nii.gz`` to ``OUTPUT/<subject>/`` and
returns summary statistics. altus runs the tasks on every core (or on Slurm or
Dask with ``--backend``) and keeps each result, error and log in a job record.

    python examples/dti_at_scale.py s3://my-bucket/HCP_1200 s3://my-bucket/derivatives/dti
    altus demo     # this pipeline on a synthetic cohort, on altus's own S3 server

DATA and OUTPUT are ``s3://`` URLs or local folders. Needs ``pip install 'altus[demo]'``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from typing import Any

import nibabel as nib
import numpy as np
from dipy.core.gradients import gradient_table
from dipy.io import read_bvals_bvecs
from dipy.reconst import dti

import altus
import altus.data

DIFFUSION = "T1w/Diffusion"
FILES = ("data.nii.gz", "bvals", "bvecs", "nodif_brain_mask.nii.gz")
MAX_DTI_BVAL = 1500
"""The tensor is fitted to the b0s and the b = 1000 s/mm² shell, where diffusion is close to
Gaussian; higher shells are for DKI or CSD, and in fluid their signal is lost in the noise."""
SUMMARY_COLUMNS = ("subject", "brain_voxels", "mean_fa", "median_fa", "mean_md", "seconds")


def find_subjects(data: str, limit: int | None = None, anon: bool = False) -> list[str]:
    """The subject folders under ``data``, in name order (at most ``limit``)."""
    folders = [e.key for e in altus.data.ls(data.rstrip("/") + "/", anon=anon) if e.is_folder]
    names = sorted(os.path.basename(key.rstrip("/")) for key in folders)
    return names[:limit]


def missing_files(data: str, subject: str, anon: bool = False) -> list[str]:
    """Which of the four files ``subject`` lacks (as paths below its folder)."""
    folder = f"{data.rstrip('/')}/{subject}/{DIFFUSION}/"
    try:
        present = {os.path.basename(e.key) for e in altus.data.ls(folder, anon=anon)}
    except FileNotFoundError:
        present = set()
    return [f"{DIFFUSION}/{name}" for name in FILES if name not in present]


def process_subject(subject: str, data: str, output: str, anon: bool = False) -> dict[str, Any]:
    """Fit DTI to one subject; write its FA and MD maps; return its summary statistics."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        local = fetch(f"{data.rstrip('/')}/{subject}/{DIFFUSION}", folder, anon)
        image = nib.load(f"{local}/data.nii.gz")
        mask = np.asanyarray(nib.load(f"{local}/nodif_brain_mask.nii.gz").dataobj) > 0
        bvals, bvecs = read_bvals_bvecs(f"{local}/bvals", f"{local}/bvecs")
        low = bvals <= MAX_DTI_BVAL
        model = dti.TensorModel(gradient_table(bvals[low], bvecs=bvecs[low]))
        fit = model.fit(image.get_fdata(dtype=np.float32)[..., low], mask=mask)
    fa = np.clip(np.nan_to_num(fit.fa), 0, 1).astype(np.float32)
    md = np.nan_to_num(fit.md).astype(np.float32)
    for name, values in {"FA": fa, "MD": md}.items():
        save(nib.Nifti1Image(values, image.affine), f"{output.rstrip('/')}/{subject}/{name}.nii.gz")
    brain = fa[mask]
    return {
        "subject": subject,
        "brain_voxels": int(mask.sum()),
        "mean_fa": float(brain.mean()),
        "median_fa": float(np.median(brain)),
        "mean_md": float(md[mask].mean()),
        "seconds": time.perf_counter() - start,
        "fa_slice": fa[:, :, fa.shape[2] // 2],  # for a figure
        "fa_histogram": np.histogram(brain, bins=50, range=(0, 1))[0],
    }


def fetch(url: str, folder: str, anon: bool) -> str:
    """A local folder holding the subject's four files: downloaded if ``url`` is in S3."""
    if not url.startswith("s3://"):
        return url
    altus.data.copy(url + "/", folder, recursive=True, include=FILES, anon=anon)
    return folder


def save(image: nib.Nifti1Image, url: str) -> None:
    """Write ``image`` to a local path or an S3 URL, whole or not at all."""
    local = not url.startswith("s3://")
    if local:
        os.makedirs(os.path.dirname(url) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(url) if local else None) as folder:
        path = os.path.join(folder, os.path.basename(url))
        nib.save(image, path)
        if local:
            os.replace(path, url)
        else:
            altus.data.copy(path, url)


def run(
    subjects: list[str],
    data: str,
    output: str,
    *,
    anon: bool = False,
    backend: str = "local",
    **options: Any,
) -> altus.Job:
    """Start the map, one task per subject; returns at once (``job.gather()`` waits)."""
    knot = altus.Knot(process_subject, name="dti", backend=backend, retries=1, **options)
    return knot.map([(subject, data, output, anon) for subject in subjects], starmap=True)


def write_summary(rows: list[dict[str, Any]], path: str) -> None:
    """One row per subject, the columns of ``SUMMARY_COLUMNS`` (plus any extra scalars)."""
    columns = [*SUMMARY_COLUMNS, *(k for k in rows[0] if k not in SUMMARY_COLUMNS)]
    scalars = [c for c in columns if np.isscalar(rows[0][c])]
    with open(path + ".partial", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=scalars, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".partial", path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="the folder of subject folders, e.g. s3://bucket/HCP_1200")
    parser.add_argument("output", help="where FA and MD maps go, one folder per subject")
    parser.add_argument("--subjects", type=int, help="only the first N subjects")
    parser.add_argument("--backend", default="local", help="local, slurm or dask")
    parser.add_argument("--anon", action="store_true", help="read a public bucket unsigned")
    parser.add_argument("--summary", default="dti_summary.csv", help="the CSV table to write")
    args = parser.parse_args()

    subjects = find_subjects(args.data, args.subjects, args.anon)
    job = run(subjects, args.data, args.output, anon=args.anon, backend=args.backend)
    print(f"job {job.id}: {len(subjects)} subjects on the {args.backend} backend")
    job.wait(progress=True)
    rows = job.results(errors="skip")
    if rows:
        write_summary(rows, args.summary)
        print(f"{len(rows)} subjects summarised in {args.summary}")
    errors = job.errors()
    for error in errors:
        print(f"subject {subjects[error.task]} failed: {error.error_type}: {error.message}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
