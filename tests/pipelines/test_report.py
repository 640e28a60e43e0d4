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
