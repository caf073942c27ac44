"""A first map with altus: fit a small model per "subject", durably, on all cores.

Run it with ``python examples/quickstart.py``. Every result, error and log
lands in a job record under ~/.local/share/altus/jobs; list it afterwards
with ``altus jobs list`` and inspect it with ``altus jobs show ID``.
"""

from __future__ import annotations

import math
import random
import time

import altus


def fit_subject(subject: int) -> dict[str, float]:
    """Stand-in for a per-subject analysis: a least-squares line through noisy samples."""
    rng = random.Random(subject)
    slope = 0.5 + subject / 100
    xs = [i / 1000 for i in range(200_000)]
    ys = [slope * x + rng.gauss(0, 0.1) for x in xs]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var = sum((x - mean_x) ** 2 for x in xs)
    print(f"subject {subject}: fitted {len(xs)} samples")
    return {"subject": subject, "true": slope, "fitted": cov / var}


def main() -> None:
    subjects = range(16)
    start = time.perf_counter()
    job = altus.Knot(fit_subject, name="quickstart").map(subjects)
    print(f"submitted job {job.id}: {len(job)} subjects in {job.spec.n_chunks} chunks")
    results = job.gather()  # a progress bar, then every result in input order
    elapsed = time.perf_counter() - start
    worst = max(abs(r["fitted"] - r["true"]) for r in results)
    print(f"{len(results)} subjects fitted in {elapsed:.1f} s; largest slope error {worst:.2e}")
    if worst > 1e-2 or not all(math.isfinite(r["fitted"]) for r in results):
        raise SystemExit(f"the fits are off (largest slope error {worst:.2e})")
    print(f"record kept: altus jobs show {job.id}")


if __name__ == "__main__":
    main()
