"""The `train` command.

train --config training/configs/sft.yaml [--set train.steps=100 ...]
torchrun --nproc-per-node 8 -m training --config training/configs/sft.yaml
train export --run out/train --output out/idefics2-export
train eval --model out/train --benchmark textvqa=data/textvqa --output out/eval
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from curation.errors import UserError
from curation.storage import storage_path
from training.config import ConfigError, load_config


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Train a compact Idefics2 on curated WebDataset "
        "shards (LoRA/DoRA). `train export --help`: export a checkpoint; "
        "`train eval --help`: evaluate a model on benchmarks.",
    )
    parser.add_argument("--config", required=True, type=Path, help="YAML config (see training/configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.steps=50 (repeatable)",
    )
    parser.add_argument("--output-dir", help="shortcut for --set train.output_dir=...")
    parser.add_argument("--steps", type=int, help="shortcut for --set train.steps=...")
    parser.add_argument("--resume", help="auto (default: latest checkpoint in the output folder), never, or a checkpoint folder")
    return parser


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train export",
        description="Merge adapters and write a Hugging Face Idefics2 checkpoint (weights, config, tokenizer, processor).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run", type=storage_path, help="a training output folder, local or an object-store URL (its latest checkpoint is used)"
    )
    source.add_argument("--checkpoint", type=storage_path, help="a checkpoint folder (.../checkpoints/step-XXXXXXXX)")
    parser.add_argument("--output", type=storage_path, required=True, help="folder to write, local or an object-store URL")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="cast the weights (default: as trained)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser


def run_train(argv: list[str]) -> int:
    args = train_parser().parse_args(argv)
    overrides = list(args.overrides)
    for key, value in (("train.output_dir", args.output_dir), ("train.steps", args.steps), ("train.resume", args.resume)):
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides)
    from training.loop import train

    train(config)
    return 0


def run_export(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    from training.export import export

    path = export(args.output, run_dir=args.run, checkpoint=args.checkpoint, dtype=args.dtype, overwrite=args.overwrite)
    print(f"exported to {path} (transformers: Idefics2ForConditionalGeneration.from_pretrained({str(path)!r}))")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also when piped
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] == "export":
            return run_export(argv[1:])
        if argv and argv[0] == "eval":
            from training.evaluation.command import run_eval

            return run_eval(argv[1:])
        return run_train(argv)
    except (ConfigError, UserError, FileNotFoundError, FileExistsError) as error:  # anything else is a bug: traceback
        print(f"train: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
