"""An input partition replaced under the same name is processed again; the unchanged ones resume.

Each test runs a pipeline, rewrites one input file with other content under the same name, and runs it
again into the same output: the rerun's output must equal a fresh run's on the new inputs, and the
unchanged partitions' manifests must be the ones the first run wrote.
"""

import dataclasses
import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from curation.ledger import read_ledger
from curation.pdf.settings import PdfSettings
from curation.perplexity import PerplexityConfig
from pipelines.obelics import ObelicsConfig, run_obelics
from pipelines.pairs import PairsConfig, run_pairs
from pipelines.pdfs import PdfsConfig, run_pdfs
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf
from tests.pipelines.obelics_data import write_partitions

pytestmark = pytest.mark.slow


def output(folder):
    """What a run wrote, without timings: samples, ledger rows, and each manifest's counts."""
    urls = sorted(str(p) for p in (folder / "shards").glob("*.tar"))
    samples = sorted((s["__key__"], *(s[k] for k in sorted(s) if not k.startswith("__"))) for s in wds.WebDataset(urls, shardshuffle=False))
    ledger = sorted(map(str, read_ledger(sorted((folder / "ledger").glob("*.parquet"))).to_pylist()))
    manifests = {p.name: json.loads(p.read_text())["count"] for p in (folder / "shards").glob("*.manifest.json")}
    return samples, ledger, manifests


def manifest_times(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / "shards").glob("*.manifest.json")}


def scores(folder, partition, column):
    table = pq.read_table(folder / "scores" / f"{partition}.parquet")
    return dict(zip(table.column("id").to_pylist(), table.column(column).to_pylist(), strict=True))


def rerun_after_replacing(run, config, replace, changed):
    """Run, `replace()` one input, run again; returns (the rerun's report, a fresh run's output folder).
    Checks that only the manifest of partition `changed` was written again."""
    run(config)
    before = manifest_times(config.output)
    replace()
    report = run(config)
    after = manifest_times(config.output)
    assert {name for name in before if after[name] != before[name]} == {f"{changed}.manifest.json"}
    fresh = dataclasses.replace(config, output=config.output.parent / "fresh")
    run(fresh)
    assert output(config.output) == output(fresh.output), "the rerun kept output made from the old input"
    return report, fresh.output


def test_obelics_redoes_a_replaced_partition_and_rescores_changed_texts(tmp_path, tiny_lm, ray_session):
    write_partitions(tmp_path / "in", partitions=3, docs=10, seed=0)
    write_partitions(tmp_path / "new", partitions=3, docs=10, seed=1)  # the same ids, other texts
    config = ObelicsConfig(
        inputs=[tmp_path / "in"],
        output=tmp_path / "out",
        ppl=PerplexityConfig(model=str(tiny_lm)),
        drop_top_ppl=None,  # no global rule: an unchanged partition's drops do not depend on the changed one
        max_ppl=1e9,
        images="keep-urls",
        docs_per_shard=4,
    )
    replace = lambda: shutil.copyfile(tmp_path / "new" / "part-1.parquet", tmp_path / "in" / "part-1.parquet")  # noqa: E731
    report, fresh = rerun_after_replacing(run_obelics, config, replace, "part-1")
    assert report["resumed_partitions"] == 2
    assert report["scoring"]["scored"] > 0, "the replaced partition's changed texts were not scored"
    assert scores(config.output, "part-1", "perplexity") == scores(fresh, "part-1", "perplexity")  # no old score under an id


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_pairs(path, n, scale):
    """`n` pairs; `scale` changes their captions and `punsafe` scores (ids stay the row numbers)."""
    rows = [{"image": jpeg(i), "TEXT": f"alt {i}", "top_caption": f"caption {i} x{scale}", "punsafe": i * scale % n / n} for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_pairs_redoes_a_replaced_partition_with_its_new_scores(tmp_path, ray_session):
    (tmp_path / "in").mkdir()
    write_pairs(tmp_path / "in" / "a.parquet", 12, scale=1)
    write_pairs(tmp_path / "in" / "b.parquet", 12, scale=1)
    config = PairsConfig(inputs=[tmp_path / "in"], output=tmp_path / "out", nsfw_source="column", nsfw_threshold=0.5, caption="synthetic")
    report, fresh = rerun_after_replacing(run_pairs, config, lambda: write_pairs(tmp_path / "in" / "b.parquet", 12, scale=5), "b")
    assert report["resumed_partitions"] == 1
    assert scores(config.output, "b", "nsfw") == scores(fresh, "b", "nsfw") != scores(config.output, "a", "nsfw")


def test_pdfs_redoes_a_replaced_document_folder(tmp_path, ray_session):
    def write(folder, text):
        (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / folder / "doc.pdf").write_bytes(build_pdf([SyntheticPage(lines=[text])]))

    write("a", "first text of a")
    write("b", "first text of b")
    config = PdfsConfig([str(tmp_path / "in")], tmp_path / "out", PdfSettings(max_side=200), pages_per_shard=4)
    report, _ = rerun_after_replacing(run_pdfs, config, lambda: write("b", "second text of b"), "b-pdfs-00000")
    assert report["resumed_partitions"] == 1
    texts = [sample[-1] for sample in output(config.output)[0]]
    assert b"second text of b" in texts and b"first text of b" not in texts
