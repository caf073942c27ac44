"""``altus demo`` from Python: DTI over a cohort, end to end, with nothing configured.

Without ``data``, the demo starts altus's own S3 server (or uses the one
``altus data serve`` left running), writes a synthetic cohort with known FA
into the bucket ``altus-demo`` in the HCP layout, and maps
``examples/dti_at_scale.py``'s pipeline over it; the fitted FA maps are then
compared with the truth. With ``data``, the same pipeline runs on a real
bucket (or folder) of that layout. Either way the demo writes a CSV table and
a PNG figure and reports the time taken and the speed-up over a serial loop.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from altus.errors import AltusError, ConfigError, LayoutError

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

DEMO_BUCKET = "s3://altus-demo"
DEFAULT_SUBJECTS = 8
FA_TOLERANCE = 0.03
"""Largest median |fitted FA - true FA| in a subject's brain that passes (measured 0.016-0.020)."""


@dataclass(frozen=True)
class DemoOptions:
    subjects: int = DEFAULT_SUBJECTS
    backend: str = "local"
    data: str | None = None  # a folder of HCP subject folders; None: the synthetic cohort
    output: str | None = None  # where FA and MD maps go; None: next to the cohort
    anon: bool = False
    keep: bool = False  # leave the S3 server running
    report_dir: Path = Path("altus-demo")
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass
class DemoResult:
    """What ran, where everything is, and how long it took."""

    job_id: str
    data: str
    output: str
    subjects: list[str]
    rows: list[dict[str, Any]]
    failures: dict[str, str]  # subject → "ErrorType: message"
    summary_csv: Path | None = None
    figure: Path | None = None
    endpoint: str | None = None  # the S3 server the demo used, if its own
    server_left_running: bool = False
    cohort_written: int = 0
    cohort_seconds: float = 0.0
    pipeline_seconds: float = 0.0
    total_seconds: float = 0.0
    fa_errors: dict[str, float] = field(default_factory=dict)

    @property
    def serial_seconds(self) -> float:
        """What one loop in one process would take: the sum of the per-subject times."""
        return float(sum(row["seconds"] for row in self.rows))

    @property
    def speedup(self) -> float:
        return self.serial_seconds / self.pipeline_seconds if self.pipeline_seconds else 0.0

    @property
    def inaccurate(self) -> dict[str, float]:
        return {s: e for s, e in self.fa_errors.items() if e > FA_TOLERANCE}

    @property
    def ok(self) -> bool:
        return not self.failures and not self.inaccurate

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-subject arrays, for ``--json``."""
        fields = {k: v for k, v in vars(self).items() if k != "rows"}
        rows = [{k: v for k, v in row.items() if not hasattr(v, "shape")} for row in self.rows]
        derived = {"serial_seconds": self.serial_seconds, "speedup": self.speedup}
        return {"ok": self.ok, **fields, "rows": rows, **derived, "fa_tolerance": FA_TOLERANCE}


def run_demo(options: DemoOptions, say: Callable[[str], None] = lambda line: None) -> DemoResult:
    """Run the demo; ``say`` hears a line as each stage starts."""
    pipeline = _require_extras()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if options.data is None:
            endpoint, left_running = stack.enter_context(_own_server(options.keep, say))
            data, output, subjects, written, cohort_seconds = _synthetic_cohort(options, say)
        else:
            endpoint, left_running, written, cohort_seconds = None, False, 0, 0.0
            data = options.data.rstrip("/")
            output = options.output or str(Path.cwd() / options.report_dir / "derivatives" / "dti")
            subjects = _subjects_with_every_file(pipeline, data, options)
        result = _run_pipeline(pipeline, subjects, data, output, options, say)
        result.endpoint, result.server_left_running = endpoint, left_running
        result.cohort_written, result.cohort_seconds = written, cohort_seconds
        if options.data is None and result.rows:
            say("comparing the fitted FA maps with the truth")
            result.fa_errors = _fa_errors(result.rows, output)
        _write_report(pipeline, result, options)
    result.total_seconds = time.perf_counter() - started
    return result


def _require_extras() -> Any:
    try:
        import matplotlib  # noqa: F401  (the figure, at the end: missing, say so now)

        from altus.demo import dti_at_scale
    except ImportError as exc:
        raise ConfigError(
            f"altus demo needs DIPY, nibabel and matplotlib ({exc.name} is missing): "
            "pip install 'altus[demo]'"
        ) from exc
    return dti_at_scale


@contextlib.contextmanager
def _own_server(keep: bool, say: Callable[[str], None]) -> Iterator[tuple[str, bool]]:
    """The local S3 server, with ``AWS_*`` pointing at it while the demo runs (workers too).

    A server this call starts is stopped at the end unless ``keep``; one that was
    already running is left as it was.
    """
    from altus.storage import server

    info = server.status()
    was_running = info is not None
    if info is None:
        say("starting altus's own S3 server (SeaweedFS)")
        info = server.start()
    try:
        with _environment(info.environment()):
            yield info.endpoint, was_running or keep
    finally:
        if not (was_running or keep):
            server.stop()


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with every ``AWS_*`` replaced by ``variables``, restored afterwards."""
    saved = dict(os.environ)
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _synthetic_cohort(
    options: DemoOptions, say: Callable[[str], None]
) -> tuple[str, str, list[str], int, float]:
    """Write the subjects the bucket lacks; returns data, output, subjects, count, seconds."""
    import altus
    import altus.data
    from altus.demo import cohort

    altus.data.make_bucket(DEMO_BUCKET, exist_ok=True)
    subjects = cohort.subject_ids(options.subjects)
    missing = cohort.missing_subjects(subjects, DEMO_BUCKET)
    started = time.perf_counter()
    if missing:
        say(f"simulating {len(missing)} subjects into {DEMO_BUCKET}/{cohort.DATA_PREFIX}/")
        knot = altus.Knot(
            cohort.write_subject, name="dti-cohort", backend=options.backend,
            **options.backend_options,
        )  # fmt: skip
        job = knot.map([(s, DEMO_BUCKET) for s in missing], starmap=True)
        job.wait(progress=options.progress)
        errors = job.errors()
        if errors:
            first = errors[0]
            raise AltusError(
                f"simulating subject {missing[first.task]} failed: {first.error_type}: "
                f"{first.message} (altus jobs logs {job.id} {first.task})"
            )
    data = f"{DEMO_BUCKET}/{cohort.DATA_PREFIX}"
    output = options.output or f"{DEMO_BUCKET}/derivatives/dti"
    return data, output, subjects, len(missing), time.perf_counter() - started


