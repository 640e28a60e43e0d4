"""Each OBELICS partition is cleaned once: the score phase stores the cleaning, the write phase reads it.

The cleaning function is wrapped by a counter in these non-Ray tests, so a second pass shows up as a
second call; a stale stored cleaning (another key) must be cleaned again and give the reference output.
"""

import dataclasses

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from curation.cleaned_store import open_cleaned, save_cleaned
from curation.obelics import clean_partition
from curation.optout import OptOutVerdicts
from curation.optout_lists import DoNotTrainList
from curation.perplexity import PerplexityConfig
from curation.readers import discover_partitions
from curation.selection import DropRule
from pipelines import obelics
from pipelines.obelics import ObelicsConfig, PerplexityActor, write_partition
from tests.pipelines.obelics_data import BLOCKED, write_partitions

KEEP_ALL = DropRule(None, None, None, None, fraction_reason="top", threshold_reason="max", population=0, dropped=0)


@pytest.fixture
def cleanings(monkeypatch):
    """The partitions cleaned by `pipelines.obelics`, in call order."""
    calls = []

    def counted(path, partition, *args, **kwargs):
        calls.append(partition)
        return clean_partition(path, partition, *args, **kwargs)

    monkeypatch.setattr(obelics, "clean_partition", counted)
    return calls


@pytest.fixture
def job(tmp_path):
    write_partitions(tmp_path / "in", partitions=1, docs=15)
    (partition,) = discover_partitions([tmp_path / "in"])
    verdicts = OptOutVerdicts(DoNotTrainList.of([BLOCKED]))
    config = ObelicsConfig(
        inputs=[tmp_path / "in"], output=tmp_path / "out", ppl=PerplexityConfig(model="unused"), docs_per_shard=4, images="keep-urls"
    )
    return config, verdicts, partition


def output(folder, partition):
    """What a write leaves: the samples of its shards, its ledger and removed-image rows."""
    urls = sorted(str(p) for p in (folder / "shards").glob("*.tar"))
    samples = sorted((s["__key__"], s["json"], s["images.tar"]) for s in wds.WebDataset(urls, shardshuffle=False))
    tables = [pq.read_table(folder / kind / f"{partition.name}.parquet").to_pylist() for kind in ("ledger", "removed_images")]
    return samples, *tables


def test_the_write_phase_reads_a_valid_stored_cleaning_and_recleans_a_stale_one(tmp_path, job, cleanings):
    config, verdicts, partition = job
    folder = config.output / "cleaned" / partition.name

    reference = dataclasses.replace(config, output=tmp_path / "reference")
    manifest = write_partition(reference, verdicts, KEEP_ALL, "", partition, "fp")  # nothing stored: cleans
    assert cleanings == [partition.name] and manifest["cleaning"] == "recleaned"
    expected = output(reference.output, partition)
    assert expected[0] and any(r["reason"] == "opt_out" for r in expected[1])

    key = obelics._cleaning_key(config, verdicts, partition)  # the key the score phase stores under
    save_cleaned(folder, clean_partition(partition.path, partition.name, config.cleaning, verdicts), key)
    manifest = write_partition(config, verdicts, KEEP_ALL, "", partition, "fp")
    assert cleanings == [partition.name], "the write phase cleaned a partition whose stored cleaning is valid"
    assert manifest["cleaning"] == "stored" and manifest["input"] == 16
    assert output(config.output, partition) == expected
    assert not folder.exists(), "the stored cleaning outlived the partition's manifest"

    # Stored under other opt-out verdicts (nothing blocked): stale, so it is cleaned again.
    unblocked = OptOutVerdicts()
    stale_key = obelics._cleaning_key(config, unblocked, partition)
    save_cleaned(folder, clean_partition(partition.path, partition.name, config.cleaning, unblocked), stale_key)
    manifest = write_partition(config, verdicts, KEEP_ALL, "", partition, "fp")
    assert cleanings == [partition.name] * 2 and manifest["cleaning"] == "recleaned"
    assert output(config.output, partition) == expected


@pytest.mark.slow
def test_the_score_phase_cleans_once_and_stores_it(tmp_path, job, cleanings, tiny_lm):
    config, verdicts, partition = job
    config = dataclasses.replace(config, ppl=PerplexityConfig(model=str(tiny_lm)))
    key = obelics._cleaning_key(config, verdicts, partition)
    actor = PerplexityActor(config, verdicts, threads=1)

    first = actor.score_partition(partition)
    assert cleanings == [partition.name] and first["cleaned"] == 1 and first["scored"] == first["documents"] > 0
    assert open_cleaned(config.output / "cleaned" / partition.name, key) is not None

    again = actor.score_partition(partition)  # a finished sidecar of the same cleaning: nothing to do
    assert cleanings == [partition.name] and again["cleaned"] == again["scored"] == 0
    assert again["documents"] == first["documents"]

    (config.output / "scores" / f"{partition.name}.parquet").unlink()  # scores lost: the cleaning is reused
    rescored = actor.score_partition(partition)
    assert cleanings == [partition.name] and rescored["cleaned"] == 0 and rescored["scored"] == first["documents"]

    manifest = write_partition(config, verdicts, KEEP_ALL, "", partition, "fp")
    assert cleanings == [partition.name] and manifest["cleaning"] == "stored"

    stale = dataclasses.replace(config, keep_cleaned=False, cleaning=dataclasses.replace(config.cleaning, max_image_pixels=10**6))
    assert actor.score_partition(partition)["cleaned"] == 0  # the actor's own settings did not change
    PerplexityActor(stale, verdicts, threads=1).score_partition(partition)
    assert cleanings == [partition.name] * 2 and not (stale.output / "cleaned" / partition.name).exists()
