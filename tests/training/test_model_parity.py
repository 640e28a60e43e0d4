"""Our compact Idefics2 against transformers' implementation, on a tiny random model (CPU, fp32).

The configuration exercises every path: a 4x4 patch grid, images of different sizes (one with a
partly covered edge patch), an all-zero padding image, GQA in the perceiver and the language model,
perceiver and text RMSNorms with different eps, and right-padded text.
"""

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    Idefics2Config,
    MistralConfig,
    MistralForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers import Idefics2ForConditionalGeneration as ReferenceIdefics2
from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionEmbeddings

from training.model import Idefics2ForConditionalGeneration, bucketed_position_ids

IMAGE_TOKEN, FAKE_TOKEN, PAD_TOKEN = 99, 98, 0
N_LATENTS = 4
TOLERANCE = 1e-5


def tiny_config(sliding_window: int | None = None) -> Idefics2Config:
    config = Idefics2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14),
        perceiver_config=dict(
            hidden_size=64,
            rms_norm_eps=1e-6,
            resampler_n_latents=N_LATENTS,
            resampler_depth=2,
            resampler_n_heads=4,
            resampler_head_dim=16,
            num_key_value_heads=2,
        ),
        text_config=dict(
            model_type="mistral",
            vocab_size=100,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            sliding_window=sliding_window,
            pad_token_id=PAD_TOKEN,
        ),
        image_token_id=IMAGE_TOKEN,
    )
    config._attn_implementation = "eager"
    return config


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights of unit-scale activations (default inits give near-zero logits that hide errors)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() >= 2 and "latents" not in name:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(noise if "latents" in name else 0.1 * noise)


def image_run(length: int = N_LATENTS) -> list[int]:
    return [FAKE_TOKEN] + [IMAGE_TOKEN] * length + [FAKE_TOKEN]


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Sample 0: two images (56x56 and 50x35); sample 1: one 42x56 image, a padding image, right padding."""
    generator = torch.Generator().manual_seed(seed)

    def words(n: int) -> list[int]:
        return torch.randint(1, 90, (n,), generator=generator).tolist()

    rows = [words(3) + image_run() + words(4) + image_run() + words(5), words(2) + image_run() + words(6)]
    length = max(map(len, rows))
    input_ids = torch.full((2, length), PAD_TOKEN)
    attention_mask = torch.zeros(2, length, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    pixel_values = torch.zeros(2, 2, 3, 56, 56)
    pixel_mask = torch.zeros(2, 2, 56, 56, dtype=torch.long)
    for (sample, image), (height, width) in {(0, 0): (56, 56), (0, 1): (50, 35), (1, 0): (42, 56)}.items():
        pixel_values[sample, image, :, :height, :width] = torch.randn(3, height, width, generator=generator)
        pixel_mask[sample, image, :height, :width] = 1
    labels = input_ids.clone()
    labels[(input_ids == IMAGE_TOKEN) | (attention_mask == 0)] = -100
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, pixel_attention_mask=pixel_mask, labels=labels
    )


def reference_model(config: Idefics2Config, seed: int = 0) -> ReferenceIdefics2:
    torch.manual_seed(seed)
    model = ReferenceIdefics2(config).eval()
    randomize_(model, seed)
    return model


def max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """The largest absolute difference; both tensors (often gradients) must exist."""
    assert a is not None and b is not None
    return (a - b).abs().max().item()


def grad_of(param: torch.Tensor) -> torch.Tensor:
    """The parameter's gradient, which must exist."""
    assert param.grad is not None
    return param.grad