def _subjects_with_every_file(pipeline: Any, data: str, options: DemoOptions) -> list[str]:
    """The first ``options.subjects`` subjects under ``data``; a missing file is an error."""
    subjects = pipeline.find_subjects(data, options.subjects, anon=options.anon)
    if not subjects:
        raise LayoutError(f"{data}: no subject folders (expected <subject>/T1w/Diffusion/...)")
    missing = [
        (s, path) for s in subjects for path in pipeline.missing_files(data, s, options.anon)
    ]
    if missing:
        subject, path = missing[0]
        more = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
        raise LayoutError(f"subject {subject} has no {path}: {data}/{subject}/{path}{more}")
    return list(subjects)


def _run_pipeline(
    pipeline: Any,
    subjects: list[str],
    data: str,
    output: str,
    options: DemoOptions,
    say: Callable[[str], None],
) -> DemoResult:
    say(f"fitting DTI to {len(subjects)} subjects on the {options.backend} backend")
    started = time.perf_counter()
    job = pipeline.run(
        subjects, data, output, anon=options.anon, backend=options.backend,
        **options.backend_options,
    )  # fmt: skip
    job.wait(progress=options.progress)
    elapsed = time.perf_counter() - started
    rows = job.results(errors="skip")
    failures = {subjects[e.task]: f"{e.error_type}: {e.message}" for e in job.errors()}
    return DemoResult(job.id, data, output, subjects, rows, failures, pipeline_seconds=elapsed)


def _fa_errors(rows: list[dict[str, Any]], output: str) -> dict[str, float]:
    from altus.demo import report

    errors = {row["subject"]: report.fa_error(row["subject"], DEMO_BUCKET, output) for row in rows}
    for row in rows:
        row["fa_error"] = errors[row["subject"]]
    return errors


def _write_report(pipeline: Any, result: DemoResult, options: DemoOptions) -> None:
    from altus.demo import report

    if not result.rows:
        return
    folder = options.report_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    result.summary_csv = folder / "dti_summary.csv"
    pipeline.write_summary(result.rows, str(result.summary_csv))
    result.figure = folder / "dti_summary.png"
    title = f"FA of {len(result.rows)} subjects from {result.data}"
    report.write_figure(result.rows, result.figure, title)
