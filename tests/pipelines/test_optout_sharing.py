"""Opt-out verdicts reach every worker through Ray's object store without a copy per worker."""

import numpy as np
import pytest

from curation.optout import OptOutVerdicts, UncheckedUrls
from curation.optout_lists import DoNotTrainList
from curation.url_hashes import HashSet, url_key

pytestmark = pytest.mark.slow


def _probe(verdicts: OptOutVerdicts, urls: list[str]) -> dict:
    arrays = [verdicts.spawning_opted_out.hashes, verdicts.lists.urls.hashes, verdicts.lists.domains.hashes, verdicts.unchecked.urls.hashes]
    return {
        "copied": [bool(a.flags.owndata or a.flags.writeable) for a in arrays],
        "sources": [verdicts.source(u) for u in urls],
        "unchecked": [verdicts.unchecked_reason(u) for u in urls],
    }


def test_hash_arrays_are_read_zero_copy_by_every_worker(ray_session):
    import ray

    opted = [f"https://img.example/{i}.jpg" for i in range(200_000)]
    verdicts = OptOutVerdicts(
        DoNotTrainList.of(["blocked.example", "https://listed.example/x.jpg"]),
        HashSet.of(url_key(u) for u in opted),
        UncheckedUrls.of({url_key("https://down.example/a.jpg"): "HTTP 503"}),
    )
    assert verdicts.spawning_opted_out.hashes.nbytes == 8 * len(opted)
    urls = [
        opted[123],
        "https://img.example/not-opted.jpg",
        "https://cdn.blocked.example/a.jpg",
        "https://listed.example/x.jpg",
        "https://down.example/a.jpg",
    ]
    ref = ray.put(verdicts)
    probe = ray.remote(num_cpus=0)(_probe)
    results = ray.get([probe.remote(ref, urls) for _ in range(2)])
    for result in results:
        assert result["copied"] == [False] * 4  # read-only views of the object store's one copy
        assert result["sources"] == ["spawning", None, "list:domain:blocked.example", "list:url", None]
        assert result["unchecked"] == [None, None, None, None, "HTTP 503"]
    assert np.array_equal(ray.get(ref).spawning_opted_out.hashes, verdicts.spawning_opted_out.hashes)
