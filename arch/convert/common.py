"""Shared pieces of the weight converters: reading checkpoints, tensors to numpy."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np


class CheckpointFormatError(ValueError):
    """A checkpoint file that is missing, unreadable, or not the expected model."""


def to_numpy(tensor) -> np.ndarray:
    if hasattr(tensor, "detach"):  # torch.Tensor, without importing torch here
        return tensor.detach().float().cpu().numpy()
    return np.asarray(tensor, dtype=np.float32)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A PyTorch ``.pth``/``.bin`` or a ``.safetensors`` file as ``{name: ndarray}``."""
    if not os.path.isfile(path):
        raise CheckpointFormatError(
            f"checkpoint {path!r} not found: pass the path of a .pth, .bin or .safetensors file"
        )
    try:
        if path.endswith(".safetensors"):
            return _read_safetensors(path)
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError as error:
        raise CheckpointFormatError(
            f"reading {path!r} needs {error.name}: pip install -r requirements-dev.txt"
        ) from None
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise CheckpointFormatError(
            f"checkpoint {path!r} is corrupt or not a PyTorch state "
            f"dict ({type(error).__name__}: {error})"
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(
            f"checkpoint {path!r} holds a {type(state).__name__}, not a state dict"
        )
    return {k: to_numpy(v) for k, v in state.items()}


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Through torch when it is installed: numpy has no bfloat16, the dtype many released
    checkpoints are saved in."""
    try:
        from safetensors.torch import load_file
    except ImportError:  # no torch: float16/32 files still read
        from safetensors.numpy import load_file

        return {k: v.astype(np.float32) for k, v in load_file(path).items()}
    return {k: to_numpy(v) for k, v in load_file(path).items()}


def take(state: Mapping, name: str) -> np.ndarray:
    if name not in state:
        sample = ", ".join(sorted(state)[:6])
        raise CheckpointFormatError(
            f"tensor {name!r} missing from the state dict (it has "
            f"{len(state)} tensors, e.g. {sample})"
        )
    return to_numpy(state[name])


def linear(state: Mapping, name: str) -> dict[str, np.ndarray]:
    """A torch Linear ``[out, in]`` (+ bias) as a Flax Dense ``{"kernel": [in, out]}``."""
    out = {"kernel": take(state, name + ".weight").T}
    if name + ".bias" in state:
        out["bias"] = take(state, name + ".bias")
    return out


def norm(state: Mapping, name: str) -> dict[str, np.ndarray]:
    """LayerNorm (weight, bias) or RMSNorm (weight) as Flax ``{"scale", "bias"}``."""
    out = {"scale": take(state, name + ".weight")}
    if name + ".bias" in state:
        out["bias"] = take(state, name + ".bias")
    return out
