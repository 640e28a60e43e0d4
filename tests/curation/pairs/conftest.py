import json

import numpy as np
import pytest
import torch

from curation.pairs.nsfw_head import HeadSpec, NsfwHead

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory):
    """Registers a tiny random open_clip architecture and returns its name."""
    import open_clip

    path = tmp_path_factory.mktemp("clip") / "potion-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return path.stem


@pytest.fixture
def tiny_head():
    torch.manual_seed(0)
    head = NsfwHead(HeadSpec((32, 16, 1), ("relu", "sigmoid"), input_norm=True))
    head.norm.mean.copy_(torch.from_numpy(np.linspace(-0.1, 0.1, 32, dtype=np.float32)))
    head.norm.variance.copy_(torch.full((32,), 0.01))
    return head.eval()
