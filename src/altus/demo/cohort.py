"""A synthetic diffusion MRI cohort in the HCP layout, each subject with a known FA field.

Every subject is a head-sized ellipsoid of brain (2.5 mm voxels, about 70,000
brain voxels) with deep white matter, five tract-like bundles and two
ventricles. Its diffusion tensors follow a smooth orientation field; the
signal is DIPY's tensor prediction for the three-shell gradient table that
DIPY ships (b = 1000, 2000 and 3500 s/mm², 192 directions and a b0) with
Rician noise at a subject's own SNR. Nothing is downloaded: the subject's ID
seeds everything, so the same subject is the same data on every machine.

Written per subject, below a bucket root:

    HCP_1200/<subject>/T1w/Diffusion/{data.nii.gz,bvals,bvecs,nodif_brain_mask.nii.gz}
    ground-truth/v<COHORT_VERSION>/<subject>/FA.nii.gz
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

import altus.data

DATA_PREFIX = "HCP_1200"
COHORT_VERSION = 1  # raise when the simulation changes, so cohorts written before are redone
TRUTH_PREFIX = f"ground-truth/v{COHORT_VERSION}"
FIRST_SUBJECT = 990001  # six digits like HCP's, in a range HCP does not use
SHAPE = (60, 72, 54)
VOXEL_MM = 2.5
REFERENCE_S0 = 1000.0  # SNR is the b0 signal of white matter over the noise's sigma
MAX_FA = 0.9


@dataclass(frozen=True)
class Subject:
    """One simulated subject: its diffusion volume and what it was made from."""

    data: np.ndarray  # (x, y, z, volume) int16
    mask: np.ndarray  # (x, y, z) bool
    fa: np.ndarray  # the true FA, float32, 0 outside the brain
    bvals: np.ndarray
    bvecs: np.ndarray  # (volume, 3)
    affine: np.ndarray
    snr: float


def subject_ids(count: int) -> list[str]:
    return [str(FIRST_SUBJECT + k) for k in range(count)]


def simulate(subject: str) -> Subject:
    """The subject's data, seeded by its ID."""
    from dipy.data import get_3shell_gtab
    from dipy.reconst.dti import fractional_anisotropy, tensor_prediction
    from dipy.sims.voxel import add_noise

    rng = np.random.default_rng(int(subject))
    gtab = get_3shell_gtab()
    coords, mask = _brain(rng)
    fa, md, directions, s0 = _tissue(rng, coords, mask)
    evals = _eigenvalues(fa, md)
    params = np.concatenate([evals, _frames(directions).reshape(*fa.shape, 9)], axis=-1)
    signal = tensor_prediction(params[mask], gtab, s0[mask])
    snr = float(rng.uniform(25, 40))
    noisy = add_noise(signal, snr, REFERENCE_S0, noise_type="rician", rng=rng)
    data = np.zeros((*SHAPE, len(gtab.bvals)), dtype=np.int16)
    data[mask] = np.clip(np.round(noisy), 0, np.iinfo(np.int16).max)
    true_fa = np.where(mask, fractional_anisotropy(evals), 0).astype(np.float32)
    return Subject(data, mask, true_fa, gtab.bvals, gtab.bvecs, _affine(), snr)