def real(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at the real (unpadded) positions. Outputs at right-padding positions are unspecified: we
    attend causally there without a padding mask, transformers masks the padded keys; neither is used."""
    return logits[batch["attention_mask"].bool()]


def test_parameter_names_and_shapes_match_transformers():
    config = tiny_config()
    ours = {name: tuple(t.shape) for name, t in Idefics2ForConditionalGeneration(config).state_dict().items()}
    theirs = {name: tuple(t.shape) for name, t in ReferenceIdefics2(config).state_dict().items()}
    assert ours == theirs


@pytest.mark.parametrize("sliding_window", [None, 7])
def test_logits_loss_and_gradients_match_transformers(sliding_window):
    config = tiny_config(sliding_window)
    reference = reference_model(config)
    ours = Idefics2ForConditionalGeneration(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    batch = make_batch()

    expected = reference(**batch)
    got = ours(**batch)
    assert got.logits.abs().mean() > 0.1  # unit-scale logits, so the tolerance means something
    assert max_diff(real(got.logits, batch), real(expected.logits, batch)) < TOLERANCE
    assert abs(got.loss.item() - expected.loss.item()) < TOLERANCE

    expected.loss.backward()
    got.loss.backward()
    reference_grads = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        assert max_diff(param.grad, reference_grads[name].grad) < TOLERANCE, name

    with torch.no_grad():
        expected_features = torch.cat(reference.get_image_features(batch["pixel_values"], batch["pixel_attention_mask"]).pooler_output)
        got_features = ours.model.image_features(batch["pixel_values"], batch["pixel_attention_mask"])
    assert got_features.shape == (3 * N_LATENTS, 64)  # the all-zero padding image is dropped
    assert max_diff(got_features, expected_features) < TOLERANCE


def test_transformers_loads_our_state_dict():
    config = tiny_config()
    torch.manual_seed(1)
    ours = Idefics2ForConditionalGeneration(config).eval()
    randomize_(ours, seed=1)
    reference = ReferenceIdefics2(config).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    batch = make_batch(seed=1)
    with torch.no_grad():
        expected, got = reference(**batch), ours(**batch)
    assert max_diff(real(got.logits, batch), real(expected.logits, batch)) < TOLERANCE
    assert abs(got.loss.item() - expected.loss.item()) < TOLERANCE


@pytest.mark.parametrize("grid", [4, 70])
def test_bucketed_position_ids_equal_reference_ids(grid):
    """Read the reference's ids through a position table whose first channel holds the id."""
    config = Idefics2VisionConfig(hidden_size=2, image_size=grid * 14, patch_size=14)
    embeddings = Idefics2VisionEmbeddings(config)
    with torch.no_grad():
        embeddings.patch_embedding.weight.zero_()
        assert embeddings.patch_embedding.bias is not None
        embeddings.patch_embedding.bias.zero_()
        embeddings.position_embedding.weight[:, 0] = torch.arange(grid * grid, dtype=torch.float32)
    rows = cols = min(grid, 40)
    patch_mask = torch.zeros(6, rows, cols, dtype=torch.bool)
    for i, (height, width) in enumerate([(rows, cols), (1, 1), (3, rows), (rows, 7), (27, 27), (13, 29)]):
        patch_mask[i, : min(height, rows), : min(width, cols)] = True
    pixels = torch.zeros(6, 3, rows * 14, cols * 14)
    with torch.no_grad():
        expected = embeddings(pixels, patch_mask)[..., 0].long()
    assert torch.equal(bucketed_position_ids(patch_mask, grid), expected)


def test_checkpoint_directory_loads_with_config(tmp_path):
    config = tiny_config()
    reference = reference_model(config)
    reference.save_pretrained(tmp_path)
    ours = Idefics2ForConditionalGeneration.from_idefics2_checkpoint(tmp_path).eval()
    batch = make_batch()
    with torch.no_grad():
        assert max_diff(real(ours(**batch).logits, batch), real(reference(**batch).logits, batch)) < TOLERANCE
    in_bf16 = Idefics2ForConditionalGeneration.from_idefics2_checkpoint(tmp_path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in in_bf16.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        logits = in_bf16(**batch).logits
    assert logits.dtype == torch.bfloat16
    assert max_diff(logits.float(), ours(**batch).logits) < 0.1  # bf16 rounding only


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="local checkpoint directory"):
        Idefics2ForConditionalGeneration.from_idefics2_checkpoint("no-such-org/no-such-idefics2")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        Idefics2ForConditionalGeneration.from_idefics2_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="local directory as `vision`"):
        Idefics2ForConditionalGeneration.from_backbones("no-such-org/no-such-siglip", tmp_path)


