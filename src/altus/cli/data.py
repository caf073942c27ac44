"""``altus data``: list, copy, sync, remove, measure and read objects in S3.

A thin layer over ``altus.data``. Every command takes the same connection
options (``--profile``, ``--endpoint-url``, ``--region``, ``--anon`` /
``--no-sign-request``); credentials come from the standard AWS chain and are
never printed. A copy reports files it could not copy one line each, goes on
with the rest, and exits 1 if any failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from altus.cli.data_serve import serve
from altus.errors import AltusError

if TYPE_CHECKING:
    from altus.storage.objects import Entry
    from altus.storage.s3 import S3Client
    from altus.storage.transfer import CopyReport

__all__ = ["data"]

F = TypeVar("F", bound=Callable[..., Any])


def _connection(command: F) -> F:
    options = [
        click.option(
            "--profile", metavar="NAME", help="AWS profile from ~/.aws (else AWS_PROFILE)."
        ),
        click.option(
            "--endpoint-url",
            metavar="URL",
            help="An S3-compatible server (else AWS_ENDPOINT_URL), e.g. the one from "
            "'altus data serve'.",
        ),
        click.option("--region", metavar="NAME", help="The bucket's region (else detected)."),
        click.option(
            "--anon",
            "--no-sign-request",
            "anon",
            is_flag=True,
            help="Send unsigned requests, for public buckets (OpenNeuro, HCP open access).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _client(options: dict[str, Any]) -> S3Client:
    from altus.storage.s3 import S3Client, S3Options

    return S3Client(S3Options(**options))


@click.group()
def data() -> None:
    """Move data between S3 (or any S3-compatible server) and this machine, fast.

    \b
    altus data ls s3://openneuro.org/ds000030/ --anon
    altus data cp -r s3://bucket/HCP_1200/100307/T1w/Diffusion/ data/100307/
    altus data sync data/results/ s3://bucket/results/
    altus data serve        # a local S3 server for trying things out
    """


data.add_command(serve)


@data.command()
@click.argument("url")
@click.option("-r", "--recursive", is_flag=True, help="Every object below, not just one level.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_connection
def ls(url: str, recursive: bool, as_json: bool, **options: Any) -> None:
    """List objects and folders at URL (wildcards * and ? allowed); s3:// lists buckets."""
    import altus.data

    if url.rstrip("/") in ("s3:", "s3:/"):
        _list_buckets(_client(options), as_json)
        return
    for entry in altus.data.ls(url, recursive=recursive, **options):
        click.echo(json.dumps(_entry_dict(entry)) if as_json else _entry_line(entry))


def _list_buckets(client: S3Client, as_json: bool) -> None:
    from altus.storage.s3 import translate_error

    try:
        buckets = client.boto.list_buckets().get("Buckets", [])
    except Exception as exc:
        raise translate_error(exc, "list buckets at", client.endpoint_url or "s3://") from exc
    for bucket in buckets:
        created = bucket["CreationDate"]
        if as_json:
            click.echo(json.dumps({"bucket": bucket["Name"], "created": created.timestamp()}))
        else:
            click.echo(f"{created:%Y-%m-%d %H:%M:%S}  s3://{bucket['Name']}")


def _entry_dict(entry: Entry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "size": entry.size,
        "modified": entry.modified or None,
        "etag": entry.etag,
        "folder": entry.is_folder,
    }


def _entry_line(entry: Entry) -> str:
    import time

    if entry.is_folder:
        return f"{'DIR':>19}  {'':>10}  {_printable(entry.key)}"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.modified))
    return f"{stamp}  {entry.size:>10}  {_printable(entry.key)}"


def _printable(key: str) -> str:
    """A key as shown on a terminal: control characters escaped, never interpreted."""
    return key if key.isprintable() else key.encode("unicode_escape").decode("ascii")


