"""Shard streaming: every kind decodes, mixing follows the weights, readers split the data, resume is exact."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from curation.errors import SampleError
from curation.shards import TOO_LARGE
from training.config import SourceConfig, config_from_dict
from training.data import SampleEncoder, ShardLoader, Source, SourceStream, resolve_sources
from training.processor import Processor
from training.shard_samples import UnusableSourceError, UrlOnlyImagesError

from .conftest import IMAGE_SEQ_LEN, config_values


def make_config(tiny_checkpoint, shard_dirs, tmp_path, **sections):
    return config_from_dict(config_values(tiny_checkpoint, shard_dirs, tmp_path / "run", **sections))


def processor_for(config, tokenizer):
    return Processor(tokenizer, IMAGE_SEQ_LEN, config.images)


def same_batch(a, b) -> bool:
    keys = ("input_ids", "labels", "attention_mask", "position_ids", "pixel_values", "pixel_attention_mask")
    return all((a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and torch.equal(a[k], b[k])) for k in keys)


def only(config, name):
    config.data.sources = [s for s in config.data.sources if s.name == name]
    config.data.sources[0].weight = 1.0
    return config


@pytest.mark.parametrize("name, images_per_sample", [("obelics", None), ("pairs", 1), ("pdfs", 1), ("sft", None)])
def test_every_shard_kind_gives_labelled_samples(tiny_checkpoint, shard_dirs, tmp_path, tokenizer, name, images_per_sample):
    config = only(make_config(tiny_checkpoint, shard_dirs, tmp_path), name)
    loader = ShardLoader(config, processor_for(config, tokenizer))
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    for _ in range(4):
        batch = next(loader)
        assert batch["sources"] == {name: 2}
        labels = batch["labels"]
        assert ((labels != -100).sum(dim=1) > 0).all()
        assert not (labels[batch["input_ids"] == image_token] != -100).any()
        assert int((batch["input_ids"] == image_token).sum()) == IMAGE_SEQ_LEN * batch["num_images"]
        if images_per_sample:
            assert batch["num_images"] == 2 * images_per_sample
        assert batch["input_ids"].shape[1] <= config.data.sources[0].max_seq_len
    assert loader.stats()["taken"][name] == 8


def test_same_seed_same_batches_other_seed_other_batches(tiny_checkpoint, shard_dirs, tmp_path, tokenizer):
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path)
    processor = processor_for(config, tokenizer)
    first = [next(iter_) for iter_ in [ShardLoader(config, processor)] for _ in range(5)]
    again = ShardLoader(config, processor)
    assert all(same_batch(batch, next(again)) for batch in first)
    config.train.seed = 1
    other = ShardLoader(config, processor)
    assert not all(same_batch(batch, next(other)) for batch in first)


def test_mixing_follows_the_weights(tiny_checkpoint, shard_dirs, tmp_path, tokenizer):
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path, data={"batch_size": 8})
    config.data.sources = [s for s in config.data.sources if s.name in ("pairs", "pdfs")]
    config.data.sources[0].weight, config.data.sources[1].weight = 3.0, 1.0
    loader = ShardLoader(config, processor_for(config, tokenizer))
    counts: Counter[str] = Counter()
    for _ in range(50):
        counts.update(next(loader)["sources"])
    assert abs(counts["pairs"] / 400 - 0.75) < 0.06


@pytest.mark.parametrize("units", [1, 2, 3, 5])
def test_readers_partition_each_epoch(tiny_checkpoint, shard_dirs, tmp_path, units):
    """Two shards of 8 pairs: whole shards for <= 2 readers, every n-th sample beyond."""
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path)
    (pairs,) = [s for s in resolve_sources(config) if s.config.name == "pairs"]
    seen = []
    for unit in range(units):
        stream = SourceStream(pairs, unit, units, seed=0, buffer=4)
        keys = []
        while stream.epoch == 0:
            sample = next(stream)
            if stream.epoch == 0:
                keys.append(sample["__key__"])
        seen.append(keys)
    flat = [key for keys in seen for key in keys]
    assert sorted(flat) == sorted(f"pair-{i}" for i in range(16))


@pytest.mark.parametrize("units", [3, 5, 8])
def test_a_source_with_few_shards_is_read_by_a_group_of_readers_not_by_every_reader(shard_dirs, monkeypatch, units):
    """Two shards of 8 pairs, more readers: each reader opens one shard an epoch, each shard ceil(units / 2)
    readers, and together they still see every sample once."""
    import training.data

    read = training.data.iter_tar_samples
    opened: Counter[str] = Counter()

    def counting(path):
        opened[str(path)] += 1
        return read(path)

    monkeypatch.setattr(training.data, "iter_tar_samples", counting)
    pairs = Source(SourceConfig("pairs", "pairs", []), sorted(shard_dirs["pairs"].glob("*.tar")), 1.0)
    streams = [SourceStream(pairs, unit, units, seed=0, buffer=4) for unit in range(units)]
    seen = [sample["__key__"] for stream in streams for _, sample in stream._read(range(len(stream._files(0)[0])))]
    assert sorted(seen) == sorted(f"pair-{i}" for i in range(16))
    assert sorted(opened.values()) == sorted([units // 2, units - units // 2])  # every reader of every shard: 2 x units


@pytest.mark.parametrize("units", [1, 2, 3])
def test_a_stream_resumes_from_its_buffer_state_at_any_point(tiny_checkpoint, shard_dirs, tmp_path, units):
    """Mid-shard, with samples of earlier shards held, draining the buffer, at an epoch's end, and before the first draw."""
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path)
    for source in resolve_sources(config):
        for unit in range(units):
            for drawn in (0, 1, 5, 9, 17, 30):
                stream = SourceStream(source, unit, units, seed=0, buffer=8)
                for _ in range(drawn):
                    next(stream)
                state = json.loads(json.dumps(stream.buffer_state()))
                resumed = SourceStream(source, unit, units, seed=0, buffer=8, epoch=stream.epoch, position=stream.position, resume=state)
                assert [next(resumed)["__key__"] for _ in range(12)] == [next(stream)["__key__"] for _ in range(12)]


