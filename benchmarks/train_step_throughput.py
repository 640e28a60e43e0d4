"""Training-step throughput of potion's Idefics2 against transformers' Idefics2ForConditionalGeneration.

One step = forward + backward + AdamW update, on the same configuration, weights and batch for both
models, with and without peft LoRA on q_proj/v_proj. potion runs its training forward (the loss over
target positions, chunk by chunk, without a full logits tensor), transformers its usual one. The four
cases are timed round-robin in one process, so load from elsewhere on the machine falls on all of them
alike. Step memory is the peak
of one training step over the memory held before it: `torch.cuda.max_memory_allocated` on GPU, the
peak resident set (Linux VmHWM, reset before the step) on CPU.

    python benchmarks/train_step_throughput.py                      # tiny preset, CPU, < 2 min on 2 cores
    python benchmarks/train_step_throughput.py --device cuda --dtype bfloat16 --preset mid

MFU = 6 * N * tokens / step time / peak FLOP/s, with N the parameters excluding the input embedding
table and tokens the language-model sequence positions (image tokens included). It ignores the vision
tower's patch count and attention FLOPs, and with LoRA the frozen weights get no weight gradients, so
read it as a rough utilisation figure for comparing runs.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import Idefics2Config
from transformers import Idefics2ForConditionalGeneration as ReferenceIdefics2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.model import Idefics2ForConditionalGeneration  # noqa: E402

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, image_size=64, patch_size=8),
        perceiver=dict(resampler_n_latents=32, resampler_depth=3, resampler_n_heads=4, resampler_head_dim=64, num_key_value_heads=2),
        text=dict(
            vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4
        ),
        batch=4,
        seq_len=256,
        images_per_sample=2,
    ),
    "mid": dict(
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=378, patch_size=14),
        perceiver=dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=16, resampler_head_dim=96, num_key_value_heads=4),
        text=dict(
            vocab_size=32003, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4
        ),
        batch=8,
        seq_len=1024,
        images_per_sample=2,
    ),
}
IMAGE_TOKEN_OFFSET, FAKE_TOKEN_OFFSET = 1, 2  # counted from the end of the vocabulary
CASES = [("transformers", False), ("potion", False), ("transformers", True), ("potion", True)]


def build_config(preset: dict) -> Idefics2Config:
    vocab = preset["text"]["vocab_size"]
    return Idefics2Config(
        vision_config=preset["vision"],
        perceiver_config={"hidden_size": preset["text"]["hidden_size"], **preset["perceiver"]},
        text_config={"model_type": "mistral", "sliding_window": None, **preset["text"]},
        image_token_id=vocab - IMAGE_TOKEN_OFFSET,
        use_cache=False,
    )


def make_batch(config, preset: dict, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Each sample starts with its images' `<fake><image>*n<fake>` runs, then text; every position is a target."""
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
    return dict(
        input_ids=input_ids.to(device),
        attention_mask=torch.ones_like(input_ids).to(device),
        pixel_values=pixel_values.to(device, dtype),
        labels=labels.to(device),
    )


