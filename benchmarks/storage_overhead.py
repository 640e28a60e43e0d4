"""Storage layer overhead: our writers and readers against plain tarfile / pyarrow doing the same work,
on a local folder and on an S3 server, same run.

Each sample is a key, a small JSON and a `--payload`-byte blob (an encoded image's size). Operations:

    write shards   N samples into shards of S samples, each with its sha256, then a JSON manifest
                   ours: `curation.shards.PartitionShardWriter` (temporary name, rename or upload, manifest last)
                   plain: `tarfile` straight to the final name, `hashlib`, `json.dump`
    read shards    list the shards, then every member of every shard
                   ours: `glob` on the storage path + `curation.shards.iter_tar_samples` (the guarded reader)
                   plain: `Path.glob` + `tarfile` (on S3: one `cat_file` per shard, then `tarfile` in memory)
    write parquet  N rows (id, text, blob) in row groups of 1,000
                   ours: `curation.atomic.write_parquet`; plain: `pq.write_table` to the final name
    read parquet   every row as a dict
                   ours: `curation.readers.iter_rows_checked` (row group by row group, damage accounted)
                   plain: `pq.read_table(...).to_pylist()` (on S3: one `cat_file`, then from memory)

Local: ours vs plain on the same folder kind, the ratio is the storage layer's cost (target ~1.0x).
S3 (moto's server in a subprocess on 127.0.0.1, clients pointed at it by AWS_ENDPOINT_URL_S3 as in
tests/storage): ours vs plain s3fs calls, the S3 requests each side makes (counted in s3fs), and shard
sizes S and 10*S side by side, to show what one request costs and why big shards matter.
Sizes are 1x/4x/16x of `--samples`; each operation is the median of `--rounds` alternating rounds.

    python benchmarks/storage_overhead.py                 # ~1 minute on 2 cores
    python benchmarks/storage_overhead.py --samples 2000 --scales 1 4 --no-s3
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.atomic import write_parquet  # noqa: E402
from curation.readers import iter_rows_checked  # noqa: E402
from curation.shards import PartitionShardWriter, iter_tar_samples  # noqa: E402
from curation.storage import ObjectPath, StoragePath, remove_tree  # noqa: E402

ROW_GROUP = 1000
S3_ENVIRONMENT = {  # as tests/storage/conftest.py: the machine's own AWS files and metadata service are never used
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_MOTO = (
    "import sys, logging; from moto.server import ThreadedMotoServer; logging.getLogger('werkzeug').setLevel(logging.ERROR); "
    "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start(); "
    "print('%s:%s' % s.get_host_and_port(), flush=True); sys.stdin.read(); s.stop()"
)


def samples(count: int, payload: int) -> list[dict[str, bytes | str]]:
    blob = os.urandom(payload)  # incompressible, like an encoded image; one blob shared keeps memory flat
    return [{"__key__": f"s{i:07d}", "json": json.dumps({"id": i, "caption": f"sample {i}"}).encode(), "jpg": blob} for i in range(count)]


def rows_table(count: int, payload: int) -> pa.Table:
    """Distinct blobs: parquet's dictionary encoding would store one shared blob once."""
    blobs = os.urandom(count * payload)
    return pa.table(
        {
            "id": [f"r{i}" for i in range(count)],
            "text": [f"row {i} " * 8 for i in range(count)],
            "blob": [blobs[i * payload : (i + 1) * payload] for i in range(count)],
        }
    )


# -- ours ----------------------------------------------------------------------------------------------
def ours_write_shards(out: StoragePath, data: list[dict[str, Any]], per_shard: int) -> None:
    writer = PartitionShardWriter(out, "part", per_shard)
    for sample in data:
        writer.write(sample)
    writer.close()


def ours_read_shards(out: StoragePath) -> int:
    shards: list[StoragePath] = sorted(out.glob("part-*.tar"), key=str)
    return sum(1 for shard in shards for _ in iter_tar_samples(shard))


