"""`cauldron mix` after a kill: a rerun with the same inputs keeps the scatter files and finished shards."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines.cauldron_mix as mix
from cauldron.mix_shuffle import gather_shard
from cauldron.schema import CAULDRON_ARROW_SCHEMA
from pipelines.cauldron_mix import KEY_FILE, MixConfig, run_mix

pytestmark = pytest.mark.slow


def write_subsets(root):
    for name, rows, images in (("pics", 30, 1), ("chat", 40, 0)):
        (root / name).mkdir(parents=True)
        table = pa.Table.from_pylist(
            [
                {
                    "images": [{"bytes": f"image {name} {row}".encode(), "path": None}] * images,
                    "texts": [{"user": f"question {row}?", "assistant": "The answer is " + "yes " * (row % 7 + 1), "source": name}],
                }
                for row in range(rows)
            ],
            schema=CAULDRON_ARROW_SCHEMA,
        )
        pq.write_table(table, root / name / "part-0.parquet", row_group_size=8)
    (root / "mixture.yaml").write_text("name: t\nunit: percent\ndatasets: {pics: 70, chat: 30}\n")


def manifests(folder):
    return {path.name: json.loads(path.read_text()) for path in sorted((folder / "shards").glob("*.manifest.json"))}


def test_a_killed_mix_resumes_with_its_scatter_files_and_finished_shards(tmp_path, ray_session, tiny_lm, monkeypatch):
    write_subsets(tmp_path / "in")
    config = MixConfig([tmp_path / "in"], tmp_path / "fresh", str(tiny_lm), tmp_path / "in" / "mixture.yaml", seed=3, samples_per_shard=8)
    fresh = run_mix(config)
    assert fresh["samples"] > 40 and fresh["shards"] > 4

    killed = tmp_path / "killed"
    config = MixConfig([tmp_path / "in"], killed, str(tiny_lm), tmp_path / "in" / "mixture.yaml", seed=3, samples_per_shard=8)

    def half_then_killed(sources, folder, out, samples_per_shard, picks):
        for shard in range((sources.offsets.size - 1) // 2):
            files, starts, sizes = sources.of(shard)
            gather_shard(shard, folder, files, starts, sizes, out, samples_per_shard)
        raise RuntimeError("killed")

    monkeypatch.setattr(mix, "_gather", half_then_killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_mix(config)
    assert not (killed / "mixture_report.json").exists()
    finished = {path.name: path.stat().st_mtime_ns for path in (killed / "shards").glob("sft-*")}
    scattered = {path.name: path.stat().st_mtime_ns for path in (killed / "scatter").glob("*.arrow")}
    assert finished and scattered

    seen = {}
    monkeypatch.undo()
    real_gather = mix._gather

    def watched(sources, folder, out, samples_per_shard, picks):
        seen["scatter"] = {path.name: path.stat().st_mtime_ns for path in folder.glob("*.arrow")}
        return real_gather(sources, folder, out, samples_per_shard, picks)

    monkeypatch.setattr(mix, "_gather", watched)
    resumed = run_mix(config)
    assert seen["scatter"] == scattered  # no scatter task ran again
    assert {name: (killed / "shards" / name).stat().st_mtime_ns for name in finished} == finished  # nor these shards
    assert manifests(killed) == manifests(tmp_path / "fresh")  # same samples, same bytes, as a mix never killed
    assert resumed["samples"] == fresh["samples"] and not (killed / "scatter").exists()


def test_a_mix_with_another_key_starts_clean(tmp_path):
    output = tmp_path / "out"
    (output / "scatter").mkdir(parents=True)
    (output / "shards").mkdir()
    (output / "scatter" / KEY_FILE).write_text(json.dumps({"seed": 1}))
    (output / "scatter" / "000000.arrow").write_bytes(b"old")
    (output / "shards" / "sft-00000-00000.tar").write_bytes(b"old")
    config = MixConfig([tmp_path], output, "tok")
    mix._prepare(config, {"seed": 1}, output / "scatter")  # the same key: kept
    assert (output / "scatter" / "000000.arrow").exists() and (output / "shards" / "sft-00000-00000.tar").exists()
    mix._prepare(config, {"seed": 2}, output / "scatter")
    assert sorted(p.name for p in (output / "scatter").iterdir()) == [KEY_FILE]
    assert not list((output / "shards").iterdir())
    assert json.loads((output / "scatter" / KEY_FILE).read_text()) == {"seed": 2}
