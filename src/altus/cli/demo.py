"""``altus demo``: the main job, diffusion MRI at scale, with one command.

A few lines over ``altus.demo.run``; stage lines and progress bars go to
stderr, the summary to stdout. Exit status 1 when a subject failed or a
fitted FA map is off its ground truth.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from altus.cli.options import json_option
from altus.cli.output import format_duration, print_fields, print_json

if TYPE_CHECKING:
    from altus.demo.run import DemoResult

__all__ = ["demo"]


@click.command()
@click.option(
    "--subjects", type=click.IntRange(min=1), default=8, show_default=True,
    help="How many subjects (the first N of --data).",
)  # fmt: skip
@click.option(
    "--backend", type=click.Choice(["local", "slurm", "dask"]), default="local",
    show_default=True, help="Where the per-subject tasks run.",
)  # fmt: skip
@click.option(
    "--backend-option", "backend_options", multiple=True, metavar="KEY=VALUE",
    help="A backend setting, e.g. partition=short (slurm), address=tcp://host:8786 "
    "(dask), workers=4. Repeatable.",
)  # fmt: skip
@click.option(
    "--data", metavar="URL",
    help="Run on real data instead: a folder or s3:// prefix of HCP subject folders "
    "(<subject>/T1w/Diffusion/{data.nii.gz,bvals,bvecs,nodif_brain_mask.nii.gz}).",
)  # fmt: skip
@click.option(
    "--output", metavar="URL",
    help="Where the FA and MD maps go [default: s3://altus-demo/derivatives/dti, "
    "or ./altus-demo/derivatives/dti with --data].",
)  # fmt: skip
@click.option("--anon", is_flag=True, help="Read --data unsigned (a public bucket).")
@click.option(
    "--keep", is_flag=True,
    help="Leave the S3 server running afterwards, to explore the bucket "
    "(eval \"$(altus data serve)\"; altus data ls s3://altus-demo/).",
)  # fmt: skip
@click.option(
    "--report-dir", type=click.Path(file_okay=False, path_type=Path),
    default=Path("altus-demo"), show_default=True,
    help="Where the summary table (CSV) and figure (PNG) go.",
)  # fmt: skip
@json_option
def demo(
    subjects: int,
    backend: str,
    backend_options: tuple[str, ...],
    data: str | None,
    output: str | None,
    anon: bool,
    keep: bool,
    report_dir: Path,
    as_json: bool,
) -> None:
    """Fit diffusion tensors (DTI) to a cohort of subjects in parallel, end to end.

    With nothing configured, altus starts its own S3 server, simulates a
    cohort in the Human Connectome Project's layout (DIPY's three-shell
    gradient table, a known FA field per subject), maps the per-subject
    pipeline of examples/dti_at_scale.py over it with a Knot, writes FA and
    MD maps back to the bucket, checks them against the truth, and writes a
    table and a figure. It prints where everything is, the time taken and
    the speed-up over a serial loop.
    """
    from altus.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        subjects=subjects, backend=backend, data=data, output=output, anon=anon, keep=keep,
        report_dir=report_dir, backend_options=_parse_options(backend_options),
    )  # fmt: skip
    result = run_demo(options, say=lambda line: click.echo(f"altus demo: {line}", err=True))
    if as_json:
        print_json(result.to_dict())
    else:
        _print(result)
    _print_problems(result)
    if not result.ok:
        sys.exit(1)


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--backend-option")
        options[key] = int(value) if value.isdigit() else value
    return options


def _print(result: DemoResult) -> None:
    fields = [("data", f"{result.data}/  ({len(result.subjects)} subjects)")]
    if result.endpoint:
        running = "left running" if result.server_left_running else "stopped"
        fields.append(("S3 server", f"{result.endpoint}  ({running})"))
    if result.cohort_written:
        made = f"{result.cohort_written} subjects simulated in {result.cohort_seconds:.1f} s"
        fields.append(("cohort", made))
    fields += [
        ("FA, MD maps", f"{result.output}/<subject>/FA.nii.gz, MD.nii.gz"),
        ("job", f"{result.job_id}  (altus jobs show {result.job_id})"),
        ("pipeline", _speed(result)),
    ]
    if result.fa_errors:
        fields.append(("accuracy", _accuracy(result)))
    if result.summary_csv and result.figure:
        fields += [("table", str(result.summary_csv)), ("figure", str(result.figure))]
    fields.append(("total time", format_duration(result.total_seconds)))
    print_fields(fields)


def _print_problems(result: DemoResult) -> None:
    for subject, error in result.failures.items():
        click.echo(f"subject {subject} failed: {error}", err=True)
    for subject, off_by in result.inaccurate.items():
        click.echo(f"subject {subject}: fitted FA off the truth by {off_by:.3f} (median)", err=True)


def _speed(result: DemoResult) -> str:
    done = len(result.rows)
    return (
        f"{done} subjects in {result.pipeline_seconds:.1f} s; a serial loop would take "
        f"about {result.serial_seconds:.1f} s (the sum of the per-subject times): "
        f"{result.speedup:.1f}x faster"
    )


def _accuracy(result: DemoResult) -> str:
    from altus.demo.run import FA_TOLERANCE

    worst = max(result.fa_errors.values())
    verdict = "within" if worst <= FA_TOLERANCE else "OUTSIDE"
    return (
        f"fitted FA within {worst:.3f} of the truth (median per subject; {verdict} {FA_TOLERANCE})"
    )
