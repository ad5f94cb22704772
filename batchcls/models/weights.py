"""Weights for a DLA architecture from a spec: a timm `.safetensors`, a ucbdrive/timm `.pth`, or `random:SEED`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from batchcls.errors import BackendUnavailable, BatchclsError
from batchcls.models.arch import DlaArch, get_arch
from batchcls.models.randinit import random_weights
from batchcls.models.shapes import check_weights, param_shapes
from batchcls.models.walk import ucbdrive_unused_projections

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"
SAFETENSORS_EXTS = (".safetensors",)
TORCH_EXTS = (".pth", ".pt", ".pth.tar", ".bin")
SPEC_FORMS = "a .safetensors file, a .pth file (needs torch) or random:SEED (e.g. random:0)"
# Wrappers training scripts put around a state dict, tried in this order.
CHECKPOINT_KEYS = ("state_dict_ema", "state_dict", "model")


@dataclass(frozen=True)
class LoadedWeights:
    """Tensors keyed by timm's names (float32 numpy), and the checkpoint keys that were not used."""

    tensors: dict[str, np.ndarray]
    ignored: tuple[str, ...]
    source: str


def load_weights(spec: str | os.PathLike, arch: DlaArch | str) -> dict[str, np.ndarray]:
    """Every tensor `arch` needs, keyed as timm's state_dict, float32; see `read_weights` for `spec`."""
    return read_weights(spec, arch).tensors


def read_weights(spec: str | os.PathLike, arch: DlaArch | str) -> LoadedWeights:
    """Read `spec` for `arch`: a `.safetensors` file with timm key names (numpy only), a `.pth`/`.pt`
    state dict from timm or ucbdrive/dla (needs torch), or `random:SEED` (seeded, see randinit).

    Unused checkpoint tensors (ucbdrive's never-used projections, `num_batches_tracked`, a DataParallel
    `module.` prefix is stripped first) are left out and listed in `ignored`. Raises BatchclsError for
    an unreadable file or a missing or misshaped tensor, naming it with both shapes.
    """
    arch = get_arch(arch)
    text = os.fspath(spec)
    if text.startswith(RANDOM_PREFIX):
        return LoadedWeights(random_weights(arch, parse_seed(text)), (), text)
    if not os.path.isfile(text):
        raise BatchclsError(f"weights file not found: {text}; pass {SPEC_FORMS}")
    lower = text.lower()
    if lower.endswith(SAFETENSORS_EXTS):
        raw = _read_safetensors(text)
    elif lower.endswith(TORCH_EXTS):
        raw = _read_torch(text)
    else:
        raise BatchclsError(f"{text}: unknown weights format; pass {SPEC_FORMS}")
    return _select(arch, raw, text)


def parse_seed(spec: str) -> int:
    """The SEED of a `random:SEED` spec, a non-negative integer."""
    value = spec[len(RANDOM_PREFIX):]
    if not value.isdigit():
        raise BatchclsError(f"'{spec}': SEED must be a non-negative integer, e.g. random:0")
    return int(value)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        # Registers numpy's bfloat16 (hub checkpoints use it); onnx depends on ml_dtypes anyway.
        import ml_dtypes  # noqa: F401
    except ImportError:
        pass
    try:
        return load_file(path)
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise BatchclsError(
            f"{path}: not a readable float safetensors file ({e}); save it with float32 tensors"
        ) from e


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch  # deferred: torch is only needed for .pth checkpoints
    except ImportError as e:
        raise BackendUnavailable(
            f"{path}: reading .pth weights needs torch: pip install torch "
            "(or convert the checkpoint to .safetensors)"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same to the user
        raise BatchclsError(f"{path}: cannot read the torch checkpoint ({e})") from e
    state = _unwrap_checkpoint(obj, path)
    return {k: v.detach().float().numpy() for k, v in state.items() if torch.is_tensor(v)}


def _unwrap_checkpoint(obj: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise BatchclsError(f"{path}: expected a state dict, found {type(obj).__name__}; save model.state_dict()")
    for key in CHECKPOINT_KEYS:
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    return obj


def _select(arch: DlaArch, raw: Mapping[str, np.ndarray], source: str) -> LoadedWeights:
    expected = param_shapes(arch)
    unused = ucbdrive_unused_projections(arch)
    tensors: dict[str, np.ndarray] = {}
    ignored: list[str] = []
    for key, value in raw.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name in expected:
            tensors[name] = _as_float32(value, name, source)
        elif not name.endswith(".num_batches_tracked"):
            ignored.append(key)
    check_weights(arch, tensors, source)
    if ignored:
        known = sum(1 for k in ignored if k.removeprefix("module.") in unused)
        log.info(
            "%s: ignored %d tensors not used by %s (%d are ucbdrive's unused tree projections), e.g. %s",
            source, len(ignored), arch.name, known, ignored[0],
        )
    return LoadedWeights(tensors, tuple(ignored), source)


def _as_float32(value: Any, name: str, source: str) -> np.ndarray:
    a = np.asarray(value)
    if not (np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16"):
        raise BatchclsError(f"{source}: tensor '{name}' has dtype {a.dtype}, expected a float type")
    return a.astype(np.float32, copy=False)
