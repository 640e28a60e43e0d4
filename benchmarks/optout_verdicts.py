"""Opt-out verdicts shared with workers: a Python set of URLs (baseline) against sorted uint64 hash arrays.

Every perplexity actor and write task needs the run's opt-out verdicts (do-not-train URLs and domains,
URLs the Spawning API reported opted out or could not answer). Measured side by side at 1x, 4x and 16x
opted-out URLs:

- copy per worker: what deserialising the verdicts allocates in each worker process. A set of strings
  is rebuilt object by object in every worker; hash arrays travel as pickle-5 out-of-band buffers, which
  Ray maps from its object store without a copy (measured here with the same protocol, in process);
- shared once: the serialised size, held once per node by the object store;
- lookups: image URLs looked up per second (half of them opted out), raw membership and the full
  `OptOutVerdicts.source` (normal form + hash + binary search) against a set lookup.

    python benchmarks/optout_verdicts.py                 # 100k / 400k / 1.6M URLs, ~1 min on 2 cores
    python benchmarks/optout_verdicts.py --sizes 10000 40000
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.optout import OptOutVerdicts  # noqa: E402
from curation.url_hashes import HashSet, url_key  # noqa: E402

PROBES = 50_000


def urls(n: int, offset: int = 0) -> list[str]:
    return [f"https://cdn{i % 997}.example.com/images/{i + offset:09d}/photo.jpg?w=640" for i in range(n)]


def allocated_by(step) -> tuple[object, int]:
    """(result, bytes still allocated after `step`), via tracemalloc."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = step()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return result, after - before


def out_of_band(value: object) -> tuple[bytes, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(value, protocol=5, buffer_callback=buffers.append), buffers


def rate(lookup, probes: list[str]) -> float:
    start = time.perf_counter()
    hits = sum(1 for url in probes if lookup(url))
    seconds = time.perf_counter() - start
    assert hits == len(probes) // 2, hits
    return len(probes) / seconds


def measure(n: int) -> dict[str, float]:
    opted = urls(n)
    as_set = set(opted)
    verdicts = OptOutVerdicts(spawning_opted_out=HashSet.of(url_key(u) for u in opted))
    set_payload = pickle.dumps(as_set, protocol=5)
    hash_payload, buffers = out_of_band(verdicts)
    _, set_copy = allocated_by(lambda: pickle.loads(set_payload))
    _, hash_copy = allocated_by(lambda: pickle.loads(hash_payload, buffers=buffers))
    probes = opted[: PROBES // 2] + urls(PROBES // 2, offset=n)
    keys = HashSet(verdicts.spawning_opted_out.hashes)
    return {
        "urls": n,
        "set_copy_mb": set_copy / 2**20,
        "hash_copy_mb": hash_copy / 2**20,
        "set_shared_mb": len(set_payload) / 2**20,
        "hash_shared_mb": (len(hash_payload) + sum(b.raw().nbytes for b in buffers)) / 2**20,
        "set_lookups_per_s": rate(as_set.__contains__, probes),
        "hash_lookups_per_s": rate(keys.__contains__, probes),
        "source_lookups_per_s": rate(lambda u: verdicts.source(u) is not None, probes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000, 1_600_000])
    args = parser.parse_args()
    print(
        f"{'URLs':>10} {'copy/worker set':>16} {'hashes':>8} {'shared set':>11} {'hashes':>8} "
        f"{'lookups/s set':>14} {'hashes':>9} {'source()':>9}"
    )
    rows = [measure(n) for n in args.sizes]
    for r in rows:
        print(
            f"{r['urls']:>10,} {r['set_copy_mb']:>13.1f} MB {r['hash_copy_mb']:>5.2f} MB {r['set_shared_mb']:>8.1f} MB "
            f"{r['hash_shared_mb']:>5.1f} MB {r['set_lookups_per_s']:>14,.0f} {r['hash_lookups_per_s']:>9,.0f} "
            f"{r['source_lookups_per_s']:>9,.0f}"
        )
    last = rows[-1]
    per_url = last["set_copy_mb"] * 2**20 / last["urls"]
    print(
        f"\nper worker: the set costs {per_url:.0f} bytes per opted-out URL in every worker, the hash arrays "
        f"{last['hash_copy_mb'] * 2**20 / last['urls']:.2f} (zero-copy) and 8 bytes per URL once per node."
    )
    print(
        f"at 100M opted-out URLs and 16 workers per node: set {per_url * 1e8 * 16 / 2**30:.0f} GiB per node, "
        f"hash arrays {8 * 1e8 / 2**30:.1f} GiB per node."
    )
    print(
        f"lookup cost: source() runs at {last['source_lookups_per_s'] / last['set_lookups_per_s']:.2f}x the set's rate "
        "(it also normalises the URL); at 350M image URLs that is "
        f"{350e6 / last['source_lookups_per_s'] / 60:.0f} CPU-minutes in all, spread over the workers."
    )


if __name__ == "__main__":
    main()
