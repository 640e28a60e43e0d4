"""`curate pdfs` from s3:// to s3://: a glob of shards and a folder of loose PDFs on the store; the shard's
output equals a local run's, loose pages name their object as their source."""

import io
import json
import tarfile

import pytest
import webdataset as wds

from tests.fixtures.pdf_writer import SyntheticPage, build_pdf
from tests.storage.runs import run, snapshot, upload_tree

pytestmark = pytest.mark.slow


def write_inputs(root):
    (root / "pdfa").mkdir(parents=True)
    with tarfile.open(root / "pdfa" / "part.tar", "w") as tar:
        for key, payload in [("a", build_pdf([SyntheticPage(lines=[f"shard page {p}"]) for p in range(2)])), ("b", b"%PDF-1.4 garbage")]:
            info = tarfile.TarInfo(f"{key}.pdf")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (root / "loose").mkdir()
    for i in range(2):
        (root / "loose" / f"doc{i}.pdf").write_bytes(build_pdf([SyntheticPage(lines=[f"loose {i}"])]))


def pdfs_args(root, output):
    return [
        "pdfs",
        "--input",
        f"{root}/pdfa/*.tar",
        f"{root}/loose",
        "--output",
        output,
        "--max-side",
        "300",
        "--pages-per-shard",
        "2",
        "--num-cpus",
        "2",
    ]


def test_pdfs_s3_to_s3(bucket, tmp_path):
    write_inputs(tmp_path / "in")
    upload_tree(tmp_path / "in", bucket / "in")
    run("curate", *pdfs_args(tmp_path / "in", tmp_path / "local"))
    output = bucket / "out"
    run("curate", *pdfs_args(bucket / "in", output))

    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["balanced"] and report["counts"]["kept"] == 2 + 2
    assert report["dropped_by_reason"] == {"corrupt_pdf": 1}
    loose = ("shards/loose", "ledger/loose")  # loose pages name their file (a local path, or the object's URL)
    assert snapshot(output, loose) == snapshot(tmp_path / "local", loose)
    shards = sorted(str(p) for p in (output / "shards").glob("loose-*.tar"))
    local = [str(p) for p in (tmp_path / "local" / "shards").glob("loose-*.tar")]
    assert [p.rsplit("/", 1)[1] for p in shards] == [p.rsplit("/", 1)[1] for p in sorted(local)]
    sources = []
    for shard in shards:
        (tmp_path / "copy.tar").write_bytes((bucket / shard.removeprefix(f"{bucket}/")).read_bytes())
        sources += [json.loads(s["json"])["source"] for s in wds.WebDataset(str(tmp_path / "copy.tar"), shardshuffle=False)]
    assert sorted(sources) == [f"{bucket}/in/loose/doc0.pdf", f"{bucket}/in/loose/doc1.pdf"]

    run("curate", *pdfs_args(bucket / "in", output))
    assert json.loads((output / "report.json").read_text())["resumed_partitions"] == 2
