"""Greedy generation throughput: potion with its KV cache, potion without a cache, transformers' generate.

The same weights, prompts (left-padded, one image each) and number of new tokens for every case; the
cases run round-robin in one process (order reversed every other round) so load from elsewhere falls
on all alike, and the fastest round of each counts. The three must produce identical tokens: the
benchmark checks that before timing. Tokens/s counts new tokens of the whole batch, per wall second of
the fastest round; on CPU the ratio to transformers uses process CPU time instead, which other load on
a shared machine disturbs far less than wall time.

    python benchmarks/generation_throughput.py                      # tiny preset, CPU, < 2 min on 2 cores
    python benchmarks/generation_throughput.py --device cuda --dtype bfloat16 --preset mid --new-tokens 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import Idefics2Config
from transformers import Idefics2ForConditionalGeneration as ReferenceIdefics2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.model import Idefics2ForConditionalGeneration  # noqa: E402

PRESETS = {
    "tiny": dict(
        vision=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14),
        perceiver=dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=4, resampler_head_dim=32, num_key_value_heads=2),
        text=dict(
            vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4
        ),
        batch=4,
        prompt_text=48,
    ),
    "mid": dict(
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=378, patch_size=14),
        perceiver=dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=16, resampler_head_dim=96, num_key_value_heads=4),
        text=dict(
            vocab_size=32003, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4
        ),
        batch=16,
        prompt_text=256,
    ),
}
CASES = ("potion, KV cache", "potion, no cache", "transformers generate")


def build(preset: dict, device: torch.device, dtype: torch.dtype):
    vocab = preset["text"]["vocab_size"]
    config = Idefics2Config(
        vision_config=preset["vision"],
        perceiver_config={"hidden_size": preset["text"]["hidden_size"], **preset["perceiver"]},
        text_config={"model_type": "mistral", "sliding_window": None, **preset["text"]},
        image_token_id=vocab - 1,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    reference = ReferenceIdefics2(config)
    with torch.no_grad():  # unit-scale weights: random-init logits are too flat to give stable greedy tokens
        for name, param in reference.named_parameters():
            if param.dim() >= 2 and "latents" not in name:
                param.normal_(0, param.shape[-1] ** -0.5)
    ours = Idefics2ForConditionalGeneration(config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    # transformers wraps PreTrainedModel.to with functools.wraps, and its stub then wants `self` first
    reference = reference.to(device, dtype)  # type: ignore[arg-type]
    return config, ours.to(device, dtype).eval(), reference.eval()


def prompts(config, preset: dict, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One image run then text per row, rows of different lengths, left-padded."""
    generator = torch.Generator().manual_seed(0)
    latents, vocab = config.perceiver_config.resampler_n_latents, config.text_config.vocab_size
    fake = vocab - 2
    rows = []
    for shift in range(preset["batch"]):
        text = torch.randint(3, vocab - 2, (preset["prompt_text"] - 3 * shift,), generator=generator).tolist()
        rows.append([1, fake] + [config.image_token_id] * latents + [fake] + text)
    length = max(map(len, rows))
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row) :] = torch.tensor(row)
        attention_mask[index, length - len(row) :] = 1
    side = config.vision_config.image_size
    pixels = torch.randn(len(rows), 1, 3, side, side, generator=generator)
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), "pixel_values": pixels.to(device, dtype)}


def generate(case: str, ours, reference, inputs: dict, new_tokens: int) -> torch.Tensor:
    with torch.no_grad():
        if case == "transformers generate":
            return reference.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        return ours.generate(**inputs, max_new_tokens=new_tokens, use_cache=case == "potion, KV cache")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (1 avoids oversubscription on a shared machine, where more threads run far slower)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    preset = PRESETS[args.preset]
    config, ours, reference = build(preset, device, dtype)
    inputs = prompts(config, preset, device, dtype)
    outputs = {case: generate(case, ours, reference, inputs, args.new_tokens) for case in CASES}  # warm-up too
    same = all(torch.equal(outputs[case], outputs[CASES[0]]) for case in CASES)
    times: dict[str, list[float]] = {case: [] for case in CASES}
    cpu_times: dict[str, list[float]] = {case: [] for case in CASES}
    for round_ in range(args.rounds):
        for case in CASES if round_ % 2 == 0 else CASES[::-1]:
            sync(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            generate(case, ours, reference, inputs, args.new_tokens)
            sync(device)
            times[case].append(time.perf_counter() - started)
            cpu_times[case].append(time.process_time() - cpu_started)
    tokens = preset["batch"] * args.new_tokens
    print(
        f"preset={args.preset} device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"batch={preset['batch']} prompt={inputs['input_ids'].shape[1]} tokens new={args.new_tokens} "
        f"rounds={args.rounds} (fastest round counts)"
    )
    print(f"identical tokens in all cases: {'yes' if same else 'NO'}")
    basis = cpu_times if device.type == "cpu" else times
    baseline = min(basis["transformers generate"])
    print(f"{'case':<24}{'seconds':>9}{'CPU s':>8}{'new tokens/s':>14}{'vs transformers':>17}")
    for case in CASES:
        print(
            f"{case:<24}{min(times[case]):>9.3f}{min(cpu_times[case]):>8.3f}{tokens / min(times[case]):>14.1f}"
            f"{baseline / min(basis[case]):>16.2f}x"
        )
    if not same:
        raise SystemExit("the cases disagree on the generated tokens")


if __name__ == "__main__":
    main()
