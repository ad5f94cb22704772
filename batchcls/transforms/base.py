"""The Transform protocol every profile follows, and the argument checks they share."""

from __future__ import annotations

import os

import numpy as np

from batchcls.transforms.decode import read_bytes
from batchcls.transforms.normalize import apply_table, normalization_table

INTERPOLATIONS = ("bilinear", "bicubic")


class Transform:
    """One preprocessing profile: a file (or its bytes) to a uint8 CHW RGB crop.

    Subclasses set profile, out_shape (3, H, W), mean and std, and implement from_bytes and
    resolved. Normalisation is left to the consumer ((x / 255 - mean) / std, see normalize) so
    that shards stay uint8, four times smaller than float32.
    """

    profile: str
    out_shape: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # PaddleClas multiplies by float32(1/255) instead of dividing; see normalize.SCALE_RULES.
    scale_rule: str = "div255"

    def resolved(self) -> dict:
        """Every parameter that can change a pixel or the outcome, JSON-serialisable."""
        raise NotImplementedError

    def from_bytes(self, data: bytes, name: str = "<bytes>") -> np.ndarray:
        """Encoded image bytes to uint8 (3, H, W) RGB, C-contiguous; SampleError(name, ...) on failure."""
        raise NotImplementedError

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Read and transform one file: uint8 (3, H, W) RGB, C-contiguous; SampleError on failure."""
        return self.from_bytes(read_bytes(path), os.fspath(path))

    __call__ = load

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """This profile's own float32 normalisation of a uint8 [N,3,H,W] batch, bit for bit."""
        return apply_table(batch, normalization_table(self.mean, self.std, self.scale_rule))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.resolved().items() if k != "profile")
        return f"{type(self).__name__}({args})"


def check_size(name: str, value, example: int = 224) -> int:
    """A positive int (not a bool); ValueError naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer number of pixels, e.g. {example}; got {value!r}")
    return int(value)


def check_max_pixels(value) -> int | None:
    """None (no limit) or a positive int."""
    if value is None:
        return None
    return check_size("max_pixels", value, example=89478485)


def check_crop_pct(value) -> float | None:
    """None or a number in (0, 1]: the crop's share of the resize (timm's crop_pct)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"crop_pct must be a number in (0, 1], e.g. 0.875 (resize 256 for a 224 crop); got {value!r}")
    return float(value)


def check_interpolation(profile: str, value: str) -> str:
    if value not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation {value!r} is not supported by the {profile} profile; "
            f"allowed: {', '.join(map(repr, INTERPOLATIONS))}"
        )
    return value
