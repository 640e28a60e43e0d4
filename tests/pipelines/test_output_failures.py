"""An output that fails in the middle of a partition fails that partition (no manifest) instead of
shortening it quietly; the run says so in one line and exits non-zero; a rerun finishes the partition."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.ledger import read_ledger
from curation.optout import OptOutVerdicts
from curation.pdf.settings import PdfSettings
from curation.pdf.sources import discover_partitions as discover_pdf_partitions
from curation.perplexity import PerplexityConfig
from curation.readers import discover_partitions
from curation.selection import DropRule
from curation.shards import _OpenShard, read_manifest
from pipelines.cli import main as curate
from pipelines.obelics import ObelicsConfig, write_partition
from pipelines.pairs import NsfwActor, PairsConfig, write_pairs_partition
from pipelines.partitioned import FAILURES_FILE
from pipelines.pdfs import PdfsConfig, write_pdf_partition
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf
from tests.hostile.craft import jpeg
from tests.pipelines.obelics_data import write_partitions

KEEP_ALL = DropRule(None, None, None, None, fraction_reason="top", threshold_reason="max", population=0, dropped=0)


@pytest.fixture
def disk_full_at_second_shard(monkeypatch):
    """The writer's second shard fails to publish as a full disk would."""
    real_publish = _OpenShard.publish
    calls = []

    def publish(self):
        calls.append(self.count)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_publish(self)

    monkeypatch.setattr(_OpenShard, "publish", publish)
    yield calls
    monkeypatch.setattr(_OpenShard, "publish", real_publish)


def test_obelics_partition_fails_on_an_output_error(tmp_path, disk_full_at_second_shard, monkeypatch):
    facts = write_partitions(tmp_path / "in", partitions=1, docs=10)
    (partition,) = discover_partitions([tmp_path / "in"])
    config = ObelicsConfig(
        inputs=[tmp_path / "in"], output=tmp_path / "out", ppl=PerplexityConfig(model="unused"), docs_per_shard=2, images="keep-urls"
    )
    with pytest.raises(OSError, match="No space left"):
        write_partition(config, OptOutVerdicts(), KEEP_ALL, "", partition, "fp")
    assert disk_full_at_second_shard == [2, 2] and read_manifest(tmp_path / "out" / "shards", partition.name) is None
    assert not list((tmp_path / "out" / "shards").glob(".*tmp*"))
    monkeypatch.undo()
    manifest = write_partition(config, OptOutVerdicts(), KEEP_ALL, "", partition, "fp")
    ledger = read_ledger([tmp_path / "out" / "ledger" / f"{partition.name}.parquet"])
    assert manifest["input"] == facts["input"] == manifest["count"] + ledger.num_rows


def test_pairs_partition_fails_on_an_output_error(tmp_path, disk_full_at_second_shard, monkeypatch):
    (tmp_path / "in").mkdir()
    rows = [{"image": jpeg(i), "TEXT": f"alt {i}", "top_caption": f"caption {i}", "punsafe": i / 10} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "a.parquet")
    (partition,) = discover_partitions([tmp_path / "in"])
    config = PairsConfig(inputs=[tmp_path / "in"], output=tmp_path / "out", nsfw_source="column", samples_per_shard=3)
    assert NsfwActor(config, threads=1).score_partition(partition)["scored"] == 10
    with pytest.raises(OSError, match="No space left"):
        write_pairs_partition(config, KEEP_ALL, "", partition, "fp")
    assert read_manifest(tmp_path / "out" / "shards", partition.name) is None
    monkeypatch.undo()
    manifest = write_pairs_partition(config, KEEP_ALL, "", partition, "fp")
    assert manifest["input"] == manifest["count"] == 10


def test_pdfs_partition_fails_on_an_output_error(tmp_path, disk_full_at_second_shard, monkeypatch):
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"d{i}.pdf").write_bytes(build_pdf([SyntheticPage(lines=[f"doc {i}"])] * 2))
    (partition,) = discover_pdf_partitions([str(tmp_path / "in")])
    config = PdfsConfig([str(tmp_path / "in")], tmp_path / "out", PdfSettings(max_side=120), pages_per_shard=2)
    with pytest.raises(OSError, match="No space left"):
        write_pdf_partition(config, partition, "fp")
    assert read_manifest(tmp_path / "out" / "shards", partition.name) is None
    monkeypatch.undo()
    manifest = write_pdf_partition(config, partition, "fp")
    assert manifest["input"] == manifest["count"] == 6 and manifest["documents"] == 3


@pytest.mark.slow
def test_an_output_error_through_the_cli_exits_non_zero_and_the_rerun_resumes(tmp_path, ray_session, capsys):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "in" / folder / f"d{i}.pdf").write_bytes(build_pdf([SyntheticPage(lines=[f"{folder} {i}"])]))
    obstacle = tmp_path / "out" / "ledger" / "b-pdfs-00000.parquet"
    (obstacle / "in-the-way").mkdir(parents=True)  # the ledger cannot be renamed into place
    argv = ["pdfs", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--max-side", "120"]

    assert curate(argv) == 1
    err = capsys.readouterr().err  # progress bars, then one line
    message = err.strip().splitlines()[-1]
    assert message.startswith("curate pdfs: error: 1 partition(s) failed in the write phase") and "Traceback" not in err
    assert "b-pdfs-00000: IsADirectoryError" in message
    assert read_manifest(tmp_path / "out" / "shards", "a-pdfs-00000") is not None
    assert read_manifest(tmp_path / "out" / "shards", "b-pdfs-00000") is None
    assert json.loads((tmp_path / "out" / FAILURES_FILE).read_text())["failed"].keys() == {"b-pdfs-00000"}

    (obstacle / "in-the-way").rmdir()
    obstacle.rmdir()
    assert curate(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["resumed_partitions"] == 1 and report["counts"]["kept"] == 4 and report["counts"]["balanced"]
    assert not (tmp_path / "out" / FAILURES_FILE).exists()
