"""New-token rows trained apart: the same outputs and row gradients as the full matrices, merged back exactly."""

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from training.model import Idefics2ForConditionalGeneration
from training.new_tokens import NewTokenEmbedding, NewTokenHead, decouple_new_rows, merge_new_rows

from .test_model_parity import FAKE_TOKEN, IMAGE_TOKEN, grad_of, make_batch, max_diff, randomize_, tiny_config

NEW_IDS = [97, FAKE_TOKEN, IMAGE_TOKEN]  # 97 stands in for <end_of_utterance>
MATRICES = ("model.text_model.embed_tokens.weight", "lm_head.weight")


def model_pair(tie: bool = False) -> tuple[Idefics2ForConditionalGeneration, Idefics2ForConditionalGeneration]:
    config = tiny_config()
    config.tie_word_embeddings = tie
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Idefics2ForConditionalGeneration(config).eval()
        randomize_(model)
        models.append(model)
    return models[0], models[1]


def batch_using_new_tokens() -> dict[str, torch.Tensor]:
    batch = make_batch()
    batch["input_ids"][:, 1] = 97
    batch["labels"][:, 2] = 97
    return batch


def test_new_rows_give_the_full_matrices_outputs_and_their_rows_gradients():
    full, decoupled = model_pair()
    decoupled.requires_grad_(False)
    decouple_new_rows(decoupled, NEW_IDS, embedding=True, head=True)
    assert isinstance(decoupled.get_input_embeddings(), NewTokenEmbedding)
    assert isinstance(decoupled.lm_head, NewTokenHead)
    assert [name for name, p in decoupled.named_parameters() if p.requires_grad] == [
        "model.text_model.embed_tokens.new_rows",
        "lm_head.new_rows",
    ]
    batch = batch_using_new_tokens()
    expected = full(**batch)
    got = decoupled(**batch)
    assert max_diff(got.logits, expected.logits) < 1e-6
    expected.loss.backward()
    got.loss.backward()
    for name in MATRICES:
        module_name = name.removesuffix(".weight")
        module = decoupled.get_submodule(module_name)
        assert isinstance(module, (NewTokenEmbedding, NewTokenHead))
        rows = module.new_rows
        assert max_diff(rows.grad, grad_of(full.get_parameter(name))[NEW_IDS]) < 1e-6, name
        assert rows.grad is not None and rows.grad.abs().max() > 0 and decoupled.get_parameter(name).grad is None


def test_merge_writes_the_rows_back_into_plain_layers():
    base, decoupled = model_pair()
    decouple_new_rows(decoupled, NEW_IDS, embedding=True, head=True)
    with torch.no_grad():
        for module in (decoupled.get_input_embeddings(), decoupled.lm_head):
            assert isinstance(module, (NewTokenEmbedding, NewTokenHead))
            module.new_rows.add_(torch.randn_like(module.new_rows))
    batch = batch_using_new_tokens()
    with torch.no_grad():
        before_merge = decoupled(**batch).logits
        merge_new_rows(decoupled)
        after_merge = decoupled(**batch).logits
    assert type(decoupled.get_input_embeddings()) is nn.Embedding and type(decoupled.lm_head) is nn.Linear
    assert decoupled.state_dict().keys() == base.state_dict().keys()
    assert max_diff(after_merge, before_merge) < 1e-5  # logits up to ~20: float32 rounding of other matmul shapes
    for name in MATRICES:
        changed = (decoupled.get_parameter(name) != base.get_parameter(name)).any(dim=1).nonzero().flatten()
        assert changed.tolist() == NEW_IDS, name


def test_tied_embeddings_share_one_set_of_rows():
    full, decoupled = model_pair(tie=True)
    decoupled.requires_grad_(False)
    decouple_new_rows(decoupled, NEW_IDS, embedding=True, head=True)
    assert decoupled.lm_head.new_rows is decoupled.get_input_embeddings().new_rows
    assert [name for name, p in decoupled.named_parameters() if p.requires_grad] == ["model.text_model.embed_tokens.new_rows"]
    batch = batch_using_new_tokens()
    expected, got = full(**batch), decoupled(**batch)
    assert max_diff(got.logits, expected.logits) < 1e-6
    expected.loss.backward()
    got.loss.backward()
    embedding = decoupled.get_input_embeddings()
    assert isinstance(embedding, NewTokenEmbedding)
    assert max_diff(embedding.new_rows.grad, grad_of(full.lm_head.weight)[NEW_IDS]) < 1e-6  # embedding and head gradients summed


def test_an_adapted_lm_head_is_refused_with_the_fix():
    _, model = model_pair()
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["lm_head"]), model)
    with pytest.raises(ValueError, match="plain Linear at lm_head"):
        decouple_new_rows(model, NEW_IDS, embedding=True, head=True)
