"""Training-step throughput of potion's Idefics2 against transformers' Idefics2ForConditionalGeneration.

One step = forward + backward + AdamW update, on the same configuration, weights and batch for both
models, with and without peft LoRA on q_proj/v_proj. Each case runs in its own subprocess so that
peak memory is measured cleanly: on CPU the growth of peak resident memory over the steps (Linux
VmHWM, reset before the steps), on GPU `torch.cuda.max_memory_allocated`.

    python benchmarks/train_step_throughput.py                      # tiny preset, CPU, < 2 min on 2 cores
    python benchmarks/train_step_throughput.py --device cuda --dtype bfloat16 --preset mid

MFU = 6 * N * tokens / step time / peak FLOP/s, with N the parameters excluding the input embedding
table and tokens the language-model sequence positions (image tokens included). It ignores the vision
tower's patch count and attention FLOPs, and with LoRA the frozen weights get no weight gradients, so
read it as a rough utilisation figure for comparing runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = {
    "tiny": dict(vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                             image_size=64, patch_size=8),
                 perceiver=dict(resampler_n_latents=32, resampler_depth=3, resampler_n_heads=4,
                                resampler_head_dim=64, num_key_value_heads=2),
                 text=dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=4),
                 batch=4, seq_len=256, images_per_sample=2),
    "mid": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=378, patch_size=14),
                perceiver=dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=16,
                               resampler_head_dim=96, num_key_value_heads=4),
                text=dict(vocab_size=32003, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                          num_attention_heads=16, num_key_value_heads=4),
                batch=8, seq_len=1024, images_per_sample=2),
}
IMAGE_TOKEN_OFFSET, FAKE_TOKEN_OFFSET = 1, 2  # counted from the end of the vocabulary
CASES = [("transformers", False), ("potion", False), ("transformers", True), ("potion", True)]


def build_config(preset: dict):
    from transformers import Idefics2Config

    vocab = preset["text"]["vocab_size"]
    return Idefics2Config(
        vision_config=preset["vision"],
        perceiver_config={"hidden_size": preset["text"]["hidden_size"], **preset["perceiver"]},
        text_config={"model_type": "mistral", "sliding_window": None, **preset["text"]},
        image_token_id=vocab - IMAGE_TOKEN_OFFSET,
    )


def make_batch(config, preset: dict, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Each sample starts with its images' `<fake><image>*n<fake>` runs, then text; every tokens counts."""
    generator = torch.Generator().manual_seed(0)
    batch, length, images = preset["batch"], preset["seq_len"], preset["images_per_sample"]
    vocab, latents = config.text_config.vocab_size, config.perceiver_config.resampler_n_latents
    fake = vocab - FAKE_TOKEN_OFFSET
    input_ids = torch.randint(0, vocab - 2, (batch, length), generator=generator)
    run = [fake] + [config.image_token_id] * latents + [fake]
    input_ids[:, : images * len(run)] = torch.tensor(run * images)
    labels = input_ids.clone()
    labels[input_ids == config.image_token_id] = -100
    side = config.vision_config.image_size
    pixel_values = torch.randn(batch, images, 3, side, side, generator=generator)
    return dict(input_ids=input_ids.to(device), attention_mask=torch.ones_like(input_ids).to(device),
                pixel_values=pixel_values.to(device, dtype), labels=labels.to(device))


def build_model(implementation: str, config, lora: bool, device: torch.device, dtype: torch.dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import Idefics2ForConditionalGeneration as ReferenceIdefics2

    from training.model import Idefics2ForConditionalGeneration

    torch.manual_seed(0)
    config._attn_implementation = "sdpa"
    reference = ReferenceIdefics2(config)
    if implementation == "potion":
        with torch.device("meta"):
            model = Idefics2ForConditionalGeneration(config)
        model.load_state_dict(reference.state_dict(), strict=True, assign=True)
        del reference
    else:
        model = reference
        model.config.use_cache = False
    model = model.to(device, dtype).train()
    if lora:
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    return model


def memory_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (peak resident set) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_case(args: argparse.Namespace, implementation: str, lora: bool) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    preset = PRESETS[args.preset]
    config = build_config(preset)
    model = build_model(implementation, config, lora, device, dtype)
    batch = make_batch(config, preset, device, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    embedding = model.get_input_embeddings().weight.numel()
    counted_params = sum(p.numel() for p in model.parameters()) - embedding

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        memory_before = torch.cuda.memory_allocated()
    else:
        exact_peak = reset_peak_rss()
        memory_before = memory_status_kib("VmRSS") * 1024
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        extra = peak - memory_before
    elif exact_peak:
        peak = memory_status_kib("VmHWM") * 1024
        extra = peak - memory_before
    else:  # ru_maxrss only grows: its growth during the steps is a lower bound
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        extra = peak - maxrss_before
    step_time = statistics.median(times)
    tokens = preset["batch"] * preset["seq_len"]
    return dict(implementation=implementation, lora=lora, step_s=step_time, tokens_per_s=tokens / step_time,
                peak_bytes=peak, step_extra_bytes=extra, params=counted_params + embedding,
                trainable=sum(p.numel() for p in params),
                mfu=6 * counted_params * tokens / step_time / args.peak_flops)


def run_in_subprocess(args: argparse.Namespace, implementation: str, lora: bool) -> dict:
    command = [sys.executable, __file__, "--case", f"{implementation}:{int(lora)}", "--device", args.device,
               "--dtype", args.dtype, "--preset", args.preset, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--peak-flops", str(args.peak_flops)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    gib = 2**30
    memory_label = "peak alloc GiB" if args.device.startswith("cuda") else "peak RSS GiB"
    print(f"preset={args.preset} device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
          f"steps={args.steps} (median step)")
    header = f"{'model':<13}{'LoRA':<6}{'step s':>9}{'tokens/s':>11}{memory_label:>16}{'+during steps':>15}"
    if args.device.startswith("cuda"):
        header += f"{'MFU':>8}"
    print(header)
    for row in results:
        line = (f"{row['implementation']:<13}{'yes' if row['lora'] else 'no':<6}{row['step_s']:>9.3f}"
                f"{row['tokens_per_s']:>11.0f}{row['peak_bytes'] / gib:>16.3f}{row['step_extra_bytes'] / gib:>15.3f}")
        if args.device.startswith("cuda"):
            line += f"{row['mfu']:>8.1%}"
        print(line)
    for lora in (False, True):
        ours, theirs = (next(r for r in results if r["implementation"] == name and r["lora"] == lora)
                        for name in ("potion", "transformers"))
        print(f"{'LoRA' if lora else 'full'}: potion/transformers tokens/s = "
              f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x, "
              f"step memory = {ours['step_extra_bytes'] / max(theirs['step_extra_bytes'], 1):.2f}x")
    print(f"params {results[0]['params'] / 1e6:.1f} M; trainable with LoRA "
          f"{next(r for r in results if r['lora'])['trainable'] / 1e6:.2f} M")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-flops", type=float, default=989e12,
                        help="peak FLOP/s of the device for MFU (default: H100 SXM dense bf16)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        implementation, lora = args.case.split(":")
        print(json.dumps(run_case(args, implementation, bool(int(lora)))))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = [run_in_subprocess(args, implementation, lora) for implementation, lora in CASES]
    print_table(results, args)


if __name__ == "__main__":
    main()
