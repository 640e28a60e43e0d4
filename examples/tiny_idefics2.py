"""A tiny random Idefics2 checkpoint with a tokenizer trained offline, for the demo and the tests.

    python -m examples.tiny_idefics2 --output examples/models/tiny-idefics2

The folder is a complete Hugging Face Idefics2 checkpoint (config.json, model.safetensors, tokenizer
and processor files): `train` loads it as `model.checkpoint`, and transformers'
`Idefics2ForConditionalGeneration.from_pretrained` / `AutoProcessor.from_pretrained` load it too.
The tokenizer is Mistral-shaped (sentencepiece-like BPE, `<s>` prepended, `<unk>` as padding) and
trained on Python's bundled documentation prose, with Idefics2's three added tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

IDEFICS2_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
BASE_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]


def train_mistral_like_tokenizer(vocab_size: int = 1024):
    """A BPE tokenizer shaped like Mistral's: Metaspace pre-tokenizer, BOS added, pad = unk."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BASE_SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(sorted(topics.values()), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": IDEFICS2_TOKENS})
    return fast


def tiny_config(
    tokenizer,
    *,
    image_seq_len: int = 64,
    vision_image_size: int = 56,
    text_hidden: int = 64,
    text_layers: int = 2,
    vision_hidden: int = 32,
    vision_layers: int = 2,
):
    """An Idefics2Config of the released model's shape, scaled down (patch 14, GQA, 3-layer perceiver).

    Heads grow with the widths (64-wide heads), so larger sizes stay sensible for benchmarks.
    """
    from transformers import Idefics2Config

    text_heads = max(4, text_hidden // 64)
    perceiver_heads = max(4, text_hidden // 128)
    return Idefics2Config(
        vision_config=dict(
            hidden_size=vision_hidden,
            intermediate_size=4 * vision_hidden,
            num_hidden_layers=vision_layers,
            num_attention_heads=max(2, vision_hidden // 64),
            image_size=vision_image_size,
            patch_size=14,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
        perceiver_config=dict(
            hidden_size=text_hidden,
            rms_norm_eps=1e-6,
            resampler_n_latents=image_seq_len,
            resampler_depth=3,
            resampler_n_heads=perceiver_heads,
            resampler_head_dim=max(16, text_hidden // perceiver_heads // 2),
            num_key_value_heads=max(2, perceiver_heads // 4),
        ),
        text_config=dict(
            model_type="mistral",
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=int(2.75 * text_hidden) // 8 * 8,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            num_key_value_heads=max(2, text_heads // 4),
            rms_norm_eps=1e-5,
            max_position_embeddings=4096,
            sliding_window=None,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )


def init_weights(model, std: float = 0.02) -> None:
    """Transformers-style initialisation: normal(0, std) matrices and embeddings, zero biases, unit norms.

    Perceiver latents stay unit-variance random (identical latents would stay identical under training).
    """
    import torch
    from torch import nn

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("latents"):
                nn.init.normal_(param)
            elif param.dim() >= 2:
                nn.init.normal_(param, std=std)
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(param)
            else:
                nn.init.zeros_(param)


def build_tiny_idefics2(
    output: Path,
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    image_seq_len: int = 64,
    longest_edge: int = 56,
    shortest_edge: int = 28,
    image_splitting: bool = False,
    **sizes: int,
) -> Path:
    """Write a tiny random Idefics2 checkpoint, tokenizer and processor files to `output`.

    `sizes` (text_hidden, text_layers, vision_hidden, vision_layers) scale the model up for benchmarks.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Idefics2ImageProcessor, Idefics2Processor

    from cauldron.chat import CHAT_TEMPLATE
    from training.model import Idefics2ForConditionalGeneration

    tokenizer = train_mistral_like_tokenizer(vocab_size)
    config = tiny_config(tokenizer, image_seq_len=image_seq_len, vision_image_size=longest_edge, **sizes)
    torch.manual_seed(seed)
    model = Idefics2ForConditionalGeneration(config)
    init_weights(model)
    output.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(output)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(output / "model.safetensors"), metadata={"format": "pt"})
    image_processor = Idefics2ImageProcessor(
        size={"longest_edge": longest_edge, "shortest_edge": shortest_edge}, do_image_splitting=image_splitting
    )
    processor = Idefics2Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(output)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("examples/models/tiny-idefics2"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-seq-len", type=int, default=64, help="perceiver latents = <image> tokens per image")
    args = parser.parse_args()
    path = build_tiny_idefics2(args.output, seed=args.seed, image_seq_len=args.image_seq_len)
    print(f"tiny Idefics2 checkpoint written to {path}")


if __name__ == "__main__":
    main()
