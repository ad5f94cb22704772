"""Seeded random DLA weights with BatchNorm running statistics recalibrated on seeded noise, numpy only."""

from __future__ import annotations

import math
import zlib

import numpy as np

from batchcls.models.arch import BN_EPS, DlaArch, get_arch
from batchcls.models.walk import walk

# Calibration images: at 128 (a multiple of 32, as DLA needs) level5 maps are 4x4 instead of 224's 7x7,
# enough positions for per-channel statistics at a third of the cost; two images double them.
CALIB_SIZE = 128
CALIB_BATCH = 2


def tensor_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one tensor (or input batch): its values depend only on (seed, key)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _conv(x: np.ndarray, w: np.ndarray, stride: int, groups: int) -> np.ndarray:
    """Convolution of a (C, N, H, W) float64 map, padding k // 2; returns (cout, N, ho, wo)."""
    cin, n, h, wd = x.shape
    cout, cg, k, _ = w.shape
    p = k // 2
    ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
    if k == 1 and stride == 1:
        cols = x.reshape(groups, cg, -1)
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        # Patches laid out (cin, k * k, n, ho, wo): each kernel offset is one strided slice copy, and
        # the leading cin axis splits into groups for free.
        cols = np.empty((cin, k * k, n, ho, wo))
        for i in range(k):
            for j in range(k):
                cols[:, i * k + j] = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
        cols = cols.reshape(groups, cg * k * k, -1)
    y = np.matmul(w.astype(np.float64).reshape(groups, cout // groups, cg * k * k), cols)
    return y.reshape(cout, n, ho, wo)


class _CalibVisitor:
    """Draws each tensor in walk order and runs the forward that calibrates the BatchNorms."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.weights: dict[str, np.ndarray] = {}

    def _normal(self, key: str, shape: tuple[int, ...], std: float) -> np.ndarray:
        a = tensor_rng(self.seed, key).standard_normal(shape, dtype=np.float32) * np.float32(std)
        self.weights[key] = a
        return a

    def input(self):
        shape = (CALIB_BATCH, 3, CALIB_SIZE, CALIB_SIZE)
        # Maps are kept channel-first, (C, N, H, W): convs become plain (grouped) matmuls.
        return tensor_rng(self.seed, "calibration_input").standard_normal(shape).transpose(1, 0, 2, 3).copy()

    def conv_bn(self, x, conv, bn, cin, cout, k, stride=1, groups=1):
        # timm's init: He normal over fan-out (k * k * cout), groups ignored.
        w = self._normal(f"{conv}.weight", (cout, cin // groups, k, k), math.sqrt(2.0 / (k * k * cout)))
        y = _conv(x, w, stride, groups)
        mean, var = y.mean(axis=(1, 2, 3)), y.var(axis=(1, 2, 3))
        rng = tensor_rng(self.seed, bn)
        # Not 1 and 0: a parity test must see BatchNorm folding get the affine part right too.
        gamma = rng.uniform(0.75, 1.25, cout).astype(np.float32)
        beta = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        stats = mean.astype(np.float32), var.astype(np.float32)
        self.weights.update({
            f"{bn}.weight": gamma, f"{bn}.bias": beta,
            f"{bn}.running_mean": stats[0], f"{bn}.running_var": stats[1],
        })
        # Normalise with the stored float32 stats, as inference will.
        scale = gamma.astype(np.float64) / np.sqrt(stats[1].astype(np.float64) + BN_EPS)
        return (y - stats[0][:, None, None, None]) * scale[:, None, None, None] + beta[:, None, None, None]

    def relu(self, x):
        return np.maximum(x, 0.0)

    def add(self, a, b):
        return a + b

    def concat(self, xs, channels):
        return np.concatenate(xs, axis=0)

    def split(self, x, parts, width):
        return [x[i * width:(i + 1) * width] for i in range(parts)]

    def max_pool(self, x, k):
        c, n, h, w = x.shape
        return x[:, :, : h // k * k, : w // k * k].reshape(c, n, h // k, k, w // k, k).max(axis=(3, 5))

    def avg_pool(self, x, stride, channels):
        # Padded zeros count in the mean (count_include_pad), as torch's AvgPool2d default.
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[:, :, ::stride, ::stride]
        return win.mean(axis=(4, 5))

    def head(self, x, fc, cin, classes):
        w = self._normal(f"{fc}.weight", (classes, cin, 1, 1), math.sqrt(1.0 / cin))
        b = self._normal(f"{fc}.bias", (classes,), 0.1)
        return (w.reshape(classes, cin).astype(np.float64) @ x.mean(axis=(2, 3))).T + b


def random_weights(arch: DlaArch | str, seed: int = 0) -> dict[str, np.ndarray]:
    """All tensors of `arch` (timm names, float32, BN running stats included) drawn from `seed` (>= 0).

    Conv weights are He-normal as timm initialises them, BN weight in [0.75, 1.25], bias ~ N(0, 0.1),
    fc weight ~ N(0, 1/C), bias ~ N(0, 0.1); each tensor is drawn from its own (seed, name).
    With timm's init and default running stats (mean 0, var 1) a deep DLA's activations grow at every
    aggregation and residual add (dla169 logits reach 1e13). So a float64 numpy forward runs on
    `CALIB_BATCH` seeded N(0, 1) images of `CALIB_SIZE` pixels with BatchNorm in training mode: each BN's
    running stats become the batch statistics of its input (a recalibration pass with momentum 1), and
    logits stay of order 1 (max |logit| 1.8-6.9 at 224 for the 12 archs). Float64 keeps the float32
    results identical across BLAS builds. Takes 0.1-1.5 s per architecture on 2 cores.
    """
    v = _CalibVisitor(int(seed))
    walk(get_arch(arch), v)
    return v.weights