def build_model(implementation: str, config, lora: bool, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    config._attn_implementation = "sdpa"
    with device:
        reference = ReferenceIdefics2(config)
    if implementation == "potion":
        with torch.device("meta"):
            model: torch.nn.Module = Idefics2ForConditionalGeneration(config)
        model.load_state_dict(reference.state_dict(), strict=True, assign=True)
        del reference
    else:
        model = reference
    model = model.to(device, dtype).train()
    if lora:
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    return model


class Case:
    """One model under training: its optimizer, its step, its timings and step memory."""

    def __init__(self, implementation: str, lora: bool, config, batch: dict, device: torch.device, dtype: torch.dtype) -> None:
        self.implementation, self.lora, self.batch, self.device = implementation, lora, batch, device
        self.model = build_model(implementation, config, lora, device, dtype)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        self.trainable = sum(p.numel() for p in trainable)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.embedding = self.model.get_input_embeddings().weight.numel()
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        # potion's training forward: the loss chunked over target positions, no full logits
        self.loss_kwargs = {"return_logits": False} if implementation == "potion" else {}

    def step(self) -> None:
        sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        self.model(**self.batch, **self.loss_kwargs).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def memory_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def step_memory(case: Case) -> tuple[int, int]:
    """(peak bytes, growth over the memory held before the step) for one training step.

    GPU: allocator statistics. CPU (Linux): freed heap is handed back to the OS (malloc_trim), the
    peak resident set (VmHWM) is reset to the current one (clear_refs 5), and read after the step.
    """
    if case.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        case.step()
        peak = torch.cuda.max_memory_allocated()
        return peak, peak - before
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_status_kib("VmRSS") * 1024
    case.step()
    peak = memory_status_kib("VmHWM") * 1024
    return peak, peak - before


def run(args: argparse.Namespace) -> list[dict]:
    """Warm up every case, measure each one's step memory, then time the cases round-robin (order
    reversed every other round) so that load from other processes falls on all of them alike."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    preset = PRESETS[args.preset]
    config = build_config(preset)
    batch = make_batch(config, preset, device, dtype)
    cases = [Case(implementation, lora, config, batch, device, dtype) for implementation, lora in CASES]
    for case in cases:
        for _ in range(args.warmup):
            case.step()
    memory = [step_memory(case) for case in cases]
    for case in cases:
        case.times.clear()
        case.cpu_times.clear()
    for round_ in range(args.steps):
        for case in cases if round_ % 2 == 0 else cases[::-1]:
            case.step()
    tokens = preset["batch"] * preset["seq_len"]
    results = []
    for case, (peak, extra) in zip(cases, memory):
        step_time = min(case.times)
        results.append(
            dict(
                implementation=case.implementation,
                lora=case.lora,
                step_s=step_time,
                cpu_s=min(case.cpu_times),
                tokens_per_s=tokens / step_time,
                peak_bytes=peak,
                step_extra_bytes=extra,
                params=case.params,
                trainable=case.trainable,
                mfu=6 * (case.params - case.embedding) * tokens / step_time / args.peak_flops,
            )
        )
    return results


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    gib = 2**30
    on_gpu = args.device.startswith("cuda")
    memory_label = "peak alloc GiB" if on_gpu else "peak RSS GiB"
    print(
        f"preset={args.preset} device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"steps={args.steps} (fastest step: the one least disturbed by other load)"
    )
    header = f"{'model':<13}{'LoRA':<6}{'step s':>9}{'tokens/s':>11}{'CPU s':>8}{memory_label:>16}{'step +GiB':>11}"
    print(header + (f"{'MFU':>8}" if on_gpu else ""))
    for row in results:
        line = (
            f"{row['implementation']:<13}{'yes' if row['lora'] else 'no':<6}{row['step_s']:>9.3f}"
            f"{row['tokens_per_s']:>11.0f}{row['cpu_s']:>8.3f}{row['peak_bytes'] / gib:>16.3f}"
            f"{row['step_extra_bytes'] / gib:>11.3f}"
        )
        print(line + (f"{row['mfu']:>8.1%}" if on_gpu else ""))
    for lora in (False, True):
        ours, theirs = (
            next(r for r in results if r["implementation"] == name and r["lora"] == lora) for name in ("potion", "transformers")
        )
        print(
            f"{'LoRA' if lora else 'full'}: potion/transformers tokens/s = "
            f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x, CPU time per step = "
            f"{ours['cpu_s'] / theirs['cpu_s']:.2f}x, step memory = "
            f"{ours['step_extra_bytes'] / max(theirs['step_extra_bytes'], 1):.2f}x"
        )
    print(
        f"params {results[0]['params'] / 1e6:.1f} M; trainable with LoRA {next(r for r in results if r['lora'])['trainable'] / 1e6:.2f} M"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case, round-robin")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="peak FLOP/s of the device for MFU (default: H100 SXM dense bf16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_table(run(args), args)


if __name__ == "__main__":
    main()
