import pickle

import numpy as np
import pytest
import torch
from torch import nn

from curation.pairs.nsfw_convert import convert, head_from_keras_layers, main
from curation.pairs.nsfw_head import HeadSpec, NsfwHead, load_head, save_head

L14_DIMS = (768, 64, 512, 256, 1)  # the released AutoKeras ViT-L/14 head


def unit_rows(n, dim, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def keras_l14_layers(seed=0):
    """Weights in the released Keras layout: Normalization, then Dense kernels of shape (in, out)."""
    rng = np.random.default_rng(seed)
    layers: list[tuple[str, dict[str, np.ndarray]]] = [("input_1", {}), ("cast_to_float32", {})]
    layers.append(
        ("normalization", {
            "mean": rng.normal(0, 0.02, L14_DIMS[0]).astype(np.float32),
            "variance": rng.uniform(1e-4, 1e-3, L14_DIMS[0]).astype(np.float32),
            "count": np.array(12345, dtype=np.int64),
        })
    )  # fmt: skip
    for i, (fan_in, fan_out) in enumerate(zip(L14_DIMS[:-1], L14_DIMS[1:])):
        name = "dense" if i == 0 else f"dense_{i}"
        kernel = rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out)).astype(np.float32)
        layers.append((name, {"kernel": kernel, "bias": rng.normal(0, 0.1, fan_out).astype(np.float32)}))
        if i < len(L14_DIMS) - 2:
            layers.append((f"re_lu_{i}", {}))
    layers.append(("classification_head_1", {}))
    return layers


def keras_reference(layers, x):
    """Independent numpy forward pass of the released Keras model."""
    weights = dict(layers)
    x = (x - weights["normalization"]["mean"]) / np.maximum(np.sqrt(weights["normalization"]["variance"]), 1e-7)
    dense = [w for name, w in layers if name.startswith("dense")]
    for i, w in enumerate(dense):
        x = x @ w["kernel"] + w["bias"]
        x = np.maximum(x, 0) if i < len(dense) - 1 else 1 / (1 + np.exp(-x))
    return x[:, 0]


class H14Layout(nn.Module):
    """The released ViT-H/14 head's module layout (`layers` is an nn.Sequential)."""

    def __init__(self):
        super().__init__()
        dims = [1024, 1024, 2048, 1024, 256, 128]
        modules = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            modules += [nn.Linear(fan_in, fan_out), nn.ReLU(), nn.Dropout(0.2)]
        self.layers = nn.Sequential(*modules, nn.Linear(128, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def torch_reference(state, x):
    """Independent numpy forward pass of the H/14 layout: ReLU after the first five Linear layers only."""
    indices = sorted({int(k.split(".")[1]) for k in state})
    for position, i in enumerate(indices):
        x = x @ state[f"layers.{i}.weight"].numpy().T + state[f"layers.{i}.bias"].numpy()
        if position < 5:
            x = np.maximum(x, 0)
    return x[:, 0]


def test_keras_layout_round_trip_matches_a_numpy_reference(tmp_path):
    layers = keras_l14_layers()
    head = head_from_keras_layers(layers)
    assert head.spec == HeadSpec(L14_DIMS, ("relu", "relu", "relu", "sigmoid"), input_norm=True)
    save_head(head, tmp_path / "l14.safetensors")
    loaded = load_head(tmp_path / "l14.safetensors")
    x = unit_rows(16, 768)
    with torch.no_grad():
        ours = loaded(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, keras_reference(layers, x), rtol=1e-5, atol=1e-6)
    assert ours.min() >= 0 and ours.max() <= 1


def test_keras_h5_file_converts(tmp_path):
    h5py = pytest.importorskip("h5py")
    layers = keras_l14_layers(seed=1)
    path = tmp_path / "l14_nsfw.h5"
    with h5py.File(path, "w") as f:  # Keras 2 `save_weights` layout
        f.attrs["layer_names"] = [name.encode() for name, _ in layers]
        for name, weights in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w in weights]
            for w, value in weights.items():
                group[f"{name}/{w}:0"] = value
    head = convert(path, tmp_path / "l14.safetensors")
    x = unit_rows(8, 768, seed=2)
    with torch.no_grad():
        ours = load_head(tmp_path / "l14.safetensors")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, keras_reference(layers, x), rtol=1e-5, atol=1e-6)
    assert head.spec.input_norm


def test_torch_state_dict_round_trip_matches_the_module_and_a_numpy_reference(tmp_path):
    torch.manual_seed(0)
    module = H14Layout().eval()
    state = module.state_dict()
    src = tmp_path / "h14_nsfw.pth"
    torch.save(state, src)
    main([str(src), str(tmp_path / "h14.safetensors")])
    loaded = load_head(tmp_path / "h14.safetensors")
    assert loaded.spec.dims == (1024, 1024, 2048, 1024, 256, 128, 16, 1)
    assert loaded.spec.activations == ("relu",) * 5 + ("none", "none")
    x = unit_rows(8, 1024)
    with torch.no_grad():
        ours = loaded(torch.from_numpy(x)).numpy()
        released = module(torch.from_numpy(x))[:, 0].numpy()
    np.testing.assert_allclose(ours, torch_reference(state, x), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours, released, rtol=1e-4, atol=1e-6)


class NotWeights:
    """Any class: unpickling it would run arbitrary code paths, so weights_only must refuse it."""


def test_torch_conversion_refuses_pickled_objects(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({"layers.0.weight": NotWeights()}, src)
    with pytest.raises(pickle.UnpicklingError):
        convert(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_load_head_needs_our_metadata(tmp_path):
    from safetensors.torch import save_file

    save_file({"layers.0.weight": torch.zeros(1, 4)}, str(tmp_path / "raw.safetensors"))
    with pytest.raises(ValueError, match="nsfw_convert"):
        load_head(tmp_path / "raw.safetensors")


@pytest.mark.parametrize(("dims", "activations"), [((4, 2), ("relu",)), ((4, 1), ("relu", "none")), ((4, 1), ("tanh",))])
def test_head_spec_rejects_inconsistent_layouts(dims, activations):
    with pytest.raises(ValueError):
        HeadSpec(dims, activations)


def test_keras_layers_with_unsupported_weights_are_refused():
    layers = [("batch_normalization", {"gamma": np.ones(4), "beta": np.zeros(4)})]
    with pytest.raises(ValueError, match="unsupported"):
        head_from_keras_layers(layers)


def test_head_without_normalization_round_trips(tmp_path):
    head = NsfwHead(HeadSpec((8, 4, 1), ("relu", "sigmoid")))
    save_head(head, tmp_path / "h.safetensors")
    x = torch.from_numpy(unit_rows(3, 8))
    with torch.no_grad():
        torch.testing.assert_close(load_head(tmp_path / "h.safetensors")(x), head(x))
