import json

import pytest

from curation.ledger import LedgerEntry, write_ledger
from pipelines.errors import RunFailed
from pipelines.report import RunReport, finish_report


def report_with(tmp_path, counted_input: int) -> RunReport:
    write_ledger(tmp_path / "ledger" / "p.parquet", [LedgerEntry("p#row1", "p", "read", "unreadable_input")])
    write_ledger(tmp_path / "ledger" / "q.parquet", [])
    report = RunReport("test", tmp_path, partitions=2)
    report.add_manifest({"partition": "p", "input": counted_input, "count": 2, "shards": []}, resumed=False)
    report.add_manifest({"partition": "q", "input": 1, "count": 1, "shards": []}, resumed=True)
    return report


def test_balanced_accounting_passes(tmp_path, capsys):
    payload = finish_report(report_with(tmp_path, 3), scores=None, cutoff=None, score_name="")
    assert payload["counts"]["balanced"] and payload["unbalanced_partitions"] == {}
    assert "input = kept + dropped: OK" in capsys.readouterr().out


def test_an_accounting_mismatch_is_reported_and_fails_the_run(tmp_path, capsys):
    with pytest.raises(RunFailed, match=r"accounting mismatch \(p: input 4 != kept 2 \+ dropped 1\)"):
        finish_report(report_with(tmp_path, 4), scores=None, cutoff=None, score_name="")
    written = json.loads((tmp_path / "report.json").read_text())
    assert not written["counts"]["balanced"] and written["unbalanced_partitions"] == {"p": "input 4 != kept 2 + dropped 1"}
    assert "MISMATCH" in capsys.readouterr().out


def test_reasons_come_from_the_manifests_and_rows_from_the_ledger_footers(tmp_path):
    write_ledger(tmp_path / "ledger" / "p.parquet", [LedgerEntry("a", "p", "s", "x"), LedgerEntry("b", "p", "s", "y")])
    write_ledger(tmp_path / "ledger" / "q.parquet", [LedgerEntry("c", "q", "s", "x")])
    report = RunReport("test", tmp_path, partitions=2)
    # the manifest's reasons are what the report sums (no ledger row is read for p) ...
    report.add_manifest({"partition": "p", "input": 3, "count": 1, "shards": [], "dropped_by_reason": {"x": 1, "z": 1}}, resumed=False)
    report.add_manifest({"partition": "q", "input": 2, "count": 1, "shards": []}, resumed=True)  # an older manifest: q's ledger is read
    payload = finish_report(report, scores=None, cutoff=None, score_name="")
    assert payload["dropped_by_reason"] == {"x": 2, "z": 1}
    assert payload["counts"]["dropped"] == 3 and payload["counts"]["balanced"]


def test_reasons_that_do_not_add_up_to_the_ledger_rows_are_a_mismatch(tmp_path):
    write_ledger(tmp_path / "ledger" / "p.parquet", [LedgerEntry("a", "p", "s", "x"), LedgerEntry("b", "p", "s", "y")])
    report = RunReport("test", tmp_path, partitions=1)
    report.add_manifest({"partition": "p", "input": 3, "count": 1, "shards": [], "dropped_by_reason": {"x": 1}}, resumed=False)
    with pytest.raises(RunFailed, match="dropped by reason 1 != ledger rows 2"):
        finish_report(report, scores=None, cutoff=None, score_name="")


def test_write_ledger_returns_the_rows_per_reason(tmp_path):
    entries = [LedgerEntry("a", "p", "s", "x"), LedgerEntry("b", "p", "s", "x"), LedgerEntry("c", "p", "s", "y")]
    assert write_ledger(tmp_path / "l.parquet", entries) == {"x": 2, "y": 1}
    assert write_ledger(tmp_path / "e.parquet", []) == {}