def test_from_backbones_keeps_siglip_and_mistral_behaviour(tmp_path):
    torch.manual_seed(0)
    siglip = SiglipVisionModel(
        SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    ).eval()
    mistral = MistralForCausalLM(
        MistralConfig(
            vocab_size=96,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=None,
        )
    ).eval()
    randomize_(siglip, seed=2)
    randomize_(mistral, seed=3)
    siglip.save_pretrained(tmp_path / "siglip")
    mistral.save_pretrained(tmp_path / "mistral")

    model = Idefics2ForConditionalGeneration.from_backbones(
        tmp_path / "siglip",
        tmp_path / "mistral",
        image_size=64,
        image_token_id=97,
        vocab_size=99,
        perceiver=dict(resampler_n_latents=N_LATENTS, resampler_depth=2, resampler_n_heads=4, resampler_head_dim=16, num_key_value_heads=2),
    ).eval()
    assert model.model.vision_model.embeddings.position_embedding.weight.shape == (64, 32)  # 4x4 -> 8x8 grid

    # a full 64 px image on the 8x8 grid == SigLIP with its own bicubic position interpolation
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = siglip(pixels, interpolate_pos_encoding=True).last_hidden_state
        got = model.model.vision_model(pixels, torch.ones(1, 8, 8, dtype=torch.bool))
    assert max_diff(got, expected) < TOLERANCE

    # text-only: the Mistral's logits, plus three new rows initialised to the mean
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        expected = mistral(input_ids=ids).logits
        got = model(input_ids=ids).logits
    assert got.shape[-1] == 99
    assert max_diff(got[..., :96], expected) < TOLERANCE
    embed = model.get_input_embeddings().weight
    assert torch.allclose(embed[96:], embed[:96].mean(0).expand(3, -1))

    latents = model.model.connector.perceiver_resampler.latents
    assert latents.shape == (N_LATENTS, 64) and latents.std(dim=0).min() > 0.1  # distinct latents

    # the result is a valid transformers Idefics2 and runs with images
    reference = ReferenceIdefics2(model.config).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    ids = torch.tensor([[5] + [0] + [97] * N_LATENTS + [0] + [7, 8]])
    image = torch.randn(1, 1, 3, 64, 48)
    with torch.no_grad():
        assert max_diff(model(ids, pixel_values=image).logits, reference(ids, pixel_values=image).logits) < TOLERANCE


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config()
    model = Idefics2ForConditionalGeneration(config).train()
    randomize_(model)
    batch = make_batch()
    model(**batch).loss.backward()
    plain = {name: grad_of(p).clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing = True
    model(**batch).loss.backward()
    for name, param in model.named_parameters():
        assert max_diff(param.grad, plain[name]) < 1e-6, name


def test_neftune_noise_only_in_training():
    model = Idefics2ForConditionalGeneration(tiny_config())
    randomize_(model)
    model.neftune_alpha = 5.0
    batch = make_batch()
    model.eval()
    with torch.no_grad():
        clean = model(**batch).logits
        assert torch.equal(model(**batch).logits, clean)
        model.train()
        noisy = model(**batch).logits
    assert max_diff(noisy, clean) > 1e-3


def test_inputs_embeds_replace_the_token_lookup():
    model = Idefics2ForConditionalGeneration(tiny_config()).eval()
    randomize_(model)
    batch = make_batch()
    with torch.no_grad():
        expected = model(**batch).logits
        embeds = model.get_input_embeddings()(batch["input_ids"])
        got = model(**batch, inputs_embeds=embeds).logits
        shifted = model(**batch, inputs_embeds=embeds + 1.0).logits
    assert torch.equal(got, expected)
    assert max_diff(shifted, expected) > 1e-2


def test_loss_normalised_by_items_in_an_accumulated_batch():
    model = Idefics2ForConditionalGeneration(tiny_config()).eval()
    batch = make_batch()
    targets = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        mean = model(**batch).loss
        over_more = model(**batch, num_items_in_batch=3 * targets).loss
    assert torch.allclose(over_more * 3, mean)


def test_image_token_count_must_match_images():
    model = Idefics2ForConditionalGeneration(tiny_config())
    batch = make_batch()
    batch["input_ids"][0, 4] = 5
    with pytest.raises(ValueError, match="<image> tokens"):
        model(**batch)


def test_greedy_generate_matches_transformers():
    config = tiny_config()
    reference = reference_model(config)
    ours = Idefics2ForConditionalGeneration(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    batch = make_batch()
    prompt: dict[str, Any] = dict(
        input_ids=batch["input_ids"][1:, :14],
        pixel_values=batch["pixel_values"][1:],
        pixel_attention_mask=batch["pixel_attention_mask"][1:],
    )  # one image + a padding image
    expected = reference.generate(**prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = ours.generate(**prompt, max_new_tokens=6)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("use_dora", [False, True])
def test_peft_lora_wraps_attention_projections(use_dora):
    model = Idefics2ForConditionalGeneration(tiny_config()).eval()
    randomize_(model)
    batch = make_batch()
    with torch.no_grad():
        base_logits = model(**batch).logits
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=use_dora, modules_to_save=["connector"])
    )
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    adapters = [name for name in trainable if "lora_" in name]
    assert all("lora_" in name or ".connector.modules_to_save." in name for name in trainable)
    assert any(".vision_model." in name for name in adapters)
    assert any(".text_model." in name for name in adapters)
    assert any(".connector.modules_to_save.default.perceiver_resampler.latents" in name for name in trainable)
    with torch.no_grad():
        assert max_diff(peft_model(**batch).logits, base_logits) < 1e-5  # LoRA B starts at zero
    model.gradient_checkpointing = True  # frozen inputs to checkpointed layers still get adapter grads
    peft_model.train()
    peft_model(**batch).loss.backward()
    assert all(p.grad is not None for name, p in peft_model.named_parameters() if "lora_A" in name)
