"""Streaming training batches from WebDataset shards: read, mix by weight, encode, pack, collate.

Readers. Every DataLoader worker of every rank is one reader ("unit"); there are world_size x
num_workers of them. Each source gives each unit an endless, deterministic stream: per epoch, the shard
list is shuffled with (seed, source, epoch); a source with at least as many shards as units deals whole
shards to units. One with fewer (S shards) gives shard j to the units u with u % S == j, each keeping
every n-th of its samples (n: the units on that shard), so every shard is read ceil(units / S) times an
epoch, not once by every unit. A seeded buffer shuffles samples within the unit: it holds up to
`shuffle_buffer` samples and at most `shuffle_buffer_mb` of their bytes (a sample over it passes
straight through), so a node holds at most ranks x workers x sources x `shuffle_buffer_mb` in shuffle
buffers whatever the samples weigh.

Mixing. Each unit draws the source of its next sample with its own seeded generator, in proportion
to the source weights (normalised over the sources that have shards). A sample that cannot be
encoded (see `training.processor`) is counted under its reason and skipped. A unit that goes through a
whole epoch of a source without one usable sample stops the run (UnusableSourceError): the source is
misconfigured (kind, max_seq_len, max_images), and drawing from it would otherwise loop forever.

Position. A unit's state is small: its mixing generator, and per source the epoch, the number of
samples taken in it and the shuffle buffer's state (see `SourceStream`: O(buffer), not O(data)).
Every batch carries the state of its unit at the batch's end, so the main process always knows where
each unit stands, and a checkpoint stores that. On resume every unit reads again only the shards its
buffers hold samples of (decoding nothing) and continues with exactly the batches an uninterrupted
run would have produced, in the same order.

Damaged shards. A shard that breaks mid-way (truncated, garbage, unsafe member names) gives the
samples before the damage; the rest is skipped and the read counted per source (`shards_damaged`,
once per reading: a shard read in every epoch counts in every epoch). A resumed unit does not count
again the damage it meets while fast-forwarding: that reading is in the stored count already.

Packing (optional) concatenates whole samples, each with its BOS and EOS, into sequences of at most
`packed_seq_len` tokens, as the original training did, but with every sample isolated: its position
ids restart at 0 (the model attends within a sample only, see `training.model`) and its first token is
never a target, so no loss crosses samples.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import logging
import random
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cauldron.chat import IGNORE_INDEX
from cauldron.sft_shards import sample_to_row
from curation.errors import SampleError
from curation.shards import TOO_LARGE, UnsafeTarError, is_storage_error, iter_tar_samples
from curation.storage import StoragePath, glob_paths, is_url
from training.config import SourceConfig, TrainConfig
from training.processor import Encoded, Processor, pad_images
from training.shard_samples import UnusableSourceError, interleaved_nodes, single_image_nodes

log = logging.getLogger(__name__)
STORAGE_RETRY_WAITS = (1.0, 4.0, 16.0)  # seconds before each new read of a shard after a storage error


def resolve_shards(patterns: list[str]) -> list[StoragePath]:
    """Tar files matching the glob patterns (`**` allowed), local or object-store URLs
    (`s3://bucket/run/shards/*.tar`), sorted and de-duplicated."""
    found: set[StoragePath] = set()
    for pattern in patterns:
        if is_url(pattern):
            found.update(path for path in glob_paths(pattern) if path.name.endswith(".tar"))
            continue
        matches = glob.glob(pattern, recursive=True) or ([pattern] if Path(pattern).is_file() else [])
        found.update(Path(match) for match in matches if match.endswith(".tar") or Path(match).is_file())
    return sorted(found)


@dataclass
class Source:
    config: SourceConfig
    shards: list[StoragePath]
    share: float  # normalised mixture weight


def resolve_sources(config: TrainConfig) -> list[Source]:
    """Sources with their shard files and normalised weights; optional sources without shards left out."""
    found = []
    for source in config.data.sources:
        shards = resolve_shards(source.shards)
        if not shards:
            if source.optional:
                log.warning("source %s: no shard matches %s; left out", source.name, source.shards)
                continue
            raise FileNotFoundError(
                f"source {source.name!r}: no shard matches {source.shards} "
                f"(run the curate step that writes them, or mark the source optional)"
            )
        found.append((source, shards))
    if not found:
        raise FileNotFoundError("no data source has shards")
    total = sum(source.weight for source, _ in found)
    return [Source(source, shards, source.weight / total) for source, shards in found]


def stable_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little")


# ---------------------------------------------------------------------------------------------------
# One source, one unit: an endless deterministic stream of raw samples
# ---------------------------------------------------------------------------------------------------


Ref = tuple[int, int]  # a sample of a unit's epoch: (shard number in the unit's list, sample number in the shard)


class SourceStream:
    """Raw shard samples of one source for one unit, epoch after epoch; `epoch`/`position` say where it is.

    Resuming needs `buffer_state()` besides: the shuffle generator, the next sample to read and the
    samples the buffer holds, named by `Ref`, in buffer order. A resumed stream reads again only the
    shards the buffer holds samples of (a sample stays in a buffer of B for about B ln B draws at
    most), keeping those samples, and goes on from the next one. Without a buffer state (checkpoints written before
    there was one) it reads the epoch from its start and drops `position` samples.
    """

    def __init__(
        self,
        source: Source,
        unit: int,
        units: int,
        seed: int,
        buffer: int,
        epoch: int = 0,
        position: int = 0,
        damaged: int = 0,
        buffer_bytes: int | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.unit, self.units = unit, units
        self.seed, self.buffer, self.buffer_bytes = seed, max(1, buffer), buffer_bytes
        self.epoch, self.position = epoch, position
        self.damaged = damaged  # damaged shard readings so far
        self._skip = 0 if resume else position  # samples to drop (a position without a buffer state)
        self._rng = self._epoch_rng()
        self._pool: list[tuple[dict[str, Any], int]] = []  # held samples and their bytes ...
        self._refs: list[Ref] = []  # ... and their names, in the same order
        self._held = 0
        self._next: Ref = (0, 0)
        self._draining = False  # the epoch is read: the buffer empties in shuffled order
        self._counted: Ref = (0, 0)  # damage in a shard before this one is in `damaged` already
        self._read_any = False
        self._opened = -1  # the last shard number opened this epoch
        self._iterator = self._stream(resume)

    def __next__(self) -> dict[str, Any]:
        return next(self._iterator)

    def buffer_state(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists) shuffle state; cheap: taken before every draw."""
        return {"rng": _rng_state_to_json(self._rng.getstate()), "next": self._next, "pool": self._refs.copy(), "draining": self._draining}

    def _stream(self, resume: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
        while True:
            self._rng = self._epoch_rng()
            self._pool, self._refs, self._held = [], [], 0
            self._next, self._draining, self._counted, self._read_any, self._opened = (0, 0), False, (0, 0), False, -1
            held: list[Ref] = []
            if resume is not None:
                self._rng.setstate(_rng_state_from_json(resume["rng"]))
                self._next = self._counted = (int(resume["next"][0]), int(resume["next"][1]))
                held = [(int(k), int(i)) for k, i in resume["pool"]]
                self._draining = bool(resume["draining"])
                self._read_any = self._next != (0, 0)
                resume = None
            for sample in self._epoch(held):
                if self._skip:
                    self._skip -= 1
                    continue
                self.position += 1
                yield sample
            if not self._read_any:
                raise RuntimeError(
                    f"source {self.source.config.name!r} has no sample for reader {self.unit} of "
                    f"{self.units}; add shards or use fewer ranks/workers"
                )
            self.epoch, self.position = self.epoch + 1, 0

    def _epoch_rng(self) -> random.Random:
        return random.Random(stable_seed(self.seed, self.source.config.name, "samples", self.unit, self.epoch))

    def _epoch(self, held: list[Ref]) -> Iterator[dict[str, Any]]:
        """The epoch's samples through the shuffle buffer, from the point `_next`, `held` and `_draining` name."""
        count = len(self._files(self.epoch)[0])
        numbers: Iterable[int] = range(count)
        if self._next != (0, 0):  # only the shards the buffer holds samples of, then on from the next sample's
            again = sorted(n for n in {shard for shard, _ in held} | {self._next[0]} if n < count)
            numbers = [*again, *range(self._next[0] + 1, count)]
        reader = self._read(numbers)
        pending: list[tuple[Ref, dict[str, Any]]] = []
        if self._next != (0, 0):  # resuming: read up to the next sample, keeping the ones the buffer held
            wanted, found = set(held), {}
            for ref, sample in reader:
                if ref >= self._next:
                    pending.append((ref, sample))
                    break
                if ref in wanted:
                    found[ref] = sample
            for ref in held:
                if ref in found:  # else gone from its shard since: nothing to hold
                    self._hold(ref, found[ref])
        if not self._draining:
            for ref, sample in itertools.chain(pending, reader):
                self._next = (ref[0], ref[1] + 1)
                self._hold(ref, sample)
                while self._pool and (len(self._pool) >= self.buffer or (self.buffer_bytes is not None and self._held > self.buffer_bytes)):
                    yield self._release(self._rng.randrange(len(self._pool)))
            self._next, self._draining = (self._opened + 1, 0), True  # past every shard opened: their damage is counted
            order = list(range(len(self._pool)))
            self._rng.shuffle(order)
            self._pool, self._refs = [self._pool[i] for i in reversed(order)], [self._refs[i] for i in reversed(order)]
        while self._pool:
            yield self._release(len(self._pool) - 1)

    def _hold(self, ref: Ref, sample: dict[str, Any]) -> None:
        size = sample_bytes(sample)
        self._pool.append((sample, size))
        self._refs.append(ref)
        self._held += size

    def _release(self, pick: int) -> dict[str, Any]:
        self._pool[pick], self._pool[-1] = self._pool[-1], self._pool[pick]
        self._refs[pick], self._refs[-1] = self._refs[-1], self._refs[pick]
        sample, size = self._pool.pop()
        self._refs.pop()
        self._held -= size
        return sample

    def _files(self, epoch: int) -> tuple[list[StoragePath], int, int]:
        """This unit's shards of `epoch` in reading order, how many units read each, and which turn is this unit's."""
        files = list(self.source.shards)
        random.Random(stable_seed(self.seed, self.source.config.name, "shards", epoch)).shuffle(files)
        count = len(files)
        if count >= self.units or not files:
            return files[self.unit :: self.units], 1, 0
        # the readers of shard j are the units u with u % count == j; each keeps every n-th sample
        return [files[self.unit % count]], len(range(self.unit % count, self.units, count)), self.unit // count

    def _read(self, numbers: Iterable[int]) -> Iterator[tuple[Ref, dict[str, Any]]]:
        """This unit's samples of the epoch in its shards number `numbers`, with their names."""
        mine, readers, turn = self._files(self.epoch)
        for number in numbers:
            path, index, self._opened = mine[number], 0, number
            try:
                for sample in _tar_samples_retrying(path):
                    if index % readers == turn:
                        self._read_any = True
                        yield (number, index), {**sample, "__url__": str(path)}  # as webdataset names a sample's shard
                    index += 1
            except (tarfile.TarError, UnsafeTarError) as error:
                name = self.source.config.name
                log.warning("source %s: shard %s unreadable after %d samples (%s); rest skipped", name, path, index, error)
                if number >= self._counted[0] and not self._skip:
                    self.damaged += 1


def _tar_samples_retrying(path: StoragePath, waits: Sequence[float] = STORAGE_RETRY_WAITS) -> Iterator[dict[str, Any]]:
    """`iter_tar_samples`, reopened past the samples already given after a storage error (a timeout, a
    dropped connection: `is_storage_error`), once per wait in `waits`; then the error ends the run. Damage
    to the tar itself is not retried (it would read the same)."""
    given = 0
    for attempt in range(len(waits) + 1):
        try:
            for sample in itertools.islice(iter_tar_samples(path), given, None):
                given += 1
                yield sample
            return
        except OSError as error:
            if not is_storage_error(error) or attempt == len(waits):
                raise
            log.warning("shard %s: storage error after %d samples (%s); reading it again in %.0f s", path, given, error, waits[attempt])
            time.sleep(waits[attempt])


def sample_bytes(sample: dict[str, Any]) -> int:
    """The bytes of a raw sample's members (what a shuffle buffer holds)."""
    return sum(len(value) for value in sample.values() if isinstance(value, bytes))


# ---------------------------------------------------------------------------------------------------
# Encoding a raw sample of any kind
# ---------------------------------------------------------------------------------------------------


class SampleEncoder:
    def __init__(self, config: TrainConfig, processor: Processor) -> None:
        self.config = config
        self.processor = processor

    def __call__(self, source: Source, sample: dict[str, Any], epoch: int) -> tuple[Encoded, int]:
        """The encoded sample and how many URL-only images it left out (see SourceConfig.url_images).

        A pair or PDF page whose image cannot be used raises SampleError with the image's reason: its
        text alone is not the sample. A sample the shard reader cut for its size raises `too_large`.
        """
        if TOO_LARGE in sample:
            raise SampleError("too_large", sample[TOO_LARGE])
        spec = source.config
        url_images_skipped = 0
        settings = self.config.source_images(spec)
        if spec.kind == "sft":
            data = self.config.data
            shuffle_seed = stable_seed(self.config.train.seed, spec.name, sample["__key__"], epoch) if data.turn_shuffle else None
            encoded = self.processor.encode_conversation(
                sample_to_row(sample),
                settings=settings,
                shuffle_seed=shuffle_seed,
                max_turns=data.max_turns,
                max_seq_len=spec.max_seq_len,
                max_images=spec.max_images,
            )
        else:
            if spec.kind == "interleaved":
                nodes, url_images_skipped = interleaved_nodes(sample, spec.name, spec.url_images == "skip")
            else:
                nodes = single_image_nodes(sample)
            encoded = self.processor.encode_document(nodes, settings=settings, max_seq_len=spec.max_seq_len, max_images=spec.max_images)
            if spec.kind != "interleaved" and not encoded.num_images:  # a caption or page text without its image
                reason = next(iter(encoded.images_left_out), "no_image")
                raise SampleError(reason, "the sample's image cannot be used")
        encoded.source = spec.name
        return encoded, url_images_skipped


# ---------------------------------------------------------------------------------------------------
# One unit: mix, encode, pack, batch
# ---------------------------------------------------------------------------------------------------


@dataclass
class UnitState:
    """Where a unit stands: JSON-ready."""

    rng: list[Any]
    sources: dict[str, list[int]]  # name -> [epoch, position]
    taken: dict[str, int] = field(default_factory=dict)  # samples used, per source
    dropped: dict[str, int] = field(default_factory=dict)  # samples skipped, per reason
    images: dict[str, int] = field(default_factory=dict)  # images in the samples used, per source
    url_images_skipped: dict[str, int] = field(default_factory=dict)  # per source with `url_images: skip`
    images_left_out: dict[str, int] = field(default_factory=dict)  # images of used documents not used, per source:reason
    shards_damaged: dict[str, int] = field(default_factory=dict)  # damaged shard readings, per source
    buffers: dict[str, dict[str, Any]] = field(default_factory=dict)  # SourceStream.buffer_state(), per source

    def to_json(self) -> dict[str, Any]:
        return {
            "rng": self.rng,
            "sources": self.sources,
            "taken": self.taken,
            "dropped": self.dropped,
            "images": self.images,
            "url_images_skipped": self.url_images_skipped,
            "images_left_out": self.images_left_out,
            "shards_damaged": self.shards_damaged,
            "buffers": self.buffers,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> UnitState:
        return cls(
            values["rng"],
            {k: list(v) for k, v in values["sources"].items()},
            dict(values.get("taken", {})),
            dict(values.get("dropped", {})),
            dict(values.get("images", {})),
            dict(values.get("url_images_skipped", {})),
            dict(values.get("images_left_out", {})),
            dict(values.get("shards_damaged", {})),
            dict(values.get("buffers", {})),
        )


def _rng_state_to_json(state: tuple) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state_from_json(values: list[Any]) -> tuple:
    version, internal, gauss = values
    return version, tuple(internal), gauss


class UnitStream:
    """Batches for one unit, each with the unit's state right after it."""

    def __init__(
        self,
        config: TrainConfig,
        sources: list[Source],
        encoder: SampleEncoder,
        pad_token_id: int,
        unit: int,
        units: int,
        state: UnitState | None = None,
    ) -> None:
        self.config = config
        self.sources = sources
        self.encoder = encoder
        self.pad_token_id = pad_token_id
        self.rng = random.Random(stable_seed(config.train.seed, "mix", unit))
        positions = {}
        if state is not None:
            self.rng.setstate(_rng_state_from_json(state.rng))
            positions = state.sources
        self.taken = Counter(state.taken if state else {})
        self.dropped = Counter(state.dropped if state else {})
        self.images = Counter(state.images if state else {})
        self.url_images_skipped = Counter(state.url_images_skipped if state else {})
        self.images_left_out = Counter(state.images_left_out if state else {})
        damaged = state.shards_damaged if state else {}
        buffers = state.buffers if state else {}
        cap = config.data.shuffle_buffer_mb
        self.streams = []
        for source in sources:
            name = source.config.name
            epoch, position = positions.get(name, (0, 0))
            self.streams.append(
                SourceStream(
                    source,
                    unit,
                    units,
                    config.train.seed,
                    config.data.shuffle_buffer,
                    epoch=epoch,
                    position=position,
                    damaged=damaged.get(name, 0),
                    buffer_bytes=None if cap is None else int(cap * 2**20),
                    resume=buffers.get(name),
                )
            )
        self.weights = [source.share for source in sources]
        self.unit, self.units = unit, units
        self.watched = [stream.position == 0 for stream in self.streams]  # the current epoch seen from its start
        self.used = [False] * len(self.streams)  # a sample of the current epoch encoded

    def state(self) -> UnitState:
        return UnitState(
            _rng_state_to_json(self.rng.getstate()),
            {s.source.config.name: [s.epoch, s.position] for s in self.streams},
            dict(self.taken),
            dict(self.dropped),
            dict(self.images),
            dict(self.url_images_skipped),
            dict(self.images_left_out),
            {s.source.config.name: s.damaged for s in self.streams if s.damaged},
            {s.source.config.name: s.buffer_state() for s in self.streams},
        )

    def examples(self) -> Iterator[tuple[Encoded, UnitState]]:
        """Encoded samples, each with the state from just before it was drawn."""
        while True:
            before = self.state()
            index = self.rng.choices(range(len(self.streams)), weights=self.weights)[0]
            stream = self.streams[index]
            epoch = stream.epoch
            sample = next(stream)
            if stream.epoch != epoch:
                self._check_epoch(index, epoch)
            try:
                encoded, url_images_skipped = self.encoder(stream.source, sample, epoch)
            except SampleError as error:
                self.dropped[f"{stream.source.config.name}:{error.reason}"] += 1
                continue
            self.used[index] = True
            name = stream.source.config.name
            self.taken[name] += 1
            self.images[name] += encoded.num_images
            if url_images_skipped:
                self.url_images_skipped[name] += url_images_skipped
            for reason, count in encoded.images_left_out.items():
                self.images_left_out[f"{name}:{reason}"] += count
            yield encoded, before

    def _check_epoch(self, index: int, epoch: int) -> None:
        """Stream `index` has finished `epoch`: raise if this unit saw all of it and could use none."""
        if self.watched[index] and not self.used[index]:
            name = self.streams[index].source.config.name
            reasons = {why.partition(":")[2]: n for why, n in sorted(self.dropped.items()) if why.startswith(f"{name}:")}
            raise UnusableSourceError(
                f"source {name!r}: no sample of epoch {epoch} could be used by reader {self.unit} of {self.units} "
                f"(skipped so far: {reasons}); check the source's kind, max_seq_len and max_images"
            )
        self.watched[index], self.used[index] = True, False

    def sequences(self) -> Iterator[tuple[Encoded, UnitState]]:
        """Training sequences, each with the state to resume from right after it.

        Without packing that is the state after its sample. A pack is complete only once the sample
        that does not fit has been drawn; the state is then the one from before that sample, so a
        resumed unit draws it again instead of losing it.
        """
        if not self.config.data.packing:
            for encoded, _ in self.examples():
                yield encoded, self.state()
            return
        limit = self.config.data.packed_seq_len or max(s.config.max_seq_len for s in self.sources)
        pack: list[Encoded] = []
        for encoded, before in self.examples():
            if pack and sum(map(len, pack)) + len(encoded) > limit:
                yield concatenate(pack), before
                pack = []
            pack.append(encoded)

    def batches(self) -> Iterator[tuple[dict[str, Any], UnitState]]:
        """Collated batches, each with the unit state to resume from after it."""
        batch: list[Encoded] = []
        for sequence, after in self.sequences():
            batch.append(sequence)
            if len(batch) == self.config.data.batch_size:
                yield collate(batch, self.pad_token_id), after
                batch = []


def concatenate(examples: list[Encoded]) -> Encoded:
    """Whole samples in one sequence, each with position ids from 0 and no target on its first token."""
    labels = torch.cat([e.labels for e in examples])
    starts = torch.tensor([0] + [len(e) for e in examples[:-1]]).cumsum(0)
    labels[starts] = IGNORE_INDEX
    position_ids = torch.cat([torch.arange(len(e)) for e in examples])
    return Encoded(
        torch.cat([e.input_ids for e in examples]),
        labels,
        [crop for e in examples for crop in e.crops],
        sum(e.num_images for e in examples),
        "+".join(sorted({e.source for e in examples})),
        position_ids,
    )


def collate(examples: list[Encoded], pad_token_id: int) -> dict[str, Any]:
    """Right-padded `input_ids`, `attention_mask`, `labels` (-100 on padding), padded pixels, and counts.

    Packed sequences add `position_ids` (restarting per sample; padding continues its row's last
    sample, which causal attention keeps out of every real token's view); otherwise it is None.
    """
    length = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    packed = any(e.position_ids is not None for e in examples)
    position_ids = torch.arange(length).repeat(len(examples), 1) if packed else None
    for row, example in enumerate(examples):
        input_ids[row, : len(example)] = example.input_ids
        labels[row, : len(example)] = example.labels
        attention_mask[row, : len(example)] = 1
        if position_ids is not None and example.position_ids is not None:
            position_ids[row, : len(example)] = example.position_ids
            position_ids[row, len(example) :] = torch.arange(length - len(example)) + example.position_ids[-1] + 1
    pixel_values, pixel_attention_mask = pad_images([e.crops for e in examples])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "labels": labels,
        "pixel_values": pixel_values,
        "pixel_attention_mask": pixel_attention_mask,
        "num_tokens": int(attention_mask.sum()),
        "num_images": sum(e.num_images for e in examples),
        "sources": dict(Counter(source for e in examples for source in e.source.split("+"))),
    }


# ---------------------------------------------------------------------------------------------------
# DataLoader wiring: units over ranks and workers, and the position to checkpoint
# ---------------------------------------------------------------------------------------------------


class ShardDataset(IterableDataset):
    """Batches of one rank; DataLoader worker w runs unit `rank * workers + (w + offset) % workers`.

    `offset` rotates the workers on resume so that the DataLoader's round-robin (which starts at worker
    0) continues with the unit whose batch comes next.
    """

    def __init__(
        self,
        config: TrainConfig,
        processor: Processor,
        sources: list[Source],
        rank: int,
        world: int,
        states: dict[int, UnitState] | None = None,
        offset: int = 0,
    ) -> None:
        self.config = config
        self.processor = processor
        self.sources = sources
        self.rank, self.world = rank, world
        self.states = states or {}
        self.offset = offset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers = info.num_workers if info else 1
        logical = ((info.id if info else 0) + self.offset) % workers
        if info is not None:
            torch.set_num_threads(1)
        stream = UnitStream(
            self.config,
            self.sources,
            SampleEncoder(self.config, self.processor),
            self.processor.pad_token_id,
            self.rank * workers + logical,
            self.world * workers,
            self.states.get(logical),
        )
        for batch, state in stream.batches():
            yield {"batch": batch, "worker": logical, "state": state.to_json()}


class ShardLoader:
    """The rank's batch iterator, which also knows the data position to store in a checkpoint."""

    def __init__(
        self,
        config: TrainConfig,
        processor: Processor,
        rank: int = 0,
        world: int = 1,
        position: dict[str, Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        self.config = config
        self.sources = resolve_sources(config)
        self.rank, self.world = rank, world
        self.workers = config.data.num_workers
        self.batches = 0
        self.states: dict[int, dict[str, Any]] = {}
        if position is not None:
            self._restore(position)
        dataset = ShardDataset(
            config,
            processor,
            self.sources,
            rank,
            world,
            {int(w): UnitState.from_json(s) for w, s in self.states.items()},
            self.batches % max(1, self.workers),
        )
        # an own generator: creating the iterator must not draw from the global torch RNG (resume exactness)
        generator = torch.Generator().manual_seed(stable_seed(config.train.seed, "loader", rank) % 2**63)
        self.loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=pin_memory,
            prefetch_factor=4 if self.workers else None,
            generator=generator,
        )
        self._iterator: Iterator[dict[str, Any]] | None = None

    def _restore(self, position: dict[str, Any]) -> None:
        layout = (position.get("world_size"), position.get("num_workers"))
        if layout != (self.world, self.workers):
            log.warning(
                "data position was saved with world_size=%s num_workers=%s, now %s and %s: streams restart from their beginning",
                *layout,
                self.world,
                self.workers,
            )
            return
        self.batches = int(position["batches"])
        self.states = {int(worker): state for worker, state in position["workers"].items()}

    def __iter__(self) -> ShardLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._iterator = iter(self.loader)
        item = next(self._iterator)
        self.batches += 1
        self.states[item["worker"]] = item["state"]
        return item["batch"]

    def position(self) -> dict[str, Any]:
        """JSON-ready: batches consumed and each unit's state after its last consumed batch."""
        return {
            "world_size": self.world,
            "num_workers": self.workers,
            "batches": self.batches,
            "workers": {str(worker): state for worker, state in sorted(self.states.items())},
        }

    def stats(self) -> dict[str, Counter]:
        """Samples and images used per source, samples skipped per reason, URL-only images left out per
        source, other images left out of used documents per source and reason, and damaged shard
        readings per source, summed over this rank's units."""
        keys = ("taken", "dropped", "images", "url_images_skipped", "images_left_out", "shards_damaged")
        totals: dict[str, Counter] = {key: Counter() for key in keys}
        for state in self.states.values():
            for key, counter in totals.items():
                counter.update(state.get(key, {}))
        return totals
