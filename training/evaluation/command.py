"""`train eval`: evaluate a model on benchmarks with the paper's protocol, or score a predictions file.

    train eval --model out/train --benchmark textvqa=data/textvqa --benchmark mmmu=data/MMMU --output out/eval
    train eval --model HuggingFaceM4/idefics2-8b --implementation transformers --benchmark ...
    train eval --predictions other_system.jsonl --benchmark textvqa=data/textvqa --output out/eval-other

Writes `results.json`, `predictions.parquet` (one row per item) and `scores.png` to the output folder,
and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from curation.errors import UserError
from training.evaluation.models import IMPLEMENTATIONS
from training.evaluation.registry import STYLES, benchmark_paths, load_registry
from training.evaluation.report import (
    CHART_FILE,
    PREDICTIONS_FILE,
    bar_chart,
    table,
    unscored_note,
    write_results,
)
from training.evaluation.scoring import BenchmarkResult


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train eval",
        description="Evaluate a model on benchmarks read from "
        "local files (Idefics2 protocol: greedy decoding, A.3.1 prompts and stop "
        "words), or score a predictions file on the same metrics.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="a training run or checkpoint folder (adapters merged on the fly), a "
        "`train export` folder, or a transformers Idefics2 checkpoint (folder or Hub id)",
    )
    source.add_argument(
        "--predictions", type=Path, help="score this file of id -> answer instead of running a model (.parquet, .csv, .json, .jsonl)"
    )
    parser.add_argument(
        "--benchmark",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a registry benchmark and its local files (parquet file/folder or save_to_disk folder); repeatable",
    )
    parser.add_argument("--output", type=Path, required=True, help="folder for results.json, predictions.parquet, scores.png")
    parser.add_argument("--registry", type=Path, help="a benchmarks YAML replacing the bundled one")
    parser.add_argument("--split", help="split to evaluate (default: each benchmark's registry split)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N items of each benchmark")
    parser.add_argument(
        "--implementation",
        choices=IMPLEMENTATIONS,
        default="potion",
        help="potion's model, or transformers' reference class on the same weights",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (left-padded)")
    parser.add_argument("--max-new-tokens", type=int, help="answer budget (default: per benchmark, registry)")
    parser.add_argument(
        "--style",
        choices=STYLES,
        default="chat",
        help="chat: instruction-tuned prompt format; base: plain continuation for a pre-trained model",
    )
    parser.add_argument("--shots", type=int, default=0, help="in-context examples per item (seeded random draw)")
    parser.add_argument(
        "--support",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="where a benchmark's few-shot examples come from (default: its evaluated files)",
    )
    parser.add_argument("--support-split", help="split of the few-shot support files (default: the evaluated one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the few-shot draws")
    parser.add_argument(
        "--image-splitting",
        choices=["auto", "on", "off"],
        default="auto",
        help="four crops + the whole image per image (auto: as the model was trained / saved)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda:0, ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="model weights")
    return parser


def _score_file(args, targets, writer) -> list[BenchmarkResult]:
    from training.evaluation.predictions import read_predictions, score_predictions

    results = []
    for benchmark, path in targets:
        predictions = read_predictions(args.predictions, benchmark.name)
        result, unknown = score_predictions(benchmark, path, predictions, args.split, writer)
        if unknown:
            print(f"{benchmark.name}: {unknown} prediction(s) for ids the benchmark does not hold (not scored)")
        results.append(result)
    return results


def _run_model(args, registry, targets, writer) -> list[BenchmarkResult]:
    import torch

    from training.evaluation.models import load_eval_model
    from training.evaluation.prompts import PromptSettings
    from training.evaluation.runner import BenchmarkRun, RunSettings

    model = load_eval_model(args.model, args.implementation, args.device, args.dtype)
    print(f"model: {model.description}")
    splitting = model.images.image_splitting if args.image_splitting == "auto" else args.image_splitting == "on"
    supports = {benchmark.name: path for benchmark, path in benchmark_paths(args.support, "--support", registry)}
    results = []
    for benchmark, path in targets:
        prompt = PromptSettings(args.style, args.shots, args.seed, model.image_seq_len, splitting)
        settings = RunSettings(
            args.batch_size, args.limit, args.split, args.max_new_tokens, prompt, supports.get(benchmark.name), args.support_split
        )
        started = time.perf_counter()
        with torch.no_grad():
            result = BenchmarkRun(model, registry.protocol, benchmark, path, settings).run(writer)
        print(f"{benchmark.name}: {result.items} items in {time.perf_counter() - started:.1f}s")
        results.append(result)
    return results


def run_eval(argv: list[str]) -> int:
    from training.evaluation.predictions import PredictionsWriter

    args = eval_parser().parse_args(argv)
    for name, value in (
        ("--batch-size", args.batch_size),
        ("--limit", args.limit),
        ("--shots", args.shots + 1),
        ("--max-new-tokens", args.max_new_tokens),
    ):
        if value is not None and value < 1:
            raise UserError(f"{name} must be >= 1")
    registry = load_registry(args.registry)
    targets = benchmark_paths(args.benchmark, "--benchmark", registry)
    args.output.mkdir(parents=True, exist_ok=True)
    writer = PredictionsWriter(args.output / PREDICTIONS_FILE)
    try:
        results = _score_file(args, targets, writer) if args.predictions else _run_model(args, registry, targets, writer)
    except BaseException:
        writer.abort()
        raise
    predictions = writer.close()
    print("\n" + table(results))
    note = unscored_note(results)
    if note:
        print(note)
    source = str(args.predictions) if args.predictions else f"{args.model} ({args.implementation})"
    run = {
        "source": source,
        "style": args.style,
        "shots": args.shots,
        "seed": args.seed,
        "split": args.split,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "image_splitting": args.image_splitting,
        "benchmarks": {benchmark.name: str(path) for benchmark, path in targets},
        "argv": argv,
    }
    results_path = write_results(args.output, results, run)
    chart = bar_chart(results, args.output / CHART_FILE, source)
    print(f"results: {results_path}\npredictions: {predictions}\nchart: {chart}")
    return 0