def ours_write_parquet(path: StoragePath, table: pa.Table) -> None:
    write_parquet(path, table, row_group_size=ROW_GROUP)


def ours_read_parquet(path: StoragePath) -> int:
    return sum(1 for _ in iter_rows_checked(path))


# -- plain: pathlib / tarfile / pyarrow, and s3fs calls on the store ---------------------------------------
def _tar_bytes(chunk: list[dict[str, Any]], target: str | io.BytesIO) -> None:
    with tarfile.open(fileobj=target, mode="w") if isinstance(target, io.BytesIO) else tarfile.open(target, "w") as tar:
        for sample in chunk:
            for ext, payload in sample.items():
                if not ext.startswith("__"):
                    info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


def plain_write_shards(out: StoragePath, data: list[dict[str, Any]], per_shard: int) -> None:
    shards = []
    for n, start in enumerate(range(0, len(data), per_shard)):
        name = f"part-{n:05d}.tar"
        if isinstance(out, ObjectPath):
            buffer = io.BytesIO()
            _tar_bytes(data[start : start + per_shard], buffer)
            body = buffer.getvalue()
            out.fs.pipe_file(f"{out.path}/{name}", body)
        else:
            out.mkdir(parents=True, exist_ok=True)
            _tar_bytes(data[start : start + per_shard], str(out / name))
            body = (out / name).read_bytes()
        shards.append({"name": name, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    manifest = json.dumps({"partition": "part", "shards": shards}).encode()
    if isinstance(out, ObjectPath):
        out.fs.pipe_file(f"{out.path}/part.manifest.json", manifest)
    else:
        (out / "part.manifest.json").write_bytes(manifest)


def plain_read_shards(out: StoragePath) -> int:
    members = 0
    if isinstance(out, ObjectPath):
        names = sorted(p for p in out.fs.ls(out.path, detail=False) if p.rsplit("/", 1)[-1].startswith("part-"))
        sources: Iterator[Any] = (io.BytesIO(out.fs.cat_file(name)) for name in names)
    else:
        sources = (open(p, "rb") for p in sorted(out.glob("part-*.tar")))
    for source in sources:
        with source, tarfile.open(fileobj=source, mode="r:") as tar:
            for member in tar:
                handle = tar.extractfile(member)
                assert handle is not None
                handle.read()
                members += 1
    return members // 2  # two members a sample: json and jpg


def plain_write_parquet(path: StoragePath, table: pa.Table) -> None:
    if isinstance(path, ObjectPath):
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, row_group_size=ROW_GROUP)
        path.fs.pipe_file(path.path, buffer.getvalue().to_pybytes())
    else:
        pq.write_table(table, path, row_group_size=ROW_GROUP)


def plain_read_parquet(path: StoragePath) -> int:
    source = pa.BufferReader(path.fs.cat_file(path.path)) if isinstance(path, ObjectPath) else path
    return len(pq.read_table(source).to_pylist())


# -- measuring -------------------------------------------------------------------------------------------
@dataclass
class Row:
    where: str
    op: str
    samples: int
    per_shard: int | str
    ours_s: float
    plain_s: float
    ours_requests: int | str = "-"
    plain_requests: int | str = "-"

    @property
    def ratio(self) -> float:
        return self.ours_s / self.plain_s


class RequestCounter:
    """Counts the S3 API calls s3fs makes (every one goes through `S3FileSystem._call_s3`)."""

    def __init__(self) -> None:
        self.calls = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        import s3fs

        original = s3fs.S3FileSystem._call_s3
        counter = self

        async def counted(fs: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return await original(fs, method, *args, **kwargs)

        s3fs.S3FileSystem._call_s3 = counted
        try:
            yield
        finally:
            s3fs.S3FileSystem._call_s3 = original


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process (it does not take the client's GIL), environment pointed at it."""
    process = subprocess.Popen([sys.executable, "-c", _MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        endpoint = f"http://{process.stdout.readline().strip()}"
        os.environ.update({**S3_ENVIRONMENT, "AWS_ENDPOINT_URL_S3": endpoint})
        yield endpoint
    finally:
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=30)


def compare(
    rounds: int,
    target: Callable[[], StoragePath],
    ours: Callable[[StoragePath], object],
    plain: Callable[[StoragePath], object],
    counter: RequestCounter | None,
    discard: bool = False,
) -> tuple[Measured, Measured]:
    """Ours and plain, alternating for `rounds` rounds, each on `target()` (removed after when `discard`)."""
    runs: dict[str, list[Measured]] = {"ours": [], "plain": []}
    for round_ in range(rounds):
        order = [("ours", ours), ("plain", plain)]
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            location = target()
            before = counter.calls if counter else 0
            started = time.perf_counter()
            result = run(location)
            runs[name].append(Measured(time.perf_counter() - started, counter.calls - before if counter else 0, result))
            if discard and location.is_dir():
                remove_tree(location)
            elif discard:
                location.unlink()
    return _median(runs["ours"]), _median(runs["plain"])


@dataclass(frozen=True)
class Measured:
    seconds: float
    requests: int
    result: object


def _median(runs: list[Measured]) -> Measured:
    return Measured(statistics.median(r.seconds for r in runs), runs[-1].requests, runs[-1].result)


class Bench:
    """The operations at one size under one root (a local folder or a bucket)."""

    def __init__(self, where: str, root: StoragePath, count: int, args: argparse.Namespace, counter: RequestCounter | None) -> None:
        self.where, self.root, self.count, self.rounds, self.counter = where, root, count, args.rounds, counter
        self.data = samples(count, args.payload)
        self.table = rows_table(count, args.payload)

    def fresh(self, suffix: str = "") -> StoragePath:
        return self.root / f"tmp-{uuid.uuid4().hex[:8]}{suffix}"

    def row(self, op: str, per_shard: int | str, ours: Measured, plain: Measured) -> Row:
        requests = (ours.requests, plain.requests) if self.counter else ("-", "-")
        return Row(self.where, op, self.count, per_shard, ours.seconds, plain.seconds, *requests)

    def shards(self, per_shard: int) -> list[Row]:
        ours, plain = compare(
            self.rounds, self.fresh, partial(ours_write_shards, data=self.data, per_shard=per_shard),
            partial(plain_write_shards, data=self.data, per_shard=per_shard), self.counter, discard=True,
        )  # fmt: skip
        rows = [self.row("write shards", per_shard, ours, plain)]
        written = {side: self.root / f"{side}-{self.count}-{per_shard}" for side in ("ours", "plain")}
        ours_write_shards(written["ours"], self.data, per_shard)
        plain_write_shards(written["plain"], self.data, per_shard)
        ours, plain = compare(
            self.rounds, lambda: written["ours"], ours_read_shards, lambda _: plain_read_shards(written["plain"]), self.counter
        )
        assert ours.result == plain.result == self.count, (ours.result, plain.result)
        rows.append(self.row("read shards", per_shard, ours, plain))
        for path in written.values():
            remove_tree(path)
        return rows

    def parquet(self) -> list[Row]:
        ours, plain = compare(
            self.rounds, partial(self.fresh, ".parquet"), partial(ours_write_parquet, table=self.table),
            partial(plain_write_parquet, table=self.table), self.counter, discard=True,
        )  # fmt: skip
        rows = [self.row("write parquet", "-", ours, plain)]
        parquet = self.root / f"rows-{self.count}.parquet"
        plain_write_parquet(parquet, self.table)
        ours, plain = compare(self.rounds, lambda: parquet, ours_read_parquet, plain_read_parquet, self.counter)
        assert ours.result == plain.result == self.count, (ours.result, plain.result)
        rows.append(self.row("read parquet", "-", ours, plain))
        parquet.unlink()
        return rows


def print_table(rows: list[Row]) -> None:
    print("| where | operation | samples | per shard | ours | plain | ratio | S3 requests ours / plain |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.where} | {r.op} | {r.samples:,} | {r.per_shard} | {r.ours_s * 1e3:,.1f} ms | {r.plain_s * 1e3:,.1f} ms | "
            f"{r.ratio:.2f}x | {r.ours_requests} / {r.plain_requests} |",
            flush=True,
        )


def print_growth(rows: list[Row]) -> None:
    """How each operation's time grows with the data (x4 per scale step is linear)."""
    series: dict[tuple[str, str, int | str], list[Row]] = {}
    for r in rows:
        series.setdefault((r.where, r.op, r.per_shard), []).append(r)
    for (where, op, per_shard), runs in series.items():
        if len(runs) > 1:
            steps = ", ".join(f"x{b.ours_s / a.ours_s:.1f}" for a, b in zip(runs, runs[1:], strict=False))
            print(f"{where} {op} (per shard {per_shard}): ours grows {steps} per x{runs[1].samples // runs[0].samples} samples")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="samples (and parquet rows) at scale 1 (default 200)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="multiples of --samples (default 1 4 16)")
    parser.add_argument("--payload", type=int, default=2048, help="bytes of each sample's blob (default 2048)")
    parser.add_argument("--per-shard", type=int, default=100, help="samples per shard; S3 also runs 10x this (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, median reported (default 3)")
    parser.add_argument("--no-s3", action="store_true", help="local folder only")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="storage-overhead-") as scratch:
        for scale in args.scales:
            bench = Bench("local", Path(scratch), args.samples * scale, args, None)
            rows += bench.shards(args.per_shard) + bench.parquet()
    if not args.no_s3:
        counter = RequestCounter()
        with moto_server(), counter.installed():
            bucket = ObjectPath(f"s3://bench-{uuid.uuid4().hex[:8]}")
            bucket.fs.mkdir(bucket.path)
            for scale in args.scales:
                bench = Bench("s3", bucket, args.samples * scale, args, counter)
                rows += bench.shards(args.per_shard) + bench.shards(10 * args.per_shard) + bench.parquet()
            s3_costs(bucket, counter, rows)
    print(f"\n{args.payload:,}-byte blobs, median of {args.rounds} alternating rounds; ours/plain (lower is better)")
    print_table(rows)
    print_growth(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows], indent=1))
    return 0


def s3_costs(bucket: ObjectPath, counter: RequestCounter, rows: list[Row]) -> None:
    """What one small request costs on this server, and what it makes of the shard-size comparison."""
    probe = bucket / "probe"
    started = time.perf_counter()
    for i in range(50):
        probe.fs.pipe_file(f"{probe.path}/{i}", b"x")
    put_ms = (time.perf_counter() - started) / 50 * 1e3
    started = time.perf_counter()
    for i in range(50):
        probe.fs.cat_file(f"{probe.path}/{i}")
    get_ms = (time.perf_counter() - started) / 50 * 1e3
    print(f"\none small PUT: {put_ms:.1f} ms, one small GET: {get_ms:.1f} ms (loopback moto; a real store's requests take tens of ms)")
    s3 = [r for r in rows if r.where == "s3" and r.op in ("write shards", "read shards")]
    for per_shard in sorted({int(r.per_shard) for r in s3}):
        shards = 1_000_000 // per_shard
        print(
            f"1M samples at {per_shard}/shard: {shards:,} PUTs to write and {shards:,} GETs (+ as many HEADs) to read once, "
            f"{shards * (put_ms + 2 * get_ms) / 1e3:,.0f} s of request latency at the costs above"
        )
    for op in ("write shards", "read shards"):
        for count in sorted({r.samples for r in s3}):
            small, big = sorted((r for r in s3 if r.op == op and r.samples == count), key=lambda r: int(r.per_shard))
            print(
                f"s3 {op}, {count:,} samples: {small.per_shard}/shard {small.ours_s:.2f} s ({small.ours_requests} requests), "
                f"{big.per_shard}/shard {big.ours_s:.2f} s ({big.ours_requests} requests): x{small.ours_s / big.ours_s:.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
