"""Perplexity stage throughput: the packed scorer against the padded scorer before it and a plain loop.

All three score the same documents with the same model in the same run; the ratios are what matter.
- packed: windows packed into rows with per-window attention, LM head over scored tokens in chunks;
- padded (before): one window per row, length-sorted batches, full logits (`benchmarks/gpu/baselines.py`);
- plain loop: one window per forward pass with transformers' `labels=` loss.

    python benchmarks/ppl_throughput.py                          # CPU, small Falcon-shaped model
    python benchmarks/ppl_throughput.py --preset falcon-rw-1b --device cuda --dtype bfloat16 --docs 512

The `falcon-rw-1b` preset has Falcon-RW-1B's shape with random weights; on a GPU the report adds
achieved FLOP/s against the 2·N FLOPs/token forward-pass estimate and the device's peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import FalconForCausalLM  # noqa: E402

from benchmarks.gpu.baselines import PaddedPerplexityScorer, plain_loop_nll  # noqa: E402
from benchmarks.gpu.perplexity import make_documents, timed  # noqa: E402
from curation.obelics import CleaningSettings, clean_partition  # noqa: E402
from curation.optout import OptOutVerdicts  # noqa: E402
from curation.perplexity import PerplexityConfig  # noqa: E402
from curation.perplexity_model import PerplexityScorer  # noqa: E402
from examples.assets import english_paragraphs, tiny_falcon_config, train_tokenizer  # noqa: E402

PRESETS = {
    "small": dict(hidden_size=256, layers=4, heads=4, context=1024),
    "falcon-rw-1b": dict(hidden_size=2048, layers=24, heads=32, context=2048),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="small")
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for the FLOP/s share (H100 SXM bf16: 989)")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = train_tokenizer(english_paragraphs(), vocab_size=2048 if args.preset == "small" else 8192)
    shape = PRESETS[args.preset]
    config = tiny_falcon_config(len(tokenizer), **shape)
    if args.preset == "falcon-rw-1b":
        config.vocab_size = 50304  # Falcon-RW-1B's embedding size; our tokenizer uses the first ids only
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    model = FalconForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    settings = PerplexityConfig(device=args.device, dtype=args.dtype, batch_tokens=args.batch_tokens, long_docs="truncate")
    scorer = PerplexityScorer(model, tokenizer, settings)
    padded = PaddedPerplexityScorer(scorer.model, tokenizer, settings)
    texts = make_documents(args.docs, max_paragraphs=12)  # 1 to 12 paragraphs, as OBELICS documents vary
    scorer.score_texts(texts[:4])  # warm-up
    padded.score_texts(texts[:4])
    ours, ours_s = timed(lambda: scorer.score_texts(texts))
    before, before_s = timed(lambda: padded.score_texts(texts))
    tokens = sum(s.n_tokens for s in ours)
    print(f"model {args.preset}: {n_params / 1e6:.1f}M parameters, {args.device} {args.dtype}, {len(texts)} documents, {tokens} tokens")
    print(
        f"  packed (rows of {scorer.max_length}, <= {args.batch_tokens} tokens a batch): {tokens / ours_s:10.0f} tokens/s  ({ours_s:.2f}s)"
    )
    print(f"  padded (before):                                  {tokens / before_s:10.0f} tokens/s  ({before_s:.2f}s)")
    print(f"  speed-up over the padded scorer: {before_s / ours_s:.2f}x")
    if args.device.startswith("cuda"):
        achieved = 2 * n_params * tokens / ours_s
        print(
            f"  forward FLOP/s (2·N per token): {achieved / 1e12:.1f} TFLOP/s = "
            f"{achieved / (args.peak_tflops * 1e12):.1%} of {args.peak_tflops:.0f} TFLOP/s peak"
        )
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if not args.skip_naive:
        sequences, owners = scorer.windows(texts)
        naive, naive_s = timed(lambda: plain_loop_nll(scorer.model, sequences, owners, len(texts)))
        print(f"  plain loop (one window per forward):              {tokens / naive_s:10.0f} tokens/s  ({naive_s:.2f}s)")
        print(f"  speed-up over the plain loop: {naive_s / ours_s:.2f}x")
        worst = max(abs(a.perplexity - b.perplexity) / b.perplexity for a, b in zip(ours, naive))
        print(f"  max relative difference of perplexities: {worst:.2e}")

    print("\nnon-model stages (parse, validate, opt-out removal, text merge) on generated OBELICS rows:")
    import tempfile

    from tests.pipelines.obelics_data import write_partitions

    with tempfile.TemporaryDirectory() as tmp:
        facts = write_partitions(Path(tmp), partitions=1, docs=5000)
        (result, seconds) = timed(lambda: clean_partition(Path(tmp) / "part-0.parquet", "p", CleaningSettings(), OptOutVerdicts()))
        print(f"  {facts['input']} rows in {seconds:.2f}s = {facts['input'] / seconds:.0f} docs/s on one core")


if __name__ == "__main__":
    main()
