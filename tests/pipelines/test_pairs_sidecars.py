"""The pairs score and write phases without Ray: the sidecar streams in input order, a failure leaves
none, and the write phase reads it in step with the input."""

import dataclasses
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import pipelines.pairs as pairs_pipeline
from curation.ledger import read_ledger
from curation.pairs.clip_embedder import ClipConfig
from curation.pairs.nsfw_head import HeadSpec, NsfwHead, save_head
from curation.readers import Partition
from curation.storage import read_parquet
from examples.build_demo_assets import TINY_CLIP
from pipelines.errors import PartitionAccountingError
from pipelines.pairs import NsfwActor, PairsConfig, _select, write_pairs_partition


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_partition(path, n: int) -> None:
    rows = [{"image": jpeg(), "TEXT": f"alt {i}", "punsafe": i / n} for i in range(n)]
    rows[1]["image"] = None  # input: missing_image
    rows[4]["punsafe"] = None  # scoring: missing_nsfw_score
    rows[6]["TEXT"] = None  # input: missing_caption
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)


def column_config(tmp_path) -> PairsConfig:
    return PairsConfig([tmp_path / "in"], tmp_path / "out", input_kind="bytes", nsfw_source="column")


def test_the_sidecar_has_one_row_per_input_row_in_input_order(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    write_partition(tmp_path / "in" / "p.parquet", 10)
    monkeypatch.setattr(pairs_pipeline, "SCORE_CHUNK", 3)  # several chunks, rejections inside them
    stats = NsfwActor(column_config(tmp_path), threads=1).score_partition(Partition("p", tmp_path / "in" / "p.parquet"))
    assert stats["scored"] == 7
    rows = read_parquet(tmp_path / "out" / "scores" / "p.parquet").to_pylist()
    assert [r["id"] for r in rows] == [f"p/{i}" for i in range(10)]
    reasons = {r["id"]: r["reason"] for r in rows if r["reason"]}
    assert reasons == {"p/1": "missing_image", "p/4": "missing_nsfw_score", "p/6": "missing_caption"}
    assert rows[3]["nsfw"] == pytest.approx(0.3)


def test_a_partition_that_fails_while_scoring_leaves_no_sidecar(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    write_partition(tmp_path / "in" / "p.parquet", 10)
    monkeypatch.setattr(pairs_pipeline, "SCORE_CHUNK", 3)
    calls = []

    def failing(pairs):
        calls.append(len(pairs))
        if len(calls) == 2:
            raise OSError("lost the input mid-partition")
        return pairs_pipeline.column_scores(pairs)

    monkeypatch.setattr(pairs_pipeline, "column_scores", failing)
    stats = NsfwActor(column_config(tmp_path), threads=1).score_partition(Partition("p", tmp_path / "in" / "p.parquet"))
    assert "lost the input" in stats["failed"]
    assert not (tmp_path / "out" / "scores").exists() or not any((tmp_path / "out" / "scores").iterdir())


def test_asking_for_embeddings_later_scores_again_instead_of_reusing_the_sidecar(tmp_path):
    (tmp_path / "in").mkdir()
    write_partition(tmp_path / "in" / "p.parquet", 10)
    (tmp_path / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    save_head(NsfwHead(HeadSpec((32, 8, 1), ("relu", "sigmoid"))), tmp_path / "head.safetensors")
    plain = PairsConfig(
        [tmp_path / "in"],
        tmp_path / "out",
        input_kind="bytes",
        clip=ClipConfig(model=str(tmp_path / "tiny-clip.json"), pretrained=None),
        nsfw_head=tmp_path / "head.safetensors",
    )
    partition = Partition("p", tmp_path / "in" / "p.parquet")
    assert NsfwActor(plain, threads=1).score_partition(partition)["scored"] == 8
    again = NsfwActor(dataclasses.replace(plain, embeddings=True), threads=1)
    assert again.score_partition(partition)["scored"] == 8  # the sidecar alone is not enough
    assert read_parquet(tmp_path / "out" / "embeddings" / "p.parquet").num_rows == 8
    assert again.score_partition(partition)["reused"] == 10
    assert NsfwActor(plain, threads=1).score_partition(partition)["reused"] == 10


def test_the_write_phase_reads_the_sidecar_in_step_and_refuses_one_out_of_step(tmp_path):
    (tmp_path / "in").mkdir()
    write_partition(tmp_path / "in" / "p.parquet", 10)
    config = dataclasses.replace(column_config(tmp_path), nsfw_threshold=0.75)
    partition = Partition("p", tmp_path / "in" / "p.parquet")
    NsfwActor(config, threads=1).score_partition(partition)
    rule = _select(config, [partition]).rule
    manifest = write_pairs_partition(config, rule, "note", partition, "key")
    assert (manifest["input"], manifest["count"], manifest["dropped"]) == (10, 5, 5)
    assert manifest["dropped_by_reason"] == {"missing_image": 1, "missing_caption": 1, "missing_nsfw_score": 1, "nsfw_threshold": 2}
    ledger = read_ledger([tmp_path / "out" / "ledger" / "p.parquet"]).to_pylist()
    assert sorted(r["id"] for r in ledger if r["reason"] == "nsfw_threshold") == ["p/8", "p/9"]

    sidecar = tmp_path / "out" / "scores" / "p.parquet"
    table = pq.read_table(sidecar)
    pq.write_table(table.take(list(reversed(range(10)))).replace_schema_metadata(table.schema.metadata), sidecar)
    with pytest.raises(PartitionAccountingError, match="does not follow the input"):
        write_pairs_partition(config, rule, "note", partition, "key")
    pq.write_table(table.slice(0, 9), sidecar)  # a row short
    with pytest.raises(PartitionAccountingError, match="its end"):
        write_pairs_partition(config, rule, "note", partition, "key")


def test_scoring_removes_what_a_killed_scorer_left(tmp_path):
    (tmp_path / "in").mkdir()
    write_partition(tmp_path / "in" / "p.parquet", 10)
    scores = tmp_path / "out" / "scores"
    scores.mkdir(parents=True)
    (scores / ".p.parquet.tmp-99999").write_bytes(b"PAR1 half a sidecar")  # kill -9 mid-partition
    (scores / ".q.parquet.tmp-99999").write_bytes(b"another partition's, still being written")
    NsfwActor(column_config(tmp_path), threads=1).score_partition(Partition("p", tmp_path / "in" / "p.parquet"))
    assert sorted(p.name for p in scores.iterdir()) == [".q.parquet.tmp-99999", "p.parquet"]


def test_a_reused_sidecar_does_not_count_its_input_again(tmp_path, monkeypatch):
    """Counting a tar input lists it; a sidecar made from the same input file is reused without that pass."""
    (tmp_path / "in").mkdir()
    write_partition(tmp_path / "in" / "p.parquet", 10)
    counted = []

    def counting(config, partition):
        counted.append(partition.name)
        return 10

    monkeypatch.setattr(pairs_pipeline, "input_units", counting)
    actor = NsfwActor(column_config(tmp_path), threads=1)
    partition = Partition("p", tmp_path / "in" / "p.parquet")
    assert actor.score_partition(partition)["scored"] == 7 and counted == ["p"]
    assert actor.score_partition(partition)["reused"] == 10 and counted == ["p"]
