"""`train export`: merged weights that transformers loads and that compute what the trained model did."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from training.cli import main
from training.config import config_from_dict
from training.factory import new_token_ids
from training.loop import train
from training.processor import Processor

from .conftest import IMAGE_SEQ_LEN, config_values
from .test_adapters import batch_for
from .test_processor import CONVERSATIONS


@pytest.mark.parametrize("method", ["dora", "lora"])
def test_export_loads_in_transformers_with_the_same_logits(tiny_checkpoint, shard_dirs, tmp_path, tokenizer, method):
    from transformers import AutoProcessor, Idefics2ForConditionalGeneration

    config = config_from_dict(
        config_values(
            tiny_checkpoint,
            shard_dirs,
            tmp_path / "run",
            train={"steps": 3, "neftune_alpha": 0.0},
            adapters={"method": method, "train_fully": ["model.connector"]},
            optimizer={"lr": 3e-2},
        )
    )
    trained = train(config).model
    assert trained is not None
    trained.eval()
    assert main(["export", "--run", str(tmp_path / "run"), "--output", str(tmp_path / "hf")]) == 0

    exported = Idefics2ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    base = Idefics2ForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    batch = batch_for(tokenizer)
    real = batch["attention_mask"].bool()  # outputs at padding positions are unspecified
    with torch.no_grad():
        ours = trained(**batch).logits[real]
        theirs = exported(**batch).logits[real]
        before = base(**batch).logits[real]
    assert (ours - before).abs().max() > 1e-2  # training changed the model ...
    assert (ours - theirs).abs().max() < 1e-4  # ... and the export carries exactly that change
    # the new tokens' rows trained apart from the frozen matrices and were written back into them
    new_ids = new_token_ids(tokenizer)
    for name in ("lm_head.weight", "model.text_model.embed_tokens.weight"):
        exported_rows, base_rows = exported.get_parameter(name), base.get_parameter(name)
        changed = (exported_rows != base_rows).any(dim=1).nonzero().flatten().tolist()
        assert changed and set(changed) <= set(new_ids), name

    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert processor.image_seq_len == IMAGE_SEQ_LEN
    sample = CONVERSATIONS[0]
    text = processor.apply_chat_template(
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample["texts"][0]["user"]}]},
            {"role": "assistant", "content": [{"type": "text", "text": sample["texts"][0]["assistant"]}]},
        ],
        tokenize=False,
    )
    expected = processor(text=text, images=[Image.open(io.BytesIO(sample["images"][0]))])["input_ids"][0]
    ours_ids = Processor(tokenizer, IMAGE_SEQ_LEN, config.images).encode_conversation(sample).input_ids[:-1]
    assert ours_ids.tolist() == expected


def test_export_without_a_checkpoint_says_so(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["export", "--run", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
