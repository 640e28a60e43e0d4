"""Running a model on a benchmark: stream items, build prompts, generate in batches, score, record.

Items are read a batch at a time (memory bounded by a batch, plus the few-shot pool), prompts are
left-padded to the batch's longest, and generation is greedy: a row stops at `<end_of_utterance>`
or EOS, or once its decoded text holds a stop word, and its answer is the text before the first stop
word. A batch therefore produces exactly the answers each of its items would alone (a tested property).
An item whose image cannot be decoded is recorded with the reason and scored 0; it is never dropped.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cauldron.chat import tokenize_chat
from curation.errors import SampleError
from training.data import stable_seed
from training.evaluation.models import EvalModel
from training.evaluation.predictions import PredictionsWriter, Recorder
from training.evaluation.prompts import PromptSettings, cut_at_stop_words, pick_shots, render_prompt
from training.evaluation.registry import Benchmark, Protocol
from training.evaluation.scoring import BenchmarkResult
from training.evaluation.sources import EvalItem, count_rows, iter_items
from training.processor import ImageProcessor, normalise_pixels, pad_images

SHOT_POOL = 256  # support items drawn once (seeded) for few-shot examples


@dataclass
class RunSettings:
    batch_size: int = 8
    limit: int | None = None  # the first N items only
    split: str | None = None  # default: the registry's split
    max_new_tokens: int | None = None  # default: the registry's per benchmark
    prompt: PromptSettings = field(default_factory=PromptSettings)
    support: Path | None = None  # few-shot examples come from here (default: the evaluated files)
    support_split: str | None = None


class StopWords:
    """Stop rule of the protocol: token-level stops (special tokens) and text-level ones (plain words)."""

    def __init__(self, tokenizer: Any, words: Sequence[str]) -> None:
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens)
        self.tokenizer = tokenizer
        self.token_ids = sorted({vocab[word] for word in words if word in special and word in vocab})
        self.words = [word for word in words if word not in special]

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        """Per row: does the text generated so far contain a stop word?"""
        texts = self.tokenizer.batch_decode(new_ids.tolist(), skip_special_tokens=True)
        return torch.tensor([any(word in text for word in self.words) for text in texts], dtype=torch.bool)

    def answer(self, ids: Sequence[int]) -> str:
        """The answer in one row of new ids: up to the first stop token, then before the first stop word."""
        ids = list(ids)
        ends = [ids.index(token) for token in self.token_ids if token in ids]
        text = self.tokenizer.decode(ids[: min(ends, default=len(ids))], skip_special_tokens=True)
        return cut_at_stop_words(text, self.words)


def encode_batch(model: EvalModel, rows: Sequence[Sequence[int]], crops: Sequence[Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Left-padded token ids and mask, padded normalised pixels, on the model's device."""
    tokenizer = model.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(map(len, rows))
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row) :] = torch.tensor(row)
        attention_mask[index, length - len(row) :] = 1
    inputs = {"input_ids": input_ids.to(model.device), "attention_mask": attention_mask.to(model.device)}
    pixel_values, pixel_mask = pad_images(crops)
    if pixel_values is not None and pixel_mask is not None:  # both or neither
        pixel_mask = pixel_mask.to(model.device)
        inputs["pixel_values"] = normalise_pixels(pixel_values.to(model.device), pixel_mask)
        inputs["pixel_attention_mask"] = pixel_mask
    return inputs


def _batches(items: Iterator[EvalItem], size: int) -> Iterator[list[EvalItem]]:
    batch: list[EvalItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def shot_pool(benchmark: Benchmark, path: Path, split: str, seed: int) -> list[EvalItem]:
    """Up to `SHOT_POOL` support items, drawn at random (seeded) over the whole split in one pass."""
    rows = count_rows(path, split)
    chosen = set(random.Random(stable_seed(seed, "pool", benchmark.name)).sample(range(rows), min(rows, SHOT_POOL)))
    return [item for index, item in enumerate(iter_items(benchmark, path, split)) if index in chosen]


class BenchmarkRun:
    """One benchmark's evaluation with one model."""

    def __init__(self, model: EvalModel, protocol: Protocol, benchmark: Benchmark, path: Path, settings: RunSettings) -> None:
        self.model, self.benchmark, self.path, self.settings = model, benchmark, Path(path), settings
        self.split = settings.split or benchmark.split
        self.prompt = settings.prompt
        self.stops = StopWords(model.tokenizer, protocol.stops(self.prompt.style, model.tokenizer.eos_token))
        self.protocol = protocol
        self.images = ImageProcessor(dataclasses.replace(model.images, image_splitting=self.prompt.image_splitting))
        self.pool: list[EvalItem] = []
        self._shot_crops: dict[str, list[torch.Tensor]] = {}
        if self.prompt.shots:
            self.pool = shot_pool(benchmark, settings.support or self.path, settings.support_split or self.split, self.prompt.seed)
            # decoded once; an example whose image fails is marked and never drawn
            self._shot_crops = {shot.id: self.crops(shot) for shot in self.pool}

    def crops(self, item: EvalItem) -> list[torch.Tensor]:
        try:
            return [crop for image in item.images for crop in self.images(image)]
        except SampleError as error:
            item.problem = f"image {error.reason}"
            return []

    def prompt_ids(self, item: EvalItem, shots: Sequence[EvalItem]) -> list[int]:
        """The prompt's token ids; the item's own text never becomes a control token (else it is marked)."""
        try:
            return tokenize_chat(render_prompt(self.protocol, self.prompt, item, shots), self.model.tokenizer).input_ids
        except ValueError:
            item.problem = "special_token"
            return []

    def answers(self, items: Sequence[EvalItem]) -> list[str | None]:
        """Generated answers for a batch (None for items that cannot be evaluated)."""
        crops = [self.crops(item) for item in items]
        shots = {i: pick_shots(self.pool, item, self.prompt) for i, item in enumerate(items) if not item.problem}
        rows = {i: self.prompt_ids(items[i], shots[i]) for i in shots}
        usable = [index for index, item in enumerate(items) if not item.problem]
        answers: list[str | None] = [None] * len(items)
        if not usable:
            return answers
        batch_crops = [[crop for shot in shots[i] for crop in self._shot_crops[shot.id]] + crops[i] for i in usable]
        inputs = encode_batch(self.model, [rows[i] for i in usable], batch_crops)
        tokenizer = self.model.tokenizer
        budget = self.settings.max_new_tokens or self.benchmark.max_new_tokens
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        new_ids = self.model.generate(inputs, budget, self.stops.token_ids, pad, self.stops)
        for row, index in enumerate(usable):
            answers[index] = self.stops.answer(new_ids[row].tolist())
        return answers

    def run(self, writer: PredictionsWriter | None) -> BenchmarkResult:
        """Evaluate every item (the first `limit`), writing their rows; call under `torch.no_grad()`."""
        total = count_rows(self.path, self.split)
        expected = total if self.settings.limit is None else min(total, self.settings.limit)
        recorder = Recorder(self.benchmark, writer)
        items = iter_items(self.benchmark, self.path, self.split, self.settings.limit)
        for batch in _batches(items, self.settings.batch_size):
            for item, answer in zip(batch, self.answers(batch), strict=True):
                recorder.add(item, answer)
        return recorder.finish(expected)
