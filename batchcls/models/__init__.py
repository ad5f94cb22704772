"""DLA models as data: timm's 12 architectures built as ONNX graphs from numpy weights (no torch)."""

from batchcls.models.arch import DlaArch, get_arch, list_archs
from batchcls.models.build import BUILDER_VERSION, build_onnx
from batchcls.models.export import cache_key, cached_onnx, export_onnx
from batchcls.models.randinit import random_weights
from batchcls.models.shapes import (
    check_weights,
    count_macs,
    count_params,
    count_thop_ops,
    param_shapes,
    table_flops_g,
)
from batchcls.models.table import zoo_table
from batchcls.models.weights import LoadedWeights, load_weights, read_weights

__all__ = [
    "BUILDER_VERSION",
    "DlaArch",
    "LoadedWeights",
    "build_onnx",
    "cache_key",
    "cached_onnx",
    "check_weights",
    "count_macs",
    "count_params",
    "count_thop_ops",
    "export_onnx",
    "get_arch",
    "list_archs",
    "load_weights",
    "param_shapes",
    "random_weights",
    "read_weights",
    "table_flops_g",
    "zoo_table",
]
