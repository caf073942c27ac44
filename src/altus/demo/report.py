"""What the demo leaves behind for a person to read: a CSV table and a PNG figure,
and, on the synthetic cohort, how close each fitted FA map is to the truth."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np

import altus.data
from altus.demo import cohort

MAX_SLICES = 24  # more subjects than this: the figure shows the first ones


def read_nifti(url: str) -> Any:
    """A NIfTI image from an ``s3://`` URL or a local path, read whole into memory."""
    import nibabel as nib

    with altus.data.open(url) as stream:
        blob = stream.read()
    if url.endswith(".gz"):
        blob = gzip.decompress(blob)
    return nib.Nifti1Image.from_bytes(blob)


def fa_error(subject: str, root: str, output: str) -> float:
    """Median absolute difference between fitted and true FA inside the subject's brain mask."""
    mask_url = f"{root}/{cohort.DATA_PREFIX}/{subject}/T1w/Diffusion/nodif_brain_mask.nii.gz"
    mask = np.asanyarray(read_nifti(mask_url).dataobj) > 0
    truth = read_nifti(f"{root}/{cohort.TRUTH_PREFIX}/{subject}/FA.nii.gz").get_fdata()
    fitted = read_nifti(f"{output}/{subject}/FA.nii.gz").get_fdata()
    return float(np.median(np.abs(fitted - truth)[mask]))


def write_figure(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """An axial FA slice per subject above the FA distributions of all of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = rows[:MAX_SLICES]
    columns = min(len(shown), 4 if len(shown) <= 8 else 8)
    grid_rows = math.ceil(len(shown) / columns)
    figure = plt.figure(figsize=(2 * columns, 2.3 * grid_rows + 3.2), layout="constrained")
    slices, distributions = figure.subfigures(2, 1, height_ratios=[2.3 * grid_rows, 3.2])  # type: ignore[misc]
    axes = np.atleast_1d(slices.subplots(grid_rows, columns)).ravel()
    for ax, row in zip(axes, shown, strict=False):
        image = ax.imshow(row["fa_slice"].T, origin="lower", cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{row['subject']}\nmean FA {row['mean_fa']:.2f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    slices.colorbar(image, ax=axes.tolist(), shrink=0.8, label="FA")
    slices.suptitle(title, fontsize=10)
    _distributions(distributions.subplots(), rows)
    partial = path.with_name(path.name + ".partial")
    figure.savefig(partial, dpi=110, format="png")
    plt.close(figure)
    partial.replace(path)


def _distributions(ax: Any, rows: list[dict[str, Any]]) -> None:
    bins = len(rows[0]["fa_histogram"])
    centres = (np.arange(bins) + 0.5) / bins
    for row in rows:
        density = row["fa_histogram"] / row["fa_histogram"].sum() * bins
        ax.plot(centres, density, linewidth=1, alpha=0.8, label=row["subject"])
    ax.set_xlabel("FA (brain voxels)")
    ax.set_ylabel("density")
    ax.set_xlim(0, 1)
    if len(rows) <= 12:
        ax.legend(fontsize=7, ncols=min(6, len(rows)), frameon=False)
    ax.set_title("FA distributions, one line per subject", fontsize=9)
