"""Bytes and requests it takes to count a tar's samples on object storage (`curation.shards.list_tar`).

A partition's input count comes from its tar (headers only), then the tar is read again to process it:
every byte of a shard that the count downloads is downloaded twice. One shard of N samples is written to
a moto S3 server (in this process, as in tests/storage); the bytes and GETs s3fs fetches while
`list_tar` counts it are recorded (patched S3File._fetch_range), with the time it took.

Two member sizes: 2.4 MB (a PDF of PDFA; the listing seeks over their data) and 32 KiB (an image of
an image-text pair; read through in growing blocks). Run the same script in a checkout of an earlier
commit for the numbers before.

    python benchmarks/tar_listing_bytes.py                    # 2.4 MB x 4/16/64, 32 KiB x 64/256/1024
    python benchmarks/tar_listing_bytes.py --scales 1 2 --json rows.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.shards import PartitionShardWriter, list_tar  # noqa: E402
from curation.storage import ObjectPath  # noqa: E402

S3_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
SHAPES = {"pdf page": (2_400_000, 4), "pair image": (32 << 10, 64)}  # member bytes, samples at scale 1


def measure(bucket: ObjectPath, label: str, member_bytes: int, samples: int) -> dict[str, Any]:
    import s3fs

    out = bucket / uuid.uuid4().hex[:8]
    writer = PartitionShardWriter(out, "p", samples_per_shard=samples)
    for i in range(samples):
        writer.write({"__key__": f"k{i:06d}", "bin": bytes([i % 251]) * member_bytes, "json": b"{}"})
    size = writer.close()["bytes"]
    fetched: list[int] = []
    real = s3fs.core.S3File._fetch_range

    def counting(self: Any, start: int, end: int) -> bytes:
        fetched.append(end - start)
        return real(self, start, end)

    s3fs.core.S3File._fetch_range = counting
    try:
        started = time.perf_counter()
        units = list_tar(out / "p-00000.tar").units
        seconds = time.perf_counter() - started
    finally:
        s3fs.core.S3File._fetch_range = real
    assert units == samples, (units, samples)
    return {
        "shape": label,
        "samples": samples,
        "shard_mb": round(size / 2**20, 2),
        "fetched_mb": round(sum(fetched) / 2**20, 2),
        "gets": len(fetched),
        "seconds": round(seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="multiples of the base sample counts")
    parser.add_argument("--json", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(S3_ENVIRONMENT, AWS_ENDPOINT_URL_S3=f"http://{host}:{port}")
    try:
        bucket = ObjectPath(f"s3://bench-{uuid.uuid4().hex[:12]}")
        bucket.fs.mkdir(bucket.path)
        rows = [measure(bucket, label, size, base * scale) for label, (size, base) in SHAPES.items() for scale in args.scales]
    finally:
        server.stop()
    print("| members | samples | shard MB | fetched MB | GETs | seconds |")
    for row in rows:
        print(f"| {row['shape']} | {row['samples']} | {row['shard_mb']} | {row['fetched_mb']} | {row['gets']} | {row['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