def _brain(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates scaled so the brain is the unit ball, and the brain mask."""
    radii = np.array([26.0, 32.0, 22.0]) * rng.uniform(0.9, 1.05)
    centre = (np.array(SHAPE) - 1) / 2
    grid = np.indices(SHAPE, dtype=np.float64)
    coords = (grid - centre[:, None, None, None]) / radii[:, None, None, None]
    return coords, (coords**2).sum(axis=0) < 1


def _tissue(
    rng: np.random.Generator, coords: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FA, MD (mm²/s), principal directions and b0 signal for every voxel."""
    x, y, z = coords
    rho = np.sqrt(x**2 + y**2 + z**2)
    deep = rng.uniform(0.4, 0.55) * np.exp(-(((rho - rng.uniform(0.45, 0.6)) / 0.2) ** 2))
    fa = 0.1 + deep
    tangential = np.stack([-y, x, 0.25 * np.ones_like(x)], axis=-1)
    directions = tangential / np.linalg.norm(tangential, axis=-1, keepdims=True)
    for _ in range(5):
        strength, axis = _bundle(rng, coords)
        fa = fa + 0.45 * strength
        directions = directions * (1 - strength[..., None]) + axis * strength[..., None]
    fa = np.clip(fa, 0.05, MAX_FA)
    md = 0.85e-3 - 0.2e-3 * fa
    ventricles = _ventricles(coords) & mask
    fa[ventricles], md[ventricles] = 0.0, 3.0e-3
    s0 = np.where(ventricles, 2.5 * REFERENCE_S0, REFERENCE_S0)
    return fa, md, directions / np.linalg.norm(directions, axis=-1, keepdims=True), s0


def _bundle(rng: np.random.Generator, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A straight tract: how strongly each voxel belongs to it, and its axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    centre = rng.uniform(-0.4, 0.4, size=3)
    offset = np.moveaxis(coords, 0, -1) - centre
    along = offset @ axis
    across = np.linalg.norm(offset - along[..., None] * axis, axis=-1)
    strength = np.exp(-((across / 0.1) ** 2)) * (np.abs(along) < 0.7)
    return strength, axis


def _ventricles(coords: np.ndarray) -> np.ndarray:
    x, y, z = coords
    shape = ((y - 0.05) / 0.3) ** 2 + ((z - 0.1) / 0.15) ** 2
    left = ((x + 0.13) / 0.08) ** 2 + shape < 1
    right = ((x - 0.13) / 0.08) ** 2 + shape < 1
    return np.asarray(left | right)


def _eigenvalues(fa: np.ndarray, md: np.ndarray) -> np.ndarray:
    """Eigenvalues (λ1, λ2, λ2) of the cylindrical tensor with this FA and MD."""
    t = fa * np.sqrt(3 / (9 - 6 * fa**2))
    return np.stack([md * (1 + 2 * t), md * (1 - t), md * (1 - t)], axis=-1)


def _frames(directions: np.ndarray) -> np.ndarray:
    """Orthonormal eigenvector frames (as columns) whose first vector is ``directions``."""
    helper = np.where(np.abs(directions[..., 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    second = np.cross(directions, helper)
    second /= np.linalg.norm(second, axis=-1, keepdims=True)
    third = np.cross(directions, second)
    return np.stack([directions, second, third], axis=-1)


def _affine() -> np.ndarray:
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -VOXEL_MM * (np.array(SHAPE) - 1) / 2
    return affine


def write_subject(subject: str, root: str) -> str:
    """Simulate ``subject`` and upload its files below ``root`` (an ``s3://`` bucket URL)."""
    import nibabel as nib

    made = simulate(subject)
    with tempfile.TemporaryDirectory() as folder:
        diffusion = os.path.join(folder, DATA_PREFIX, subject, "T1w", "Diffusion")
        truth = os.path.join(folder, TRUTH_PREFIX, subject)
        os.makedirs(diffusion)
        os.makedirs(truth)
        nib.save(nib.Nifti1Image(made.data, made.affine), f"{diffusion}/data.nii.gz")
        mask = made.mask.astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, made.affine), f"{diffusion}/nodif_brain_mask.nii.gz")
        np.savetxt(f"{diffusion}/bvals", made.bvals[None, :], fmt="%g")
        np.savetxt(f"{diffusion}/bvecs", made.bvecs.T, fmt="%.6f")
        nib.save(nib.Nifti1Image(made.fa, made.affine), f"{truth}/FA.nii.gz")
        altus.data.copy(folder + "/", root.rstrip("/") + "/", recursive=True)
    return subject


def missing_subjects(subjects: list[str], root: str) -> list[str]:
    """The subjects not yet (or not wholly) written below ``root``."""
    keys = {entry.key for entry in altus.data.ls(root.rstrip("/") + "/", recursive=True)}
    return [s for s in subjects if not all(key in keys for key in _keys(s))]


def _keys(subject: str) -> list[str]:
    names = ("data.nii.gz", "bvals", "bvecs", "nodif_brain_mask.nii.gz")
    data = [f"{DATA_PREFIX}/{subject}/T1w/Diffusion/{name}" for name in names]
    return [*data, f"{TRUTH_PREFIX}/{subject}/FA.nii.gz"]