def test_a_resumed_stream_reads_only_the_shards_its_buffer_draws_from(shard_dirs, tmp_path, monkeypatch):
    """16 shards of 8 samples, a 4-sample buffer, resumed after 100 samples: a few shards read again, not 12."""
    import training.data

    for copy in range(8):
        for shard in sorted(shard_dirs["pairs"].glob("*.tar")):
            shutil.copy(shard, tmp_path / f"{copy}-{shard.name}")
    pairs = Source(SourceConfig("pairs", "pairs", []), sorted(tmp_path.glob("*.tar")), 1.0)
    stream = SourceStream(pairs, 0, 1, seed=0, buffer=4)
    for _ in range(100):
        next(stream)
    state = json.loads(json.dumps(stream.buffer_state()))
    expected = [next(stream)["__key__"] for _ in range(10)]
    read = training.data.iter_tar_samples
    opened: list[str] = []

    def counting(path):
        opened.append(str(path))
        return read(path)

    monkeypatch.setattr(training.data, "iter_tar_samples", counting)
    resumed = SourceStream(pairs, 0, 1, seed=0, buffer=4, epoch=stream.epoch, position=stream.position, resume=state)
    assert [next(resumed)["__key__"] for _ in range(10)] == expected
    assert len(opened) <= 5  # the shards holding the buffer's samples and the next ones; from the start: 14


@pytest.mark.parametrize("packing", [False, True])
def test_resume_from_a_position_continues_identically(tiny_checkpoint, shard_dirs, tmp_path, tokenizer, packing):
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path, data={"packing": packing, "packed_seq_len": 200})
    processor = processor_for(config, tokenizer)
    loader = ShardLoader(config, processor)
    for _ in range(7):
        next(loader)
    position = loader.position()
    expected = [next(loader) for _ in range(6)]
    resumed = ShardLoader(config, processor, position=position)
    assert all(same_batch(batch, next(resumed)) for batch in expected)


def test_resume_with_worker_processes(tiny_checkpoint, shard_dirs, tmp_path, tokenizer):
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path, data={"num_workers": 2})
    processor = processor_for(config, tokenizer)
    loader = ShardLoader(config, processor)
    for _ in range(5):  # odd: the next batch comes from the second worker
        next(loader)
    position = loader.position()
    expected = [next(loader) for _ in range(4)]
    resumed = ShardLoader(config, processor, position=position)
    assert all(same_batch(batch, next(resumed)) for batch in expected)


