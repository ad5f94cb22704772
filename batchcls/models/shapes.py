"""Tensor shapes, parameter and MAC counts of a DLA architecture, and the check of a weights dict against them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from batchcls.errors import BatchclsError
from batchcls.models.arch import DlaArch, get_arch
from batchcls.models.walk import walk

BN_TRAINABLE = ("weight", "bias")
BN_BUFFERS = ("running_mean", "running_var")


class _ShapeVisitor:
    """Records every tensor the walk names, with its shape, in timm's state_dict order."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def input(self) -> None:
        return None

    def conv_bn(self, x, conv, bn, cin, cout, k, stride=1, groups=1):
        self.shapes[f"{conv}.weight"] = (cout, cin // groups, k, k)
        for field in BN_TRAINABLE + BN_BUFFERS:
            self.shapes[f"{bn}.{field}"] = (cout,)

    def head(self, x, fc, cin, classes):
        self.shapes[f"{fc}.weight"] = (classes, cin, 1, 1)
        self.shapes[f"{fc}.bias"] = (classes,)

    def split(self, x, parts, width):
        return [None] * parts

    def _none(self, *args):
        return None

    relu = add = concat = max_pool = avg_pool = _none


class _OpsVisitor:
    """Counts operations along the walk; values are spatial sizes (h, w).

    `macs`: convs and the classifier, output elements x (cin / groups) x k x k, as thop's
    `count_convNd` (bias-free convs; the classifier's bias is not counted either).
    `thop_ops`: what `thop.profile` sums for the timm module tree: `macs`, plus 4 per BatchNorm
    output element (thop's `calculate_norm` 2 x numel, doubled for affine), 1 per AvgPool2d output
    element and (H*W + 1) per channel of the global average pool; ReLU, MaxPool and adds count 0.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.macs = 0
        self.thop_ops = 0

    def input(self):
        return self.size

    def conv_bn(self, x, conv, bn, cin, cout, k, stride=1, groups=1):
        h, w = (_out_len(n, k, stride, k // 2) for n in x)
        self.macs += h * w * cout * (cin // groups) * k * k
        self.thop_ops += h * w * cout * (cin // groups) * k * k + 4 * h * w * cout
        return (h, w)

    def head(self, x, fc, cin, classes):
        self.macs += classes * cin
        self.thop_ops += classes * cin + (x[0] * x[1] + 1) * cin
        return (1, 1)

    def add(self, a, b):
        assert a == b, (a, b)
        return a

    def concat(self, xs, channels):
        assert len(set(xs)) == 1, xs
        return xs[0]

    def split(self, x, parts, width):
        return [x] * parts

    def max_pool(self, x, k):
        return tuple(_out_len(n, k, k, 0) for n in x)

    def avg_pool(self, x, stride, channels):
        y = tuple(_out_len(n, 3, stride, 1) for n in x)
        self.thop_ops += y[0] * y[1] * channels
        return y

    def relu(self, x):
        return x


def _out_len(n: int, k: int, stride: int, pad: int) -> int:
    # floor mode, as torch's Conv2d / MaxPool2d / AvgPool2d default.
    return (n + 2 * pad - k) // stride + 1


@lru_cache(maxsize=None)
def _shapes(arch: DlaArch) -> tuple[tuple[str, tuple[int, ...]], ...]:
    v = _ShapeVisitor()
    walk(arch, v)
    return tuple(v.shapes.items())


def param_shapes(arch: DlaArch | str) -> dict[str, tuple[int, ...]]:
    """Every tensor a weights dict must hold, keyed by timm's state_dict name, BN running stats included."""
    return dict(_shapes(get_arch(arch)))


def is_trainable(key: str) -> bool:
    """True for what timm counts as a parameter (not BatchNorm running statistics)."""
    return not key.endswith(BN_BUFFERS)


def count_params(arch: DlaArch | str) -> int:
    """Trainable parameters as timm counts them (sum of p.numel()): conv weights, BN weight and bias,
    fc weight and bias, before BatchNorm folding."""
    return sum(int(np.prod(s)) for k, s in param_shapes(arch).items() if is_trainable(k))


def check_input_size(input_size: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) of a side or (h, w) pair; each must be a positive multiple of 32.

    Five stride-2 stages each add a pooled shortcut to a strided conv: the two only agree on even sizes.
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(int(n) != n or n <= 0 or n % 32 for n in size):
        raise BatchclsError(f"input size {input_size}: DLA needs positive multiples of 32, e.g. 224")
    return int(size[0]), int(size[1])


def _count_ops(arch: DlaArch | str, input_size: int | Sequence[int]) -> _OpsVisitor:
    v = _OpsVisitor(check_input_size(input_size))
    walk(get_arch(arch), v)
    return v


def count_macs(arch: DlaArch | str, input_size: int | Sequence[int] = 224) -> int:
    """Multiply-accumulates of one image of `input_size` (side, or (h, w)) in the convs and fc, thop-style.

    dla34 at 224: 3,060,043,776 (3.06 G).
    """
    return _count_ops(arch, input_size).macs


def count_thop_ops(arch: DlaArch | str, input_size: int | Sequence[int] = 224) -> int:
    """The total `thop.profile` reports for timm's module on one image: MACs plus BatchNorm and pooling ops."""
    return _count_ops(arch, input_size).thop_ops


def table_flops_g(arch: DlaArch | str, input_size: int | Sequence[int] = 224) -> float:
    """The published table's FLOPs(G) column, reproduced: thop's total x 2 / 0.9e9.

    Equals the timm rows of dla_zoo.csv to the table's 3 decimals for all 12 architectures. True
    FLOPs are about 2 x `count_macs`; the column is 12-16 % higher (thop's BN/pool ops and the 1/0.9).
    """
    return count_thop_ops(arch, input_size) * 2 / 0.9e9


def check_weights(arch: DlaArch | str, weights: Mapping[str, Any], source: str = "weights") -> None:
    """Raise BatchclsError naming the first missing or misshaped tensor, with expected and actual shapes."""
    arch = get_arch(arch)
    expected = param_shapes(arch)
    missing = [k for k in expected if k not in weights]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BatchclsError(
            f"{source}: missing tensor '{missing[0]}' (expected shape {expected[missing[0]]}){more} "
            f"for {arch.name}; pass a checkpoint of the {arch.name} architecture"
        )
    for key, shape in expected.items():
        got = tuple(np.shape(weights[key]))
        if got != shape:
            raise BatchclsError(
                f"{source}: tensor '{key}' has shape {got}, expected {shape} for {arch.name}; "
                f"pass a checkpoint of the {arch.name} architecture"
            )
