"""`--parquet` over a run where one partition loses every document: the folder loads as one table."""

import datasets
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from curation.obelics_parquet import OBELICS_PARQUET_SCHEMA
from curation.perplexity import PerplexityConfig
from pipelines.obelics import ObelicsConfig, run_obelics
from tests.pipelines.obelics_data import BLOCKED, PROSE, write_partitions

pytestmark = pytest.mark.slow


def test_parquet_folder_loads_with_one_partition_fully_dropped(tmp_path, tiny_lm, ray_session):
    write_partitions(tmp_path / "in", partitions=2, docs=10)
    urls = [f"https://{BLOCKED}/all/{n}.jpg" for n in range(4)]
    blocked = [{"texts": [PROSE[0], None], "images": [None, url], "metadata": None, "general_metadata": None} for url in urls]
    pq.write_table(pa.Table.from_pylist(blocked), tmp_path / "in" / "part-blocked.parquet")
    (tmp_path / "dnt.txt").write_text(f"{BLOCKED}\n")
    config = ObelicsConfig(
        inputs=[tmp_path / "in"],
        output=tmp_path / "out",
        ppl=PerplexityConfig(model=str(tiny_lm)),
        drop_top_ppl=0.1,
        do_not_train=[tmp_path / "dnt.txt"],
        parquet_output=True,
        images="keep-urls",
    )
    report = run_obelics(config)
    kept = report["counts"]["kept"]
    assert report["counts"]["balanced"] and kept > 0
    folder = tmp_path / "out" / "parquet"
    assert pq.read_table(folder / "part-blocked.parquet").num_rows == 0
    assert all(pq.read_schema(p).remove_metadata() == OBELICS_PARQUET_SCHEMA for p in folder.glob("*.parquet"))
    assert pads.dataset(folder, format="parquet").count_rows() == kept
    loaded = datasets.load_dataset("parquet", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == kept and set(loaded.column_names) == set(OBELICS_PARQUET_SCHEMA.names)
