"""The training forward: the chunked loss equals the full-logits loss, and every parameter takes part."""

import torch

from training.model import Idefics2ForConditionalGeneration, chunked_lm_loss, next_token_targets

from .test_model_parity import grad_of, make_batch, max_diff, randomize_, tiny_config
from .test_packing import ROWS, make_samples, packed


def trained_model(seed: int = 0) -> Idefics2ForConditionalGeneration:
    model = Idefics2ForConditionalGeneration(tiny_config()).train()
    randomize_(model, seed)
    return model


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def test_chunked_loss_equals_the_full_logits_loss_with_its_gradients():
    model = trained_model()
    samples = make_samples()
    for batch in (make_batch(), packed(samples, ROWS)):
        full = model(**batch, num_items_in_batch=40)
        full.loss.backward()
        expected = gradients(model)
        chunked = model(**batch, num_items_in_batch=40, return_logits=False)
        assert chunked.logits is None
        assert abs(chunked.loss.item() - full.loss.item()) < 1e-6 * full.loss.item()
        chunked.loss.backward()
        got = gradients(model)
        assert got.keys() == expected.keys()
        for name, grad in got.items():
            assert max_diff(grad, expected[name]) < 1e-6, name


def test_small_chunks_give_the_same_loss_and_hidden_gradient():
    model = trained_model(seed=1)
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 9, 64, generator=generator, requires_grad=True)
    labels = torch.randint(0, 100, (2, 9), generator=generator)
    labels[0, :4] = -100
    targets = next_token_targets(labels)
    whole = chunked_lm_loss(hidden, model.lm_head, targets, 100)
    (expected,) = torch.autograd.grad(whole, hidden)
    in_threes = chunked_lm_loss(hidden, model.lm_head, targets, 100, chunk_rows=3)
    (got,) = torch.autograd.grad(in_threes, hidden)
    assert abs(whole.item() - in_threes.item()) < 1e-6 * whole.item()  # float32 sums in another order
    assert max_diff(got, expected) < 1e-7
    no_targets = chunked_lm_loss(hidden, model.lm_head, torch.full_like(targets, -100), 100, num_items_in_batch=5)
    no_targets.backward()  # a graph with zero gradients, not an error
    assert no_targets.item() == 0.0 and grad_of(hidden).abs().max() == 0


def test_a_batch_without_images_keeps_every_parameter_in_the_graph():
    """What DDP without unused-parameter search and FSDP need; the loss does not change."""
    model = trained_model(seed=2)
    text_only = {key: value for key, value in make_batch().items() if not key.startswith("pixel")}
    text_only["input_ids"] = text_only["input_ids"].masked_fill(text_only["input_ids"] >= 98, 5)
    plain = model(**text_only)
    plain.loss.backward()
    assert any(p.grad is None for name, p in model.named_parameters() if ".vision_model." in name)
    model.zero_grad(set_to_none=True)
    model.keep_image_path = True
    kept = model(**text_only)
    kept.loss.backward()
    assert kept.loss.item() == plain.loss.item()
    assert all(p.grad is not None for p in model.parameters())
    assert all(grad_of(p).abs().max() == 0 for name, p in model.named_parameters() if ".connector." in name)
