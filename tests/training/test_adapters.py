"""LoRA/DoRA placement, full training of the new parameters, new-token rows only, merging, NEFTune."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer

from training.adapters import apply_adapters, merge_adapters, set_neftune
from training.config import AdapterConfig, ImageConfig, ModelConfig, TrainConfig
from training.data import collate
from training.factory import build_model, new_token_ids
from training.loop import build_optimizer, decays, to_device
from training.processor import Processor

from .conftest import IMAGE_SEQ_LEN
from .test_processor import CONVERSATIONS


def model_with(tiny_checkpoint, tokenizer, **adapters):
    torch.manual_seed(0)
    model = build_model(ModelConfig(checkpoint=str(tiny_checkpoint)), tokenizer)
    setup = apply_adapters(model, AdapterConfig(**adapters), new_token_ids(tokenizer))
    return model, setup


def batch_for(tokenizer):
    processor = Processor(tokenizer, IMAGE_SEQ_LEN, ImageConfig(longest_edge=56, shortest_edge=28))
    batch = collate([processor.encode_conversation(sample) for sample in CONVERSATIONS], tokenizer.pad_token_id)
    return to_device(batch, torch.device("cpu"))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapters_sit_on_backbone_linears_and_the_connector_trains_fully(tiny_checkpoint, tokenizer, method):
    model, setup = model_with(tiny_checkpoint, tokenizer, method=method, r=4)
    adapted = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    vision = {
        f"model.vision_model.encoder.layers.{i}.{part}"
        for i in range(2)
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
    }
    text = {
        f"model.text_model.layers.{i}.{part}"
        for i in range(2)
        for part in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    }
    assert adapted == vision | text
    trainable = set(setup.trainable)
    assert all(name in trainable for name, _ in model.named_parameters() if name.startswith("model.connector."))
    assert not any("base_layer" in name for name in trainable)
    assert not any(name.startswith("model.vision_model.embeddings") for name in trainable)
    assert any("lora_magnitude_vector" in name for name in trainable) == (method == "dora")
    assert {"lm_head.new_rows", "model.text_model.embed_tokens.new_rows"} <= trainable
    assert not {"lm_head.weight", "model.text_model.embed_tokens.weight"} & trainable


def test_only_new_token_rows_move_and_the_matrices_hold_no_optimizer_state(tiny_checkpoint, tokenizer):
    model, setup = model_with(tiny_checkpoint, tokenizer, method="lora", r=4)
    assert setup.new_token_ids == new_token_ids(tokenizer)
    optimizer = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    vocab = model.config.text_config.vocab_size
    matrices = ("lm_head.weight", "model.text_model.embed_tokens.weight")
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    model(**batch_for(tokenizer)).loss.backward()
    assert all(model.get_parameter(name).grad is None for name in matrices)
    optimizer.step()
    assert not any(
        value.shape[0] == vocab for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value) and value.dim()
    )
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, before[name]), name
    merge_adapters(model)
    new_rows = new_token_ids(tokenizer)
    for name in matrices:
        changed = (model.get_parameter(name) != before[name]).any(dim=1).nonzero().flatten().tolist()
        assert changed and set(changed) <= set(new_rows), name  # <image> rows are never looked up


def test_weight_decay_spares_biases_norms_latents_and_vocabularies():
    assert decays("model.connector.modality_projection.gate_proj.weight", torch.zeros(2, 2))
    for name in (
        "model.connector.perceiver_resampler.latents",
        "lm_head.weight",
        "lm_head.new_rows",
        "model.text_model.embed_tokens.weight",
        "model.connector.perceiver_resampler.norm.weight",
    ):
        assert not decays(name, torch.zeros(2, 2))
    assert not decays("model.vision_model.encoder.layers.0.mlp.fc1.bias", torch.zeros(2))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merged_model_computes_what_the_adapted_model_did(tiny_checkpoint, tokenizer, method):
    model, _ = model_with(tiny_checkpoint, tokenizer, method=method, r=4, init="default")
    with torch.no_grad():  # make the adapters matter (B starts at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    batch = batch_for(tokenizer)
    model.eval()
    with torch.no_grad():
        adapted = model(**batch).logits
        merged = merge_adapters(model)(**batch).logits
    assert not any(isinstance(module, LoraLayer) for module in model.modules())
    assert (adapted - merged).abs().max() < 1e-4


def test_neftune_noise_only_in_training(tiny_checkpoint, tokenizer):
    model, _ = model_with(tiny_checkpoint, tokenizer, method="none")
    set_neftune(model, 5.0)
    batch = batch_for(tokenizer)
    with torch.no_grad():
        model.train()
        noisy = [model(**batch).logits for _ in range(2)]
        model.eval()
        clean = [model(**batch).logits for _ in range(2)]
    assert not torch.equal(noisy[0], noisy[1])
    assert torch.equal(clean[0], clean[1])
