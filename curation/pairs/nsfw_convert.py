"""Convert the released LAION NSFW heads to our safetensors format (`nsfw_head.save_head`).

Sources:
- Keras HDF5 (read with h5py, no TensorFlow): a Keras 2 `model.save("x.h5")` or `model.save_weights("x.h5")`
  file. The ViT-L/14 head is released as an AutoKeras SavedModel folder (`clip_autokeras_binary_nsfw.zip`);
  export it to HDF5 once where TensorFlow and AutoKeras are installed:
      import autokeras as ak, tensorflow as tf
      tf.keras.models.load_model("clip_autokeras_binary_nsfw", custom_objects=ak.CUSTOM_OBJECTS)\
          .save_weights("l14_nsfw.h5")
  Layers are read in model order: a Normalization layer (mean, variance, count) and Dense layers (kernel,
  bias); weightless layers (input, ReLU, dropout, the sigmoid head) carry nothing to convert. ReLU is
  applied between Dense layers and `output_activation` (sigmoid) after the last, as in the released model.
- PyTorch state dict of an `nn.Sequential` of Linear layers (`layers.<i>.weight`/`.bias`), such as the
  ViT-H/14 `h14_nsfw.pth`, loaded with `torch.load(weights_only=True)` (or a safetensors state dict). A gap
  in the Sequential indices between two Linear layers holds ReLU (+Dropout), no gap means no activation;
  `output_activation` (none for the H/14 head) follows the last layer.

Command line: `python -m curation.pairs.nsfw_convert SRC DST.safetensors [--output-activation ...]`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from curation.errors import UserError
from curation.pairs.nsfw_head import Activation, HeadSpec, NsfwHead, save_head

KerasLayer = tuple[str, dict[str, np.ndarray]]  # (layer name, {"kernel"/"bias"/"mean"/...: array})
_TORCH_KEY = re.compile(r"^(?P<prefix>.*?)(?P<index>\d+)\.(?P<kind>weight|bias)$")
KERAS_SUFFIXES = (".h5", ".hdf5")


def _chain_spec(shapes: list[tuple[int, int]], activations: list[Activation], input_norm: bool) -> HeadSpec:
    dims = [shapes[0][0]]
    for fan_in, fan_out in shapes:
        if fan_in != dims[-1]:
            raise UserError(f"layer expects {fan_in} inputs but the previous layer gives {dims[-1]}")
        dims.append(fan_out)
    return HeadSpec(tuple(dims), tuple(activations), input_norm)


def _kernel_shape(kernel: np.ndarray) -> tuple[int, int]:
    """(inputs, outputs) of a Dense kernel."""
    if kernel.ndim != 2:
        raise UserError(f"a Dense kernel must be 2-D, got shape {kernel.shape}")
    return kernel.shape[0], kernel.shape[1]


def head_from_keras_layers(layers: Sequence[KerasLayer], output_activation: Activation = "sigmoid") -> NsfwHead:
    """A head from Keras layer weights in model order (Keras layout: Dense kernel is (in, out))."""
    norm: dict[str, np.ndarray] | None = None
    dense: list[dict[str, np.ndarray]] = []
    for name, weights in layers:
        if not weights:
            continue
        if set(weights) >= {"mean", "variance"} and set(weights) <= {"mean", "variance", "count"}:
            if norm is not None or dense:
                raise UserError(f"normalization layer {name!r} is not the first layer with weights")
            norm = weights
        elif set(weights) == {"kernel", "bias"}:
            dense.append(weights)
        else:
            raise UserError(f"unsupported Keras layer {name!r} with weights {sorted(weights)}")
    if not dense:
        raise UserError("no Dense layers found")
    shapes = [_kernel_shape(w["kernel"]) for w in dense]
    hidden: list[Activation] = ["relu"] * (len(dense) - 1)
    activations = hidden + [output_activation]
    head = NsfwHead(_chain_spec(shapes, activations, norm is not None))
    state = {}
    if norm is not None:
        state["norm.mean"] = torch.from_numpy(np.asarray(norm["mean"], np.float32).reshape(-1))
        state["norm.variance"] = torch.from_numpy(np.asarray(norm["variance"], np.float32).reshape(-1))
    for i, weights in enumerate(dense):
        state[f"layers.{i}.weight"] = torch.from_numpy(np.asarray(weights["kernel"], np.float32).T.copy())
        state[f"layers.{i}.bias"] = torch.from_numpy(np.asarray(weights["bias"], np.float32))
    head.load_state_dict(state, strict=True)
    return head.eval()


def _decode(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name


def read_keras_h5_layers(path: Path) -> list[KerasLayer]:
    """Layer weights of a Keras 2 HDF5 file, in model order (needs h5py)."""
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras .h5 heads needs h5py (pip install h5py)") from None
    layers: list[KerasLayer] = []
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise UserError(f"{path} is not a Keras 2 HDF5 weights file (no layer_names attribute)")
        for layer_name in map(_decode, root.attrs["layer_names"]):
            group = root[layer_name]
            weights = {}
            for weight_name in map(_decode, group.attrs.get("weight_names", [])):
                short = weight_name.rsplit("/", 1)[-1].split(":")[0]
                weights[short] = np.asarray(group[weight_name])
            layers.append((layer_name, weights))
    return layers


def head_from_torch_state_dict(
    state: dict[str, torch.Tensor], output_activation: Activation = "none", hidden_activation: Activation = "relu"
) -> NsfwHead:
    """A head from the state dict of an `nn.Sequential` of Linear layers (see the module docstring)."""
    found: dict[int, dict[str, torch.Tensor]] = {}
    prefixes = set()
    for key, tensor in state.items():
        match = _TORCH_KEY.match(key)
        if match is None:
            raise UserError(f"unexpected key {key!r}: expected <prefix><index>.weight/.bias")
        prefixes.add(match["prefix"])
        found.setdefault(int(match["index"]), {})[match["kind"]] = tensor
    if len(prefixes) != 1:
        raise UserError(f"expected one Sequential, found prefixes {sorted(prefixes)}")
    indices = sorted(found)
    for index in indices:
        if set(found[index]) != {"weight", "bias"} or found[index]["weight"].dim() != 2:
            raise UserError(f"layer {index} is not a Linear layer with a bias")
    shapes = [(found[i]["weight"].shape[1], found[i]["weight"].shape[0]) for i in indices]
    activations: list[Activation] = [hidden_activation if nxt > cur + 1 else "none" for cur, nxt in pairwise(indices)] + [output_activation]
    head = NsfwHead(_chain_spec(shapes, activations, input_norm=False))
    converted = {}
    for position, index in enumerate(indices):
        converted[f"layers.{position}.weight"] = found[index]["weight"].float()
        converted[f"layers.{position}.bias"] = found[index]["bias"].float()
    head.load_state_dict(converted, strict=True)
    return head.eval()


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def convert(src: Path, dst: Path, output_activation: Activation | None = None) -> NsfwHead:
    """Convert a released head (Keras .h5 or torch state dict) to `dst` (safetensors); returns the head."""
    if src.suffix in KERAS_SUFFIXES:
        head = head_from_keras_layers(read_keras_h5_layers(src), output_activation or "sigmoid")
    else:
        head = head_from_torch_state_dict(load_torch_state_dict(src), output_activation or "none")
    save_head(head, dst)
    return head


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path, help="released head: Keras .h5/.hdf5, or a torch state dict file")
    parser.add_argument("dst", type=Path, help="output .safetensors")
    parser.add_argument(
        "--output-activation",
        choices=["sigmoid", "none"],
        help="after the last layer (default: sigmoid for Keras heads, none for torch heads)",
    )
    args = parser.parse_args(argv)
    head = convert(args.src, args.dst, args.output_activation)
    print(f"wrote {args.dst}: dims {head.spec.dims}, activations {head.spec.activations}")


if __name__ == "__main__":
    main()
