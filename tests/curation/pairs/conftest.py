import json

import numpy as np
import pytest
import torch

from curation.pairs.nsfw_head import HeadSpec, NsfwHead
from examples.build_demo_assets import TINY_CLIP


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
    head.norm.get_buffer("mean").copy_(torch.from_numpy(np.linspace(-0.1, 0.1, 32, dtype=np.float32)))
    head.norm.get_buffer("variance").copy_(torch.full((32,), 0.01))
    return head.eval()
