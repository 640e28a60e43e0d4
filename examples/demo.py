"""The demo: every potion job on the bundled sample data, end to end, in a few minutes on a laptop CPU.

    make demo        (or: python -m examples.demo [--output out/demo])

The models here are tiny: the perplexity LM is trained offline on Python's documentation prose (so its
ranking is meaningful), the others are random-initialised stand-ins for the real defaults. The demo ends
by evaluating the trained tiny model on tiny bundled benchmark files and scoring a bundled predictions file.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from examples.demo_images import DemoImageServer, serve_sample
from pipelines.cli import main as curate
from pipelines.runtime import ray_runtime
from training.cli import main as train

HERE = Path(__file__).resolve().parent
if HERE.is_relative_to(Path.cwd()):
    HERE = HERE.relative_to(Path.cwd())  # shorter commands in the output


def banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def run(argv: list[str]) -> None:
    print("$ curate " + " ".join(argv))
    code = curate(argv)
    if code:
        raise SystemExit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("out/demo"), help="where the demo writes (default out/demo)")
    parser.add_argument("--fresh", action="store_true", help="delete earlier demo output first")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.output, ignore_errors=True)
    with ray_runtime():  # one Ray for every curation step
        run_steps(args.output)
    banner("5. Train: a tiny Idefics2 (random init, DoRA) for 60 steps on CPU on the shards made above")
    run_train(["--config", str(Path("training") / "configs" / "demo.yaml"), "--set", f"train.output_dir={args.output / 'train'}"])
    evaluate(args.output)


def run_train(argv: list[str]) -> None:
    print("$ train " + " ".join(argv))
    if train(argv):
        raise SystemExit(1)


def evaluate(output: Path) -> None:
    banner("6. Evaluate: the trained tiny model on tiny bundled benchmark files, with the paper's protocol")
    benchmarks = HERE / "benchmarks"
    specs = [f"{name}={benchmarks / name}" for name in ("textvqa", "docvqa", "ai2d", "mmmu", "coco")]
    # a 16-token answer budget keeps this step short: the tiny model never stops on its own
    run_train(
        [
            "eval",
            "--model",
            str(output / "train"),
            *[arg for spec in specs for arg in ("--benchmark", spec)],
            "--max-new-tokens",
            "16",
            "--output",
            str(output / "eval"),
        ]
    )
    print("(a 60-step random-init model answers nothing right: near-zero scores are the honest result)")
    banner("7. Score another system's predictions on the same metrics, without a model")
    run_train(
        [
            "eval",
            "--predictions",
            str(benchmarks / "predictions.jsonl"),
            "--benchmark",
            f"textvqa={benchmarks / 'textvqa'}",
            "--output",
            str(output / "eval-predictions"),
        ]
    )


def run_steps(output: Path) -> None:
    banner("1. OBELICS: opt-out removal, perplexity pruning (tiny Falcon-shaped LM trained on English prose), image download")
    with DemoImageServer() as server:
        inputs, do_not_train = serve_sample(HERE / "obelics", HERE / "do_not_train.txt", output / "obelics-web", server)
        print(f"(the sample's image URLs are served by a loopback server this demo started: {server.base_url})")
        run(
            [
                "obelics",
                "--input",
                str(inputs),
                "--output",
                str(output / "obelics"),
                "--do-not-train",
                str(do_not_train),
                "--ppl-model",
                str(HERE / "models" / "tiny-falcon"),
                "--drop-top-ppl",
                "0.05",
                "--docs-per-shard",
                "100",
                "--allow-private-networks",  # the loopback server; refused by default
            ]
        )
    print("image server answered: " + ", ".join(f"{kind} {n}" for kind, n in sorted(server.answered.items())))
    print(f"\nshards, ledger and report: {output / 'obelics'} (histogram: perplexity_histogram.png)")

    banner("2. Pairs: NSFW filtering (a tiny RANDOM CLIP + head stand in for ViT-L-14 + the LAION head: scores are meaningless here)")
    run(
        [
            "pairs",
            "--input",
            str(HERE / "pairs"),
            "--output",
            str(output / "pairs"),
            "--clip-model",
            str(HERE / "models" / "tiny-clip.json"),
            "--clip-pretrained",
            "none",
            "--nsfw-head",
            str(HERE / "models" / "tiny-nsfw-head.safetensors"),
            "--drop-top-nsfw",
            "0.07",
        ]
    )

    banner("3. PDFs: pages of loose PDFs, PDFA/IDL shards and rendered text, with OCR where no text exists")
    run(
        [
            "pdfs",
            "--input",
            str(HERE / "pdfs"),
            "--output",
            str(output / "pdfs"),
            "--max-side",
            "980",
            "--ocr",
            "tesseract",
        ]
    )

    banner("4. The Cauldron: prompt templates, merge by image, eval-set dedup, then a mixture")
    cauldron = HERE / "cauldron"
    run(
        [
            "cauldron",
            "build",
            "--source",
            f"vqav2={cauldron / 'raw' / 'vqav2'}",
            "--source",
            f"ai2d={cauldron / 'raw' / 'ai2d'}",
            "--source",
            f"openhermes={cauldron / 'raw' / 'openhermes'}",
            "--eval",
            f"mmmu={cauldron / 'evals' / 'mmmu'}",
            "--output",
            str(output / "cauldron"),
        ]
    )
    run(
        [
            "cauldron",
            "mix",
            "--input",
            str(output / "cauldron"),
            "--output",
            str(output / "sft"),
            "--tokenizer",
            str(HERE / "models" / "tiny-falcon"),
            "--config",
            str(cauldron / "demo_mixture.yaml"),
        ]
    )


if __name__ == "__main__":
    main()
