"""Packed rows: every sample attends and is scored as if it ran alone (CPU, fp32, tiny random model).

Samples with images, a text-only sample and a GQA decoder are packed two to a row with right padding;
their logits and losses are compared with each sample run on its own, and with transformers' Idefics2
given the same packed position ids (its own block-diagonal masking).
"""

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from training import model as model_module
from training.metrics import squared_sample_lengths
from training.model import (
    Idefics2ForConditionalGeneration,
    TextAttentionPlan,
    plan_text_attention,
    sample_boundaries,
    text_attention,
)

from .test_model_parity import (
    PAD_TOKEN,
    grad_of,
    image_run,
    max_diff,
    reference_model,
    tiny_config,
)

TOLERANCE = 1e-5


def make_samples(seed: int = 0) -> list[dict[str, Any]]:
    """Three samples: one image then text; text only; text, an image, text, an image (two sizes)."""
    generator = torch.Generator().manual_seed(seed)

    def words(n: int) -> list[int]:
        return torch.randint(1, 90, (n,), generator=generator).tolist()

    def image(height: int, width: int) -> torch.Tensor:
        pixels = torch.zeros(3, 56, 56)
        pixels[:, :height, :width] = torch.randn(3, height, width, generator=generator)
        return pixels

    rows = [
        ([1] + image_run() + words(9), [image(56, 56)]),
        ([1] + words(11), []),
        ([1] + words(4) + image_run() + words(3) + image_run() + words(5), [image(42, 56), image(56, 35)]),
    ]
    samples: list[dict[str, Any]] = []
    for ids, images in rows:
        input_ids = torch.tensor(ids)
        labels = input_ids.clone()
        labels[input_ids >= 98] = -100  # no loss on image runs
        labels[0] = -100  # nor on BOS
        samples.append({"input_ids": input_ids, "labels": labels, "images": images})
    return samples


def alone(sample: dict) -> dict[str, torch.Tensor]:
    batch = {"input_ids": sample["input_ids"][None], "labels": sample["labels"][None]}
    if sample["images"]:
        pixels = torch.stack(sample["images"])[None]
        batch["pixel_values"] = pixels
        batch["pixel_attention_mask"] = pixels[:, :, 0].ne(0).long()
    return batch


def packed(samples: list[dict], rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Samples concatenated per row, positions restarting at 0, right padding continuing the positions."""
    length = max(sum(len(samples[i]["input_ids"]) for i in row) for row in rows)
    most_images = max(sum(len(samples[i]["images"]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), length), PAD_TOKEN)
    labels = torch.full((len(rows), length), -100)
    position_ids = torch.arange(length).repeat(len(rows), 1)
    pixel_values = torch.zeros(len(rows), most_images, 3, 56, 56)
    for r, row in enumerate(rows):
        ids = torch.cat([samples[i]["input_ids"] for i in row])
        input_ids[r, : len(ids)] = ids
        labels[r, : len(ids)] = torch.cat([samples[i]["labels"] for i in row])
        positions = torch.cat([torch.arange(len(samples[i]["input_ids"])) for i in row])
        position_ids[r, : len(ids)] = positions
        position_ids[r, len(ids) :] = torch.arange(length - len(ids)) + positions[-1] + 1
        for slot, pixels in enumerate(p for i in row for p in samples[i]["images"]):
            pixel_values[r, slot] = pixels
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "pixel_values": pixel_values,
        "pixel_attention_mask": pixel_values[:, :, 0].ne(0).long(),
    }


def spans(samples: list[dict], rows: list[list[int]]) -> dict[int, tuple[int, slice]]:
    """Sample index -> (row, its positions in the packed row)."""
    found = {}
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            found[i] = (r, slice(start, start + len(samples[i]["input_ids"])))
            start += len(samples[i]["input_ids"])
    return found


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position next-token loss (0 where there is no target) of one sequence."""
    targets = F.pad(labels[1:], (0, 1), value=-100)
    return F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="none")


ROWS = [[0, 1], [2]]


@pytest.mark.parametrize("sliding_window", [None, 7])
def test_packed_samples_compute_what_they_compute_alone(sliding_window):
    config = tiny_config(sliding_window)
    model = Idefics2ForConditionalGeneration(config).eval()
    model.load_state_dict(reference_model(config).state_dict())
    samples = make_samples()
    batch = packed(samples, ROWS)
    batch["labels"][0, len(samples[0]["input_ids"])] = 7  # a stray label on a sample's first token
    with torch.no_grad():
        out = model(**batch)
        separate = [model(**alone(sample)) for sample in samples]
    total: float | torch.Tensor = 0.0
    targets = 0
    for i, (row, span) in spans(samples, ROWS).items():
        expected = separate[i].logits[0]
        assert max_diff(out.logits[row, span], expected) < TOLERANCE, i
        labels = samples[i]["labels"]
        got_losses = token_losses(out.logits[row, span], labels)
        assert max_diff(got_losses, token_losses(expected, labels)) < TOLERANCE, i
        assert abs(got_losses.sum() / (labels[1:] != -100).sum() - separate[i].loss) < TOLERANCE, i
        total, targets = total + got_losses.sum(), targets + int((labels[1:] != -100).sum())
    # the packed loss is the token-weighted mean of the samples' losses: nothing crosses a boundary
    assert abs(out.loss - total / targets) < TOLERANCE


