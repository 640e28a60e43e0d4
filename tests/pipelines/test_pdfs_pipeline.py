import datasets
import pytest

from curation.ledger import read_ledger
from curation.pdf.settings import PdfSettings
from pipelines.pdfs import PdfsConfig, run_pdfs
from tests.curation.pdf.docs import slow_page
from tests.fixtures.pdf_writer import SyntheticPage, build_pdf

pytestmark = pytest.mark.slow


def test_pdfs_end_to_end_with_bad_documents(tmp_path, ray_session):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        pages = [SyntheticPage(lines=[f"Document {i} page {p} text"]) for p in range(2)]
        (folder / f"doc{i}.pdf").write_bytes(build_pdf(pages))
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4 garbage")
    (folder / "locked.pdf").write_bytes(build_pdf([SyntheticPage(lines=["secret"])], user_password="pw"))
    (folder / "slow.pdf").write_bytes(build_pdf([SyntheticPage(lines=["fast page"]), slow_page()]))

    settings = PdfSettings(max_side=300, time_limit_s=0.5)
    report = run_pdfs(PdfsConfig([str(folder)], tmp_path / "out", settings, pages_per_shard=4))
    counts = report["counts"]
    assert counts["balanced"] and counts["kept"] == 3 * 2 + 1
    ledger = read_ledger(sorted((tmp_path / "out" / "ledger").glob("*.parquet"))).to_pylist()
    assert sorted(r["reason"] for r in ledger) == ["corrupt_pdf", "encrypted", "timeout"]
    assert any(r["id"].startswith("slow_p00001") for r in ledger)

    shards = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    rows = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    assert len(rows) == counts["kept"]
    texts = {f"{r['json']['doc_id']}/{r['json']['page_index']}": r["txt"] for r in rows}
    assert texts["doc1/1"] == "Document 1 page 1 text"
    assert all(max(r["png"].size) <= 300 for r in rows)

    again = run_pdfs(PdfsConfig([str(folder)], tmp_path / "out", settings, pages_per_shard=4))
    assert again["resumed_partitions"] == again["partitions"]
