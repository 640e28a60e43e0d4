"""Small offline assets: a BPE tokenizer and tiny causal LMs trained on English prose that ships with Python.

Python's `pydoc_data.topics` holds ~465k characters of English documentation; that is enough to train a
tokenizer and a tiny language model whose perplexity ranks clean prose below gibberish, with no download.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<pad>"]


def english_paragraphs(min_words: int = 12) -> list[str]:
    """Prose paragraphs from the Python documentation topics (code blocks and tables left out)."""
    from pydoc_data.topics import topics

    paragraphs = []
    for text in topics.values():
        for block in re.split(r"\n\s*\n", text):
            lines = [line.strip() for line in block.splitlines()]
            if any(line.startswith((">>>", "...", "|", "+-", "*")) for line in lines) or block.startswith("   "):
                continue
            paragraph = " ".join(lines)
            letters = sum(c.isalpha() or c == " " for c in paragraph)
            if len(paragraph.split()) >= min_words and letters > 0.9 * len(paragraph):
                paragraphs.append(paragraph)
    return paragraphs


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, special_tokens: list[str] | None = None):
    """A byte-level BPE tokenizer as a transformers `PreTrainedTokenizerFast` (EOS = `<|endoftext|>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(SPECIAL_TOKENS + (special_tokens or [])))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<pad>")


def tiny_falcon_config(vocab_size: int, hidden_size: int = 128, layers: int = 2, heads: int = 4, context: int = 256):
    """A Falcon-RW-shaped config (ALiBi, no multi-query, sequential attention/MLP), scaled down."""
    from transformers import FalconConfig

    return FalconConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        alibi=True,
        multi_query=False,
        new_decoder_architecture=False,
        parallel_attn=False,
        bias=True,
        max_position_embeddings=context,
        bos_token_id=0,
        eos_token_id=0,
    )


def train_tiny_lm(output: Path, steps: int = 600, seed: int = 0) -> Path:
    """Train the demo perplexity model on the prose and save model + tokenizer to `output`."""
    import torch
    from transformers import FalconForCausalLM

    torch.manual_seed(seed)
    paragraphs = english_paragraphs()
    tokenizer = train_tokenizer(paragraphs)
    config = tiny_falcon_config(len(tokenizer))
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    model = FalconForCausalLM(config)
    stream: list[int] = []
    for ids in tokenizer(paragraphs, add_special_tokens=False)["input_ids"]:
        stream.extend([tokenizer.eos_token_id, *ids])
    data = torch.tensor(stream)
    seq, batch = 128, 16
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (batch,))
        inputs = torch.stack([data[s : s + seq] for s in starts])
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss.item():.3f}")
    model.eval()
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
