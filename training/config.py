"""The `train` configuration: YAML mapped onto dataclasses, unknown keys rejected.

A config has eight sections (see `training/configs/*.yaml` for commented examples):

    model      an Idefics2 checkpoint, or SigLIP + Mistral backbones; dtype; gradient checkpointing
    images     resize (longest/shortest edge), image splitting, decoded-pixel cap
    data       shard sources (kind, globs, mixture weight, max sequence length), batch size, workers, packing
    adapters   LoRA / DoRA / full training; what is trained fully (connector, new token rows)
    optimizer  AdamW settings and gradient clipping
    schedule   warmup, then cosine / linear / constant decay
    train      steps, accumulation, seed, precision, NEFTune, output folder, checkpoints, resume, DDP/FSDP
    logging    console / JSONL cadence, TensorBoard, loss plot, peak FLOPs for MFU
    eval       evaluation during training: validation loss on held-out shards, a benchmark subset

Relative paths are relative to the working directory. `--set section.key=value` overrides any field
(the value is parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from curation.errors import UserError

SOURCE_KINDS = ("interleaved", "pairs", "pdf", "sft")


class ConfigError(UserError):
    pass


@dataclass
class ModelConfig:
    checkpoint: str | None = None  # an Idefics2 checkpoint: local folder or Hub id
    vision: str | None = None  # or: a SigLIP vision backbone ...
    text: str | None = None  # ... and a Mistral causal LM
    tokenizer: str | None = None  # default: the checkpoint's, or the text backbone's
    image_size: int = 980  # vision position grid when building from backbones
    dtype: Literal["float32", "bfloat16"] = "float32"  # weights; bf16 autocast is set by train.precision
    implementation: Literal["potion", "transformers"] = "potion"  # transformers' class, for comparisons
    gradient_checkpointing: bool = False

    def backbones(self) -> tuple[str, str]:
        """The vision and text backbones a model without `checkpoint` is built from."""
        if not (self.vision and self.text):
            raise ConfigError("model: building from backbones needs both `vision` and `text`")
        return self.vision, self.text


@dataclass
class ImageConfig:
    longest_edge: int = 980
    shortest_edge: int = 378
    image_splitting: bool = False  # 4 crops + the whole image, each resized alone
    max_pixels: int = 50_000_000  # decoded-pixel cap per image


@dataclass
class SourceConfig:
    name: str
    kind: Literal["interleaved", "pairs", "pdf", "sft"]
    shards: list[str]  # glob patterns of WebDataset tar files
    weight: float = 1.0  # mixture weight (normalised over the sources in use)
    max_seq_len: int = 2048  # pre-training samples are truncated to it, SFT samples over it are dropped
    max_images: int = 16  # images kept per sample (later images of a document are dropped)
    images: dict[str, Any] = field(default_factory=dict)  # per-source ImageConfig overrides
    optional: bool = False  # skip (with a warning) when no shard matches
    url_images: Literal["fail", "skip"] = "fail"  # interleaved: an image node with a URL and no bytes


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    batch_size: int = 8  # sequences per device per micro-batch
    num_workers: int = 0  # DataLoader worker processes per rank
    shuffle_buffer: int = 256  # samples per reader and source held for shuffling ...
    shuffle_buffer_mb: float | None = 256.0  # ... and at most this many MB of them (null: no cap); see training/data.py
    packing: bool = False  # several whole samples per sequence, each attending only to itself
    packed_seq_len: int | None = None  # default: the largest source max_seq_len
    turn_shuffle: bool = True  # SFT: shuffle the turns of a conversation
    max_turns: int | None = None  # SFT: keep at most this many turns


@dataclass
class AdapterConfig:
    method: Literal["lora", "dora", "none"] = "dora"  # none: train every parameter
    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    init: Literal["gaussian", "default"] = "gaussian"
    vision: bool = True  # adapters on the vision encoder's linear layers
    text: bool = True  # adapters on the language model's linear layers
    target_modules: str | None = None  # a regex over module names, replacing the two flags above
    train_fully: list[str] = field(default_factory=lambda: ["model.connector"])  # module prefixes
    train_new_tokens: bool = True  # the added tokens' rows of embed_tokens and lm_head, beside the frozen matrices


@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass
class ScheduleConfig:
    kind: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak


@dataclass
class RunConfig:
    steps: int = 1000  # optimizer steps
    grad_accum: int = 1  # micro-batches per optimizer step
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    neftune_alpha: float = 0.0  # NEFTune noise on the input embeddings in training; 0 disables it
    output_dir: str = "out/train"
    resume: str = "auto"  # auto: the latest checkpoint in output_dir; never; or a checkpoint folder (none later in output_dir)
    save_every: int = 0  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    device: str = "auto"  # auto: cuda:<local rank> when available, else cpu
    parallelism: Literal["ddp", "fsdp"] = "ddp"  # several processes: replicate (ddp) or shard (fsdp, FSDP2)


@dataclass
class LoggingConfig:
    every: int = 10  # console line every N steps (the JSONL file gets every step)
    tensorboard: bool = False
    plot: bool = True  # loss curve PNG at the end
    peak_tflops: float | None = None  # for MFU; default: looked up from the GPU name


@dataclass
class EvalConfig:
    every: int = 0  # optimizer steps between evaluations (0: none); the last step is evaluated too
    sources: list[SourceConfig] = field(default_factory=list)  # held-out shards: validation loss per source
    max_batches: int = 16  # validation batches per source and rank (0: every held-out sample)
    benchmarks: list[str] = field(default_factory=list)  # "name=path" (training/evaluation registry), rank 0 only; not with fsdp
    benchmark_limit: int = 32  # the first N items of each benchmark
    benchmark_style: Literal["chat", "base"] = "chat"  # prompt format: instruction-tuned, or pre-trained
    benchmark_timeout_minutes: float = 240.0  # how long other ranks wait for rank 0's benchmarks (not the collective timeout)
    batch_size: int | None = None  # default: data.batch_size


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: RunConfig = field(default_factory=RunConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, sections: tuple[str, ...] = ("model", "adapters")) -> str:
        """A short hash of the sections that decide which parameters a checkpoint holds."""
        payload = json.dumps({name: self.to_dict()[name] for name in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def validate(self) -> None:
        model = self.model
        if bool(model.checkpoint) == bool(model.vision or model.text):
            raise ConfigError("model: set either `checkpoint`, or both `vision` and `text` backbones")
        if not model.checkpoint and not (model.vision and model.text):
            raise ConfigError("model: building from backbones needs both `vision` and `text`")
        if not self.data.sources:
            raise ConfigError("data.sources: list at least one shard source")
        names = [source.name for source in self.data.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources: names must be unique, got {names}")
        for source in self.data.sources:
            if source.kind not in SOURCE_KINDS:
                raise ConfigError(f"source {source.name!r}: kind must be one of {SOURCE_KINDS}")
            if source.weight <= 0 or source.max_seq_len <= 0 or source.max_images < 0:
                raise ConfigError(f"source {source.name!r}: weight and max_seq_len must be > 0")
            unknown = set(source.images) - {f.name for f in dataclasses.fields(ImageConfig)}
            if unknown:
                raise ConfigError(f"source {source.name!r}: unknown image settings {sorted(unknown)}")
        if self.data.shuffle_buffer_mb is not None and self.data.shuffle_buffer_mb <= 0:
            raise ConfigError("data.shuffle_buffer_mb must be > 0 (or null for no cap)")
        for name, value in (
            ("data.batch_size", self.data.batch_size),
            ("train.steps", self.train.steps),
            ("train.grad_accum", self.train.grad_accum),
            ("logging.every", self.logging.every),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        longest = max(source.max_seq_len for source in self.data.sources)
        if self.data.packing and self.data.packed_seq_len is not None and self.data.packed_seq_len < longest:
            raise ConfigError(
                f"data.packed_seq_len {self.data.packed_seq_len} is below a source's max_seq_len "
                f"({longest}): a sample could not fit in a pack"
            )
        if self.adapters.method != "none" and self.adapters.r < 1:
            raise ConfigError("adapters.r must be >= 1")
        self._validate_eval()

    def _validate_eval(self) -> None:
        evaluation = self.eval
        counts = (evaluation.every, evaluation.max_batches, evaluation.benchmark_limit - 1)
        if min(counts) < 0 or evaluation.benchmark_timeout_minutes <= 0:
            raise ConfigError("eval.every and eval.max_batches must be >= 0, eval.benchmark_limit >= 1, eval.benchmark_timeout_minutes > 0")
        if evaluation.every and not (evaluation.sources or evaluation.benchmarks):
            raise ConfigError("eval.every is set: list held-out shards in eval.sources and/or eval.benchmarks")
        for source in evaluation.sources:
            if source.kind not in SOURCE_KINDS:
                raise ConfigError(f"eval source {source.name!r}: kind must be one of {SOURCE_KINDS}")
        for spec in evaluation.benchmarks:
            if "=" not in spec:
                raise ConfigError(f"eval.benchmarks: expected name=path, got {spec!r}")
        if evaluation.benchmarks and self.train.parallelism == "fsdp":
            raise ConfigError(
                "eval.benchmarks run on rank 0 alone, which a sharded (fsdp) model cannot: remove them and score "
                "saved checkpoints with `train eval`, or use train.parallelism ddp"
            )

    def source_images(self, source: SourceConfig) -> ImageConfig:
        return dataclasses.replace(self.images, **source.images)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Build nested dataclasses and check field types (YAML gives ints where floats are meant)."""
    if value is None:
        return None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(value, inner, where)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(annotation, value, where)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_convert(item, args[0], f"{where}[{i}]") for i, item in enumerate(items)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(item, arg, where) for item, arg in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {args}")
        return value
    if annotation is float and not isinstance(value, bool):
        try:  # PyYAML reads `1e-4` (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation in (int, str, bool, float) and not (
        isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}".lstrip(".")) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where or 'config'}: {error}") from None


def apply_override(values: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to a nested dict of raw config values."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    *parents, leaf = key.strip().split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    config = _build(TrainConfig, values or {}, "")
    config.validate()
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config, apply `key=value` overrides, validate."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for assignment in overrides or []:
        apply_override(values, assignment)
    return config_from_dict(values)
