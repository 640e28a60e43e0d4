import dataclasses
import json

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from curation.ledger import read_ledger
from curation.obelics import CleaningSettings
from curation.perplexity import PerplexityConfig
from pipelines.errors import PipelineError
from pipelines.obelics import ObelicsConfig, run_obelics
from tests.pipelines.obelics_data import BLOCKED, write_partitions

pytestmark = pytest.mark.slow


def shard_ids(output):
    urls = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    return [json.loads(s["json"])["id"] for s in wds.WebDataset(urls, shardshuffle=False)]


def test_end_to_end_accounting_optout_and_cutoff(tmp_path, tiny_lm, ray_session):
    facts = write_partitions(tmp_path / "in")
    dnt = tmp_path / "dnt.txt"
    dnt.write_text(f"{BLOCKED}\n")
    config = ObelicsConfig(
        inputs=[tmp_path / "in"],
        output=tmp_path / "out",
        ppl=PerplexityConfig(model=str(tiny_lm)),
        drop_top_ppl=0.1,
        do_not_train=[dnt],
        docs_per_shard=8,
        parquet_output=True,
        images="keep-urls",  # the URLs are fictional; test_obelics_download serves real ones
    )
    report = run_obelics(config)
    counts = report["counts"]
    assert counts["input"] == facts["input"] and counts["balanced"]

    kept = shard_ids(tmp_path / "out")
    ledger = read_ledger(sorted((tmp_path / "out" / "ledger").glob("*.parquet")))
    dropped = ledger.column("id").to_pylist()
    assert len(kept) == counts["kept"] and len(dropped) == counts["dropped"]
    assert len(set(kept)) == len(kept) and not set(kept) & set(dropped)
    reasons = report["dropped_by_reason"]
    assert reasons["malformed"] == facts["malformed"]
    assert reasons["opt_out"] == facts["optout_doc"]
    scored = facts["input"] - facts["malformed"] - facts["optout_doc"]
    assert reasons["ppl_top_fraction"] == round(0.1 * scored)
    assert report["selection"]["population"] == scored

    # No kept document references a blocked image; partially blocked documents lost exactly that image.
    for sample in wds.WebDataset(sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar")), shardshuffle=False):
        doc = json.loads(sample["json"])
        assert not any(BLOCKED in (u or "") for u in doc["images"])
        assert all((t is None) != (i is None) for t, i in zip(doc["texts"], doc["images"]))
    removed = pq.read_table(tmp_path / "out" / "removed_images").to_pylist()
    assert len([r for r in removed if r["reason"] == "opt_out"]) == facts["optout_doc"] + facts["optout_image"]

    # Every document above the cutoff is gone, every scored one below it is kept.
    scores = pq.read_table(tmp_path / "out" / "scores")
    cutoff = report["selection"]["cutoff"]
    for doc_id, ppl in zip(scores.column("id").to_pylist(), scores.column("perplexity").to_pylist()):
        assert (doc_id in kept) == (ppl < cutoff)
    assert (tmp_path / "out" / "perplexity_histogram.png").stat().st_size > 1000
    assert pq.read_table(tmp_path / "out" / "parquet").num_rows == counts["kept"]
    # Each partition was cleaned once, in the score phase; the stored cleanings are gone with the run.
    assert report["details"]["partitions cleaned in the score phase"] == 3
    assert report["details"]["partitions cleaned again in the write phase"] == 0
    assert not (tmp_path / "out" / "cleaned").exists()

    # A second run of the same command does no work and changes nothing.
    again = run_obelics(config)
    assert again["resumed_partitions"] == 3 and again["scoring"]["scored"] == 0
    assert again["details"]["partitions cleaned in the score phase"] == 0
    assert shard_ids(tmp_path / "out") == kept


def test_spawning_opt_out_through_the_pipeline(tmp_path, tiny_lm, ray_session, monkeypatch):
    from curation.spawning import SpawningConfig
    from tests.curation.spawning_server import MockSpawning

    facts = write_partitions(tmp_path / "in", partitions=2, docs=14)
    with MockSpawning(opted_out=BLOCKED) as mock:
        spawning = SpawningConfig(endpoint=mock.endpoint, token="secret", batch_size=10, backoff_initial_s=0.01)
        config = ObelicsConfig(
            inputs=[tmp_path / "in"],
            output=tmp_path / "out",
            ppl=PerplexityConfig(model=str(tiny_lm)),
            drop_top_ppl=None,
            spawning=spawning,
            images="keep-urls",
        )
        report = run_obelics(config)
        requests = len(mock.requests)
        assert requests >= 5 and report["optout"]["opted_out_by_api"] == facts["optout_doc"] + facts["optout_image"]
        assert report["dropped_by_reason"]["opt_out"] == facts["optout_doc"] and report["counts"]["balanced"]
        assert report["removed_images"]["opt_out"] == facts["optout_doc"] + facts["optout_image"]

        again = run_obelics(config)  # a rerun neither collects URLs nor asks the API: the answers were kept
        assert len(mock.requests) == requests and again["optout"]["answers_reused"] == 1
        assert again["optout"]["opted_out_by_api"] == report["optout"]["opted_out_by_api"]
        (tmp_path / "out" / "optout_answers.parquet").unlink()
        run_obelics(config)  # without them it collects again, and asks nothing: every verdict is in the URL cache
        assert len(mock.requests) == requests
        (tmp_path / "dnt.txt").write_text("https://unrelated.example/x.jpg\n")
        listed = run_obelics(dataclasses.replace(config, do_not_train=[tmp_path / "dnt.txt"]))
        assert "answers_reused" not in listed["optout"], "kept answers reused under other do-not-train lists"

        mock.refuse = ""  # the API now refuses every URL, and nothing is cached any more
        for path in [*(tmp_path / "out").glob("optout_cache.sqlite*"), tmp_path / "out" / "optout_answers.parquet"]:
            path.unlink()
        with pytest.raises(PipelineError, match="could not be checked"):
            run_obelics(config)
        dropping = dataclasses.replace(config, cleaning=CleaningSettings(on_unchecked="drop"))
        report = run_obelics(dropping)  # every document with an image has an unchecked URL now
        assert report["dropped_by_reason"]["opt_out_unchecked"] == facts["input"] - facts["malformed"]
