"""Perplexity stage: packed scorer vs the padded scorer before it vs vLLM `prompt_logprobs`, same documents.

Falcon-RW-1B's shape (1.3B parameters, ALiBi, vocabulary 50,304) with random weights in bf16; documents of
1 to 28 paragraphs of English prose (about 800 tokens on average, as OBELICS), long ones split in windows
of 2,048 tokens. Throughput counts scored tokens; MFU counts 2 FLOPs per parameter and token (attention
not counted) against the device's dense bf16 peak. Accuracy: the largest relative difference of a
document's perplexity from a float32 plain-transformers loop, for the new and the old path.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import replace
from typing import Literal

import torch
from transformers import FalconForCausalLM

from benchmarks.gpu.baselines import PaddedPerplexityScorer, plain_loop_nll
from curation.perplexity import PerplexityConfig, PerplexityScore
from curation.perplexity_model import PerplexityScorer
from examples.assets import english_paragraphs, tiny_falcon_config, train_tokenizer

GOAL_TOKENS_PER_S = 200_000
GOAL_MAX_RELATIVE_ERROR = 1e-2  # bf16
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per GPU


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def make_documents(n: int, max_paragraphs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    prose = english_paragraphs()
    return ["\n\n".join(rng.choices(prose, k=rng.randint(1, max_paragraphs))) for _ in range(n)]


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def peak_memory_note() -> str:
    return f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if torch.cuda.is_available() else ""


def max_relative_error(scores: list[PerplexityScore], reference: list[PerplexityScore]) -> float:
    return max(abs(a.perplexity - b.perplexity) / b.perplexity for a, b in zip(scores, reference) if b.n_tokens)


def run(smoke: bool) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype: Literal["bfloat16", "float32"] = "bfloat16" if device == "cuda" else "float32"
    torch.manual_seed(0)
    tokenizer = train_tokenizer(english_paragraphs(), vocab_size=512 if smoke else 8192)
    if smoke:
        config = tiny_falcon_config(len(tokenizer), hidden_size=64, layers=2, heads=4, context=128)
    else:
        config = tiny_falcon_config(len(tokenizer), hidden_size=2048, layers=24, heads=32, context=2048)
        config.vocab_size = 50304  # Falcon-RW-1B's; the tokenizer uses the first ids only
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    with torch.device(device):
        model = FalconForCausalLM(config).to(getattr(torch, dtype)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    texts = make_documents(24 if smoke else 1024, max_paragraphs=6 if smoke else 28)
    settings = PerplexityConfig(device=device, dtype=dtype, batch_tokens=512 if smoke else 32768)

    def measure(scorer: PerplexityScorer) -> tuple[list[PerplexityScore], float, str]:
        scorer.score_texts(texts[:64])  # warm-up: kernels, compilation
        scores, seconds = timed(lambda: scorer.score_texts(texts))
        return scores, sum(s.n_tokens for s in scores) / seconds, peak_memory_note()

    scorer = PerplexityScorer(model, tokenizer, settings)
    new, new_rate, new_mem = measure(scorer)
    old, old_rate, old_mem = measure(PaddedPerplexityScorer(model, tokenizer, settings))
    peak = peak_flops()

    def throughput_row(name: str, rate: float, memory: str) -> dict:
        mfu = 2 * n_params * rate / peak if peak else None
        return {
            "section": "perplexity",
            "name": name,
            "value": rate,
            "unit": "tokens/s",
            "baseline": "padded (before)",
            "baseline_value": old_rate,
            "ratio": rate / old_rate,
            "goal": f">= {GOAL_TOKENS_PER_S}",
            "met": rate >= GOAL_TOKENS_PER_S,
            "mfu": mfu,
            "notes": "; ".join(filter(None, [f"MFU {mfu:.1%}" if mfu else "", memory, f"before: {old_mem}" if old_mem else ""])),
        }

    rows = [throughput_row(f"packed, {'flex' if device == 'cuda' else 'sdpa'} attention", new_rate, new_mem)]
    if not smoke:  # compiling takes minutes on a CPU; the slow test covers it there
        compiled = PerplexityScorer(model, tokenizer, replace(settings, compile=True))
        rows.append(throughput_row("packed + torch.compile", *measure(compiled)[1:]))
    rows.append(accuracy_row(model, scorer, texts[: 8 if smoke else 32], new, old))
    rows.append(vllm_row(model, scorer, texts, new_rate, smoke))
    return rows


def accuracy_row(model, scorer: PerplexityScorer, texts, new, old) -> dict:
    reference_model = copy.deepcopy(model).float()
    sequences, owners = scorer.windows(texts)
    reference = plain_loop_nll(reference_model, sequences, owners, len(texts))
    del reference_model
    new_error = max_relative_error(new[: len(texts)], reference)
    old_error = max_relative_error(old[: len(texts)], reference)
    return {
        "section": "perplexity",
        "name": "max relative ppl error vs fp32 loop",
        "value": new_error,
        "unit": "relative",
        "baseline": "padded (before)",
        "baseline_value": old_error,
        "goal": f"<= {GOAL_MAX_RELATIVE_ERROR}",
        "met": new_error <= GOAL_MAX_RELATIVE_ERROR,
        "notes": f"{len(texts)} documents",
    }


def vllm_row(model, scorer: PerplexityScorer, texts, new_rate: float, smoke: bool) -> dict:
    row = {
        "section": "perplexity",
        "name": "vLLM prompt_logprobs",
        "unit": "tokens/s",
        "baseline": "packed (ours)",
        "baseline_value": new_rate,
    }
    try:
        import vllm  # noqa: F401
    except ImportError:
        return row | {"value": None, "notes": "vLLM not importable here: skipped"}
    if smoke or not torch.cuda.is_available():
        return row | {"value": None, "notes": "needs a GPU: skipped"}
    torch.cuda.empty_cache()
    try:
        rate = vllm_rate(model, scorer, texts)
    except Exception as exc:  # a foreign engine: report its failure instead of losing the other figures
        return row | {"value": None, "notes": f"vLLM failed: {type(exc).__name__}: {str(exc)[:160]}"}
    return row | {"value": rate, "ratio": rate / new_rate}


def vllm_rate(model, scorer: PerplexityScorer, texts) -> float:
    """Scored tokens/s of vLLM over the same windows, the model saved to disk and loaded by vLLM."""
    import tempfile

    from vllm import LLM, SamplingParams

    sequences, _ = scorer.windows(texts)
    context = scorer.max_length + 1  # a full window plus the one token vLLM must generate
    with tempfile.TemporaryDirectory() as folder:
        saved = copy.deepcopy(model.config)
        saved.max_position_embeddings = context  # ALiBi: no learned positions, only vLLM's length check
        model.save_pretrained(folder)
        saved.save_pretrained(folder)
        scorer.tokenizer.save_pretrained(folder)
        llm = LLM(model=folder, dtype="bfloat16", gpu_memory_utilization=0.4, max_model_len=context, seed=0)
        params = SamplingParams(max_tokens=1, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": seq} for seq in sequences]
        llm.generate(prompts[:16], params, use_tqdm=False)
        _, seconds = timed(lambda: llm.generate(prompts, params, use_tqdm=False))
    return sum(len(seq) - 1 for seq in sequences) / seconds
