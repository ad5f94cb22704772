"""The backend protocol: open a model on one device, run a float32 NCHW batch, return logits."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """One model session on one device. `batch_size` is the model's fixed batch, or None when dynamic
    (a fixed-batch model gets its last, short batch padded and the padding's outputs dropped)."""

    name: str
    batch_size: int | None
    input_shape: tuple  # (C, H, W) the model expects; entries may be None when dynamic
    # "float32": the worker normalises the uint8 crops with the profile's table before `run`;
    # "uint8": `run` takes the uint8 crops as they are and normalises them itself (in the graph,
    # on the device).
    input_dtype: str
    # True: the worker runs one full batch before the first shard (algorithm search, graph capture).
    wants_warmup: bool

    def run(self, batch: np.ndarray) -> np.ndarray:
        """[N, C, H, W] input (float32 normalised, or uint8 crops when `input_dtype` is "uint8") ->
        float32 [N, num_classes] logits."""
        ...

    def describe(self) -> dict:
        """What runs where: runtime version, providers, threads; for the report."""
        ...
