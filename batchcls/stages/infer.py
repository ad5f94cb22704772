"""Infer stage: InferWorker opens a backend session in __init__; __call__(prepared shard) -> small results."""

from __future__ import annotations

import time

import numpy as np

from ..backends import create_backend
from ..errors import BatchclsError
from ..metrics import mark_nonfinite, subset_topk
from ..transforms.normalize import apply_table, normalization_table


class InferWorker:
    """One model session on one device. Takes uint8 crops, normalises to float32 here (uint8 is 4x
    less to move) with the profile's own rule (`scale_rule`: 'div255', or PaddleClas's 'mul_inv255'),
    runs batches of `batch_size`, and returns top-k (and optionally float16 logits)."""

    def __init__(self, model: str | bytes, backend: str, backend_options: dict, mean, std,
                 batch_size: int, topk: int, save_logits: bool, scale_rule: str = "div255",
                 class_subset: tuple | None = None):
        self.backend = create_backend(backend, model, **backend_options)
        # One lookup table per channel, built once: bit-identical to the profile's arithmetic, 2-3x faster.
        self.table = normalization_table(tuple(mean), tuple(std), scale_rule)
        # A backend that normalises itself (in the graph, on the device) gets the uint8 crops.
        self.host_normalize = getattr(self.backend, "input_dtype", "float32") != "uint8"
        self.batch_size = batch_size
        self.k = topk
        self.save_logits = save_logits
        self._last_end: float | None = None
        # dataset.class_subset: ranks among these classes only; ids stay the model's class indices.
        self.class_subset = None if class_subset is None else np.asarray(class_subset, dtype=np.int64)
        self.warmup_s: float | None = None

    def describe(self) -> dict:
        import os
        import socket

        return {**self.backend.describe(), "warmup_s": self.warmup_s, "host": socket.gethostname(), "pid": os.getpid(),
                "nice": os.nice(0) if hasattr(os, "nice") else None}

    def check_input(self, shape: tuple) -> None:
        """Fail early, with the field to change, when the crops do not fit the model's input."""
        want = self.backend.input_shape
        if any(w is not None and w != g for w, g in zip(want, shape)):
            raise BatchclsError(f"preprocess: crops are {'x'.join(map(str, shape))} but the model expects "
                                f"{'x'.join('?' if w is None else str(w) for w in want)}; "
                                "set preprocess.input_size to the model's input size")
        if getattr(self.backend, "wants_warmup", False):
            self.warm_up(shape)

    def warm_up(self, shape: tuple) -> float:
        """One run at the full batch before the first shard: cuDNN's algorithm search, CUDA graph capture
        and TensorRT's engine load happen here, not in the first shard's time. Returns its seconds."""
        t = time.perf_counter()
        n = self.backend.batch_size or self.batch_size
        dtype = np.float32 if self.host_normalize else np.uint8
        self._run(np.zeros((n, *shape), dtype=dtype))
        self.warmup_s = time.perf_counter() - t
        return self.warmup_s

    def __call__(self, prepared: dict) -> dict:
        start = time.perf_counter()
        images = prepared["images"]  # uint8 [n, 3, H, W], or RaggedImages at full resolution
        n = len(images)
        logits_out = []
        run_s = 0.0
        for b in range(0, n, self.batch_size):
            batch = images[b:b + self.batch_size]
            if self.host_normalize:
                batch = apply_table(batch, self.table)
            t = time.perf_counter()
            logits_out.append(self._run(batch))
            run_s += time.perf_counter() - t
        logits = np.concatenate(logits_out) if logits_out else np.zeros((0, 1000), np.float32)
        # An image with a NaN/Inf logit gets an error, never a ranking: rows stay aligned with the shard.
        finite = np.isfinite(logits).all(axis=1)
        errors = mark_nonfinite(list(prepared["errors"]), finite)
        logits = logits[finite]
        if self.class_subset is not None and logits.shape[0] and self.class_subset[-1] >= logits.shape[1]:
            raise BatchclsError(f"dataset.class_subset: names class {int(self.class_subset[-1])} but the model "
                                f"has {logits.shape[1]} outputs; use a subset of the model's classes")
        kind = getattr(self.backend, "outputs", "logits")  # a model ending in softmax returns "probs"
        ids, probs = subset_topk(logits, self.k, self.class_subset, "probs" if kind == "probs" else "logits")
        end = time.perf_counter()
        idle = 0.0 if self._last_end is None else max(0.0, start - self._last_end)
        self._last_end = end
        result = {"indices": prepared["indices"], "errors": errors, "topk_ids": ids, "topk_probs": probs,
                  "run_s": run_s, "call_s": end - start, "idle_s": idle, "batches": -(-n // self.batch_size),
                  "images": n, "nonfinite": int((~finite).sum()),
                  "outputs_note": getattr(self.backend, "outputs_note", None)}
        if self.save_logits:
            result["logits"] = logits.astype(np.float16)
        return result

    def _run(self, batch: np.ndarray) -> np.ndarray:
        fixed = self.backend.batch_size
        if fixed is None or len(batch) == fixed:
            return self.backend.run(batch)
        if len(batch) > fixed:
            raise BatchclsError(f"inference.batch_size: the model has a fixed batch of {fixed}; "
                                f"set inference.batch_size to {fixed}")
        # A fixed-batch model (as compiled for accelerators) gets the short last batch padded;
        # the padding's outputs are dropped.
        if isinstance(batch, list):  # full-resolution images: the last one again
            return self.backend.run(batch + [batch[-1]] * (fixed - len(batch)))[: len(batch)]
        pad = np.zeros((fixed - batch.shape[0], *batch.shape[1:]), dtype=batch.dtype)
        return self.backend.run(np.concatenate([batch, pad]))[: batch.shape[0]]