def _copy_options(command: F) -> F:
    options = [
        click.option(
            "--include", multiple=True, metavar="GLOB", help="Only keys matching (repeatable)."
        ),
        click.option(
            "--exclude", multiple=True, metavar="GLOB", help="Leave out keys matching (repeatable)."
        ),
        click.option("--dry-run", is_flag=True, help="Print what would be copied; copy nothing."),
        click.option(
            "--concurrency", default=64, show_default=True, help="Objects in flight at once."
        ),
        click.option(
            "--checksum",
            is_flag=True,
            help="Also check MD5 sums against the server's ETags (sizes are always checked).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@data.command()
@click.argument("source")
@click.argument("destination")
@click.option("-r", "--recursive", is_flag=True, help="Copy a folder or prefix and all below it.")
@click.option("--force", is_flag=True, help="Copy even what is already there, same size and time.")
@_copy_options
@_connection
def cp(source: str, destination: str, recursive: bool, force: bool, **options: Any) -> None:
    """Copy SOURCE to DESTINATION: s3://bucket/key and a local path, or two s3:// URLs.

    Objects already at the destination with the same size and time are skipped,
    so rerunning an interrupted copy finishes it. Keys that would land outside
    the destination folder (``..``, absolute paths, NUL, backslashes) are refused.
    """
    _copy(source, destination, recursive, force, **options)


@data.command()
@click.argument("source")
@click.argument("destination")
@_copy_options
@_connection
def sync(source: str, destination: str, **options: Any) -> None:
    """Make DESTINATION hold everything in SOURCE: copy what is missing or differs."""
    _copy(source, destination, True, False, **options)


def _copy(
    source: str,
    destination: str,
    recursive: bool,
    force: bool,
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    dry_run: bool,
    concurrency: int,
    checksum: bool,
    as_json: bool,
    quiet: bool,
    **options: Any,
) -> None:
    import altus.data
    from altus.storage.transfer import CopyReport

    client = _client(options)
    todo = altus.data.plan(
        source,
        destination,
        recursive=recursive,
        include=include,
        exclude=exclude,
        force=force,
        client=client,
    )
    if dry_run:
        _print_plan(todo, as_json)
        report = CopyReport(skipped=todo.skipped, failed=list(todo.refused))
    else:
        bar = None if quiet or as_json else _progress_bar(todo.total_bytes, len(todo.items))
        try:
            report = altus.data.run(
                todo, client, concurrency=concurrency, checksum=checksum, progress=bar
            )
        finally:
            if bar is not None:
                bar.close()
        _print_report(report, as_json)
    if report.failed:
        sys.exit(1)


def _progress_bar(total: int, files: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"{files} files",
        file=sys.stderr,
        disable=None,
    )


def _print_plan(todo: Any, as_json: bool) -> None:
    verb = todo.direction
    if as_json:
        items = [{"key": i.key, "path": str(i.path), "size": i.size} for i in todo.items]
        refused = [{"item": w, "error": e} for w, e in todo.refused]
        click.echo(
            json.dumps(
                {"direction": verb, "items": items, "skipped": todo.skipped, "refused": refused}
            )
        )
        return
    for item in todo.items:
        source = f"s3://{todo.bucket}/{_printable(item.key)}"
        if verb == "download":
            click.echo(f"(dry run) download {source} to {item.path}")
        elif verb == "upload":
            click.echo(f"(dry run) upload {item.path} to {source}")
        else:
            target = f"s3://{todo.target_bucket}/{_printable(item.target_key or '')}"
            click.echo(f"(dry run) copy {source} to {target}")
    for _what, error in todo.refused:
        click.echo(f"altus: {_printable(error)}", err=True)
    click.echo(
        f"{len(todo.items)} to copy ({todo.total_bytes} bytes), {todo.skipped} already there"
    )


def _print_report(report: CopyReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for _what, error in report.failed:
        click.echo(f"altus: error: {_printable(error)}", err=True)
    rate = report.bytes / report.seconds / 1e6 if report.seconds else 0.0
    click.echo(
        f"copied {report.copied} files ({report.bytes / 1e6:.1f} MB, {rate:.1f} MB/s), "
        f"skipped {report.skipped} already there, {len(report.failed)} failed",
        err=True,
    )


@data.command()
@click.argument("url")
@click.option("-r", "--recursive", is_flag=True, help="Every object below URL.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed.")
@_connection
def rm(url: str, recursive: bool, dry_run: bool, **options: Any) -> None:
    """Remove an object, or with -r everything below a prefix (wildcards allowed)."""
    from altus.storage.objects import parse_location

    location = parse_location(url)
    if not location.is_remote:
        raise AltusError(f"{url}: altus data rm removes objects in S3, not local files")
    client = _client(options)
    keys = _keys_to_remove(client, location, recursive)
    if dry_run:
        for key in keys:
            click.echo(f"(dry run) remove s3://{location.bucket}/{_printable(key)}")
        return
    client.delete_keys(location.bucket, keys)
    click.echo(f"removed {len(keys)} objects", err=True)


def _keys_to_remove(client: S3Client, location: Any, recursive: bool) -> list[str]:
    from altus.data import remote_entries
    from altus.storage.objects import Location

    if not recursive and not location.has_wildcard:
        if not location.path or location.path.endswith("/"):
            raise AltusError(f"{location}: name an object, or remove a prefix with -r")
        return [location.path]
    path = location.path
    if not location.has_wildcard and path and not path.endswith("/"):
        path += "/"
    entries = remote_entries(client, Location(location.bucket, path), recursive=True)
    return [entry.key for entry in entries if not entry.is_folder]


@data.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_connection
def du(url: str, as_json: bool, **options: Any) -> None:
    """Total size and number of objects below URL."""
    import altus.data

    entries = [e for e in altus.data.ls(url, recursive=True, **options) if not e.is_folder]
    total = sum(e.size for e in entries)
    if as_json:
        click.echo(json.dumps({"url": url, "objects": len(entries), "bytes": total}))
    else:
        from altus.cli.output import format_size

        objects = f"{len(entries)} object" + ("" if len(entries) == 1 else "s")
        click.echo(f"{format_size(total)} ({total:,} bytes) in {objects}  {url}")


@data.command()
@click.argument("url")
@_connection
def cat(url: str, **options: Any) -> None:
    """Write an object's bytes to standard output."""
    import altus.data

    out = sys.stdout.buffer
    with altus.data.open(url, **options) as reader:
        while block := reader.read(1 << 20):
            out.write(block)
    out.flush()


@data.command()
@click.argument("url")
@_connection
def mb(url: str, **options: Any) -> None:
    """Make a bucket (s3://NAME)."""
    import altus.data

    altus.data.make_bucket(url, **options)
    click.echo(f"made bucket {url.rstrip('/')}", err=True)