def test_packed_rows_match_transformers_packed_position_ids():
    """transformers isolates packed samples the same way when given the position ids (and neither a
    mask nor a cache)."""
    config = tiny_config()
    reference = reference_model(config)
    model = Idefics2ForConditionalGeneration(config).eval()
    model.load_state_dict(reference.state_dict())
    samples = make_samples(seed=1)
    batch = packed(samples, ROWS)
    with torch.no_grad():
        ours = model(**batch)
        theirs = reference(**batch, use_cache=False)
    real = batch["labels"].ne(-100) | batch["input_ids"].ne(PAD_TOKEN)
    assert max_diff(ours.logits[real], theirs.logits[real]) < TOLERANCE
    assert abs(ours.loss - theirs.loss) < TOLERANCE


def test_gradients_of_a_packed_row_are_the_sum_of_the_samples_gradients():
    config = tiny_config()
    model = Idefics2ForConditionalGeneration(config).train()
    model.load_state_dict(reference_model(config).state_dict())
    samples = make_samples(seed=2)
    targets = sum(int((s["labels"][1:] != -100).sum()) for s in samples)
    model(**packed(samples, ROWS), num_items_in_batch=targets).loss.backward()
    together = {name: grad_of(p).clone() for name, p in model.named_parameters()}
    model.zero_grad()
    for sample in samples:
        model(**alone(sample), num_items_in_batch=targets).loss.backward()
    for name, param in model.named_parameters():
        assert max_diff(param.grad, together[name]) < TOLERANCE, name


def test_attention_plans():
    """Right padding and plain rows need no mask; left padding and packed rows (off CUDA) get one."""
    positions = torch.arange(6).repeat(2, 1)
    right = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    plain = plan_text_attention(right, positions, None, varlen=False)
    assert plain.mask is None and plain.cu_seqlens is None
    left = plan_text_attention(right.flip(1), positions, None, varlen=False)
    assert left.mask is not None and not left.mask[0, 0, 5, 0]  # a left pad key is hidden
    packed_positions = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])
    block = plan_text_attention(right, packed_positions, None, varlen=False).mask
    assert block is not None
    assert block[0, 0, 4].tolist() == [False, False, False, True, True, False]
    varlen = plan_text_attention(None, packed_positions, None, varlen=True)
    assert varlen.cu_seqlens is not None
    assert varlen.cu_seqlens.tolist() == [0, 3, 6, 12] and varlen.max_seqlen == 6
    cu_seqlens, longest = sample_boundaries(None, 2, 6, torch.device("cpu"))
    assert cu_seqlens.tolist() == [0, 6, 12] and longest == 6


def flash_varlen_reference(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size, enable_gqa):
    """FlashAttention varlen's contract, spelled out with SDPA: causal attention within each
    [cu_seq[i], cu_seq[i+1]) block, keys at most `window_size[0]` positions back (-1: unlimited)."""
    out = torch.empty_like(q)
    for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist()):
        index = torch.arange(end - start)
        allowed = index[:, None] >= index[None, :]
        if window_size[0] >= 0:
            allowed &= index[:, None] - index[None, :] <= window_size[0]
        query, key, value = (t[start:end].transpose(0, 1)[None] for t in (q, k, v))
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, enable_gqa=enable_gqa)
        out[start:end] = attended[0].transpose(0, 1)
    return out


@pytest.mark.parametrize("sliding_window", [None, 3])
def test_varlen_path_attends_like_the_masked_path(monkeypatch, sliding_window):
    """The CUDA path's plumbing (flattening, sample starts, window, GQA) on CPU, through a reference
    kernel with FlashAttention varlen's contract; the GPU benchmark checks the real kernel."""
    monkeypatch.setattr(model_module, "varlen_attn", flash_varlen_reference)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 7, 4, 8, generator=generator)
    k, v = (torch.randn(2, 7, 2, 8, generator=generator) for _ in range(2))
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4]])
    masked = plan_text_attention(None, positions, sliding_window, varlen=False)
    varlen = plan_text_attention(None, positions, sliding_window, varlen=True)
    assert masked.mask is not None and varlen.cu_seqlens is not None
    expected = text_attention(q, k, v, masked, 0.0)
    assert max_diff(text_attention(q, k, v, varlen, 0.0), expected) < 1e-6
    assert max_diff(text_attention(q, k, v, TextAttentionPlan(), 0.0), expected) > 1e-2  # isolation matters


def test_attention_flops_count_each_packed_sample_alone():
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    assert squared_sample_lengths({"attention_mask": mask}) == 5**2 + 3**2
    positions = torch.tensor([[0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])
    assert squared_sample_lengths({"attention_mask": mask, "position_ids": positions}) == 2**2 + 3**2 + 3**2


@pytest.mark.skipif(not torch.cuda.is_available() or model_module.varlen_attn is None, reason="needs CUDA")
def test_flash_varlen_kernel_attends_like_the_masked_path_on_cuda():
    generator = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, 300, 8, 64, device="cuda", dtype=torch.bfloat16, generator=generator)
    k, v = (torch.randn(2, 300, 2, 64, device="cuda", dtype=torch.bfloat16, generator=generator) for _ in range(2))
    positions = torch.cat([torch.arange(120), torch.arange(180)]).repeat(2, 1).cuda()
    positions[1] = torch.arange(300)
    masked = plan_text_attention(None, positions, None, varlen=False)
    varlen = plan_text_attention(None, positions, None, varlen=True)
    expected = text_attention(q.float(), k.float(), v.float(), masked, 0.0)
    assert max_diff(text_attention(q, k, v, varlen, 0.0).float(), expected) < 2e-2  # bf16 inputs