def test_packing_fills_sequences_with_whole_isolated_samples(tiny_checkpoint, shard_dirs, tmp_path, tokenizer):
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path, data={"packing": True, "packed_seq_len": 256})
    loader = ShardLoader(config, processor_for(config, tokenizer))
    samples_per_row = []
    for _ in range(4):
        batch = next(loader)
        assert batch["input_ids"].shape[1] <= 256
        for ids, labels, positions, mask in zip(batch["input_ids"], batch["labels"], batch["position_ids"], batch["attention_mask"]):
            real = mask.bool()
            ids, labels, positions = ids[real], labels[real], positions[real]
            assert int(ids[0]) == tokenizer.bos_token_id and int(ids[-1]) == tokenizer.eos_token_id
            starts = (ids == tokenizer.bos_token_id).nonzero().flatten()
            samples_per_row.append(len(starts))
            # each sample counts its positions from 0 and its first token is no target
            assert (positions == 0).nonzero().flatten().tolist() == starts.tolist()
            assert bool((positions.diff() == 1).logical_or(positions[1:] == 0).all())
            assert bool((labels[starts] == -100).all())
    assert max(samples_per_row) > 1
    unpacked = ShardLoader(make_config(tiny_checkpoint, shard_dirs, tmp_path), processor_for(config, tokenizer))
    assert next(unpacked)["position_ids"] is None


