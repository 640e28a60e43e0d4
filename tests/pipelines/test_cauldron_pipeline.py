import datasets
import pytest

from cauldron.schema import CAULDRON_FEATURES
from curation.ledger import read_ledger
from examples.build_demo_assets import build_cauldron_sample
from pipelines.cauldron import BuildConfig, MixConfig, SourceSpec, run_build, run_mix

pytestmark = pytest.mark.slow


def test_build_merges_dedups_and_mixes(tmp_path, ray_session, tiny_lm):
    build_cauldron_sample(tmp_path / "src")
    raw = tmp_path / "src" / "raw"
    config = BuildConfig(
        sources=[SourceSpec.parse(f"{name}={raw / name}") for name in ("vqav2", "ai2d", "openhermes")],
        output=tmp_path / "built",
        evals={"mmmu": tmp_path / "src" / "evals" / "mmmu"},
    )
    report = run_build(config)
    assert report["counts"] == {"input": 24 + 10 + 12, "kept": 8 - 1 + 10 + 12, "dropped": 16 + 1, "shards": 3, "balanced": True}
    ledger = read_ledger(sorted((tmp_path / "built" / "ledger").glob("*.parquet"))).to_pylist()
    (eval_row,) = [r for r in ledger if r["stage"] == "eval_dedup"]
    assert eval_row["reason"] == "eval_phash" and "leaked_copy.jpg" in eval_row["detail"]

    vqa = datasets.load_dataset("parquet", data_files=str(tmp_path / "built" / "vqav2" / "*.parquet"), split="train")
    assert vqa.features == CAULDRON_FEATURES
    assert len(vqa) == 7 and all(len(r["texts"]) == 3 for r in vqa)  # three questions per image, merged

    mix = run_mix(MixConfig([tmp_path / "built"], tmp_path / "sft", str(tiny_lm), tmp_path / "src" / "demo_mixture.yaml", total_tokens=200_000))
    assert mix["max_gap_points"] < 0.5
    assert (tmp_path / "sft" / "mixture_shares.png").stat().st_size > 1000
    assert run_build(config)["resumed_partitions"] == 3
