import pyarrow as pa
import pyarrow.parquet as pq

from curation.readers import Partition
from curation.selection import DropRule
from pipelines.selection import select_scores


def test_write_jobs_carry_their_partition_only_and_not_the_rule(tmp_path):
    partitions = []
    for p in range(3):
        path = tmp_path / f"p{p}.parquet"
        pq.write_table(pa.table({"id": [f"{p}-{i}" for i in range(10)], "s": [1.0] * 10}), path)  # every score ties
        partitions.append(Partition(f"p{p}", tmp_path / f"in{p}.parquet"))
    selection = select_scores(tmp_path, partitions, "s", top_fraction=0.5, max_score=None, fraction_reason="top", threshold_reason="max")
    assert selection.rule.tie_hash is not None and selection.rule.dropped == 15
    jobs = selection.jobs(partitions, ("run",))
    assert [job.args for job in jobs] == [(part,) for part in partitions]
    assert not any(isinstance(arg, DropRule) for job in jobs for arg in job.args)
    assert len({job.fingerprint for job in jobs}) == 3  # each follows its own drops