def test_unreadable_shard_is_skipped_and_missing_sources_reported(tiny_checkpoint, shard_dirs, tmp_path, tokenizer):
    broken = tmp_path / "broken"
    broken.mkdir()
    good = sorted(shard_dirs["pairs"].glob("*.tar"))[0].read_bytes()
    (broken / "a.tar").write_bytes(good[: len(good) // 2])  # cut mid-way
    (broken / "b.tar").write_bytes(good)
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path)
    config.data.sources = [config.data.sources[1]]
    config.data.sources[0].shards = [str(broken / "*.tar")]
    loader = ShardLoader(config, processor_for(config, tokenizer))
    for _ in range(8):
        assert next(loader)["sources"] == {"pairs": 2}

    config.data.sources[0].shards = [str(tmp_path / "nothing" / "*.tar")]
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        resolve_sources(config)
    config.data.sources[0].optional = True
    with pytest.raises(FileNotFoundError, match="no data source has shards"):
        resolve_sources(config)


def test_shuffle_buffer_holds_at_most_its_byte_cap_and_loses_nothing():
    sizes = [1000] * 60 + [5000] + [1000] * 60  # one sample over the cap
    read: list[int] = []

    def samples(first):
        for i, size in enumerate(sizes):
            read.append(size)
            yield (0, i), {"__key__": str(i), "png": bytes(size)}

    stream = SourceStream(Source(SourceConfig("s", "pairs", []), [], 1.0), 0, 1, seed=0, buffer=100, buffer_bytes=10_000)
    stream._read = samples  # type: ignore[method-assign]
    peak, given, keys = 0, 0, []
    for sample in stream._epoch([]):
        peak = max(peak, sum(read) - given)  # bytes read and not yet handed on, this sample included
        given += len(sample["png"])
        keys.append(int(sample["__key__"]))
    assert sorted(keys) == list(range(len(sizes))) and keys != sorted(keys)
    assert peak <= 10_000 + 5000  # the cap plus the sample that crossed it (100 samples would be 100,000)


@pytest.mark.parametrize("stop", [3, 7])
def test_damaged_shard_readings_are_counted_once_across_a_resume(tiny_checkpoint, shard_dirs, tmp_path, tokenizer, stop):
    broken = tmp_path / "broken"
    broken.mkdir()
    good = sorted(shard_dirs["pairs"].glob("*.tar"))[0].read_bytes()
    (broken / "a.tar").write_bytes(good[: len(good) // 2])  # cut mid-way
    (broken / "b.tar").write_bytes(good)
    config = only(make_config(tiny_checkpoint, shard_dirs, tmp_path), "pairs")
    config.data.sources[0].shards = [str(broken / "*.tar")]
    processor = processor_for(config, tokenizer)
    whole = ShardLoader(config, processor)
    for _ in range(10):
        next(whole)
    epochs = whole.position()["workers"]["0"]["sources"]["pairs"][0] + 1
    assert whole.stats()["shards_damaged"] == {"pairs": epochs} and epochs >= 2  # the damaged shard read each epoch

    first = ShardLoader(config, processor)
    for _ in range(stop):
        next(first)
    resumed = ShardLoader(config, processor, position=first.position())
    for _ in range(10 - stop):
        next(resumed)
    assert resumed.stats() == whole.stats()


@pytest.mark.parametrize("alone", [True, False])
def test_a_source_without_one_usable_sample_in_an_epoch_stops_the_run(tiny_checkpoint, shard_dirs, tmp_path, tokenizer, alone):
    """Alone it would loop forever without a batch; mixed, its weight would silently go to the others."""
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path)
    if alone:
        config = only(config, "sft")
    (sft,) = [source for source in config.data.sources if source.name == "sft"]
    sft.max_seq_len = 4  # every conversation is too long
    loader = ShardLoader(config, processor_for(config, tokenizer))
    with pytest.raises(UnusableSourceError, match=r"source 'sft': no sample of epoch 0 .* \{'too_long': \d+\}"):
        for _ in range(200):
            next(loader)


@pytest.mark.parametrize("kind", ["pairs", "pdf"])
def test_a_pair_or_page_whose_image_cannot_be_used_is_skipped_not_trained_as_text(tiny_checkpoint, shard_dirs, tmp_path, tokenizer, kind):
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path)
    encoder = SampleEncoder(config, processor_for(config, tokenizer))
    source = Source(SourceConfig("s", kind, []), [], 1.0)
    with pytest.raises(SampleError, match="decode_error"):
        encoder(source, {"__key__": "k", "png": b"not an image", "txt": b"A red square."}, 0)


@pytest.mark.parametrize("kind", ["interleaved", "pairs", "sft"])
def test_a_sample_the_shard_reader_cut_for_size_is_skipped_as_too_large(tiny_checkpoint, shard_dirs, tmp_path, tokenizer, kind):
    config = make_config(tiny_checkpoint, shard_dirs, tmp_path)
    encoder = SampleEncoder(config, processor_for(config, tokenizer))
    source = Source(SourceConfig("s", kind, []), [], 1.0)
    with pytest.raises(SampleError, match="too_large"):
        encoder(source, {"__key__": "k", TOO_LARGE: "over 1024 members"}, 0)


def test_url_only_images_fail_the_run_unless_the_source_skips_them(tiny_checkpoint, shard_dirs, tmp_path, tokenizer):
    config = only(make_config(tiny_checkpoint, shard_dirs, tmp_path), "obelics")
    config.data.sources[0].url_images = "fail"  # the default
    loader = ShardLoader(config, processor_for(config, tokenizer))
    with pytest.raises(UrlOnlyImagesError, match=r"\.tar: document .* only as URLs; run `curate obelics --images download`"):
        for _ in range(12):
            next(loader)

    config.data.sources[0].url_images = "skip"
    loader = ShardLoader(config, processor_for(config, tokenizer))
    images = sum(next(loader)["num_images"] for _ in range(6))
    stats = loader.stats()
    assert stats["url_images_skipped"]["obelics"] > 0
    assert stats["images"]["obelics"] == images > 0 and stats["taken"]["obelics"] == 12


def test_images_left_out_of_used_documents_are_counted_per_source_and_reason(tiny_checkpoint, shard_dirs, tmp_path, tokenizer):
    config = only(make_config(tiny_checkpoint, shard_dirs, tmp_path), "obelics")
    config.data.sources[0].max_images = 1
    loader = ShardLoader(config, processor_for(config, tokenizer))
    images = sum(next(loader)["num_images"] for _ in range(12))
    stats = loader.stats()
    assert stats["taken"]["obelics"] == 24 and stats["images"]["obelics"] == images <= 24
    assert set(stats["images_left_out"]) == {"obelics:max_images"} and stats["images_left_out"]["obelics:max_images"] > 0


def test_a_shard_read_again_after_a_storage_error_gives_each_sample_once(monkeypatch):
    from training import data

    calls = []

    def flaky(path):
        calls.append(path)
        for index in range(5):
            if len(calls) == 1 and index == 3:
                raise TimeoutError("read timed out")
            yield {"__key__": f"k{index}"}

    monkeypatch.setattr(data, "iter_tar_samples", flaky)
    keys = [sample["__key__"] for sample in data._tar_samples_retrying(Path("s.tar"), waits=(0.0,))]
    assert keys == ["k0", "k1", "k2", "k3", "k4"] and len(calls) == 2

    def always(path):
        yield {"__key__": "k0"}
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(data, "iter_tar_samples", always)
    with pytest.raises(ConnectionResetError):
        list(data._tar_samples_retrying(Path("s.tar"), waits=(0.0, 0.0)))
