"""The ONNX graph of a DLA architecture from timm-named numpy weights, BatchNorm folded into the convs."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from batchcls.errors import BatchclsError
from batchcls.models.arch import BN_EPS, DlaArch, get_arch
# count_macs / count_params are re-exported: callers that build a graph usually report them too.
from batchcls.models.shapes import check_input_size, check_weights, count_macs, count_params  # noqa: F401
from batchcls.models.walk import walk

# Bump when the emitted graph changes for the same weights: it keys the ONNX cache (export.cached_onnx).
BUILDER_VERSION = "1"
DEFAULT_OPSET = 17
# Split takes its sizes as an input from opset 13 on; older opsets would need another emitter.
MIN_OPSET = 13
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class _OnnxVisitor:
    """Emits nodes and folded initializers; values are ONNX value names."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.w = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, op: str) -> str:
        self.count += 1
        return f"{op}_{self.count}"

    def _node(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def input(self) -> str:
        return INPUT_NAME

    def conv_bn(self, x, conv, bn, cin, cout, k, stride=1, groups=1):
        # Folded in float64 so the float32 result is the rounding of the exact product, once.
        w = np.asarray(self.w[f"{conv}.weight"], dtype=np.float64)
        gamma, beta, mean, var = (
            np.asarray(self.w[f"{bn}.{f}"], dtype=np.float64)
            for f in ("weight", "bias", "running_mean", "running_var")
        )
        scale = gamma / np.sqrt(var + BN_EPS)
        wf = self._init(f"{conv}.fused_weight", (w * scale[:, None, None, None]).astype(np.float32))
        bf = self._init(f"{conv}.fused_bias", (beta - mean * scale).astype(np.float32))
        p = k // 2
        return self._node(
            "Conv", [x, wf, bf], conv, kernel_shape=[k, k], strides=[stride, stride],
            pads=[p, p, p, p], group=groups,
        )

    def relu(self, x):
        return self._node("Relu", [x])

    def add(self, a, b):
        return self._node("Add", [a, b])

    def concat(self, xs, channels):
        return self._node("Concat", list(xs), axis=1)

    def split(self, x, parts, width):
        sizes = self._init(self._name("split_sizes"), np.full(parts, width, dtype=np.int64))
        outs = [self._name("split") for _ in range(parts)]
        self.nodes.append(helper.make_node("Split", [x, sizes], outs, name=outs[0], axis=1))
        return outs

    def max_pool(self, x, k):
        return self._node("MaxPool", [x], kernel_shape=[k, k], strides=[k, k])

    def avg_pool(self, x, stride, channels):
        return self._node(
            "AveragePool", [x], kernel_shape=[3, 3], strides=[stride, stride],
            pads=[1, 1, 1, 1], count_include_pad=1,
        )

    def head(self, x, fc, cin, classes):
        pooled = self._node("Flatten", [self._node("GlobalAveragePool", [x])], axis=1)
        # timm's classifier is a 1x1 conv on the pooled map; on (N, C) it is a Gemm with B transposed.
        w = self._init(f"{fc}.weight", np.asarray(self.w[f"{fc}.weight"], np.float32).reshape(classes, cin))
        b = self._init(f"{fc}.bias", np.asarray(self.w[f"{fc}.bias"], np.float32))
        return self._node("Gemm", [pooled, w, b], OUTPUT_NAME, transB=1)


def build_onnx(
    arch: DlaArch | str,
    weights: Mapping[str, np.ndarray],
    *,
    opset: int = DEFAULT_OPSET,
    input_size: int = 224,
    dynamic_size: bool = False,
) -> onnx.ModelProto:
    """The inference graph of `arch`: float32 NCHW `input` (N, 3, input_size, input_size) -> `logits` (N, classes).

    `weights` are keyed by timm's state_dict names (BatchNorm running stats included; extra keys are
    ignored); the batch dimension is always dynamic ('batch'), the spatial ones too with
    `dynamic_size` ('height', 'width'). Raises BatchclsError for missing or misshaped tensors.
    """
    arch = get_arch(arch)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise BatchclsError(
            f"opset {opset} is not supported; use one from {MIN_OPSET} to "
            f"{onnx.defs.onnx_opset_version()} (default {DEFAULT_OPSET})"
        )
    check_input_size(input_size)
    check_weights(arch, weights)
    v = _OnnxVisitor(weights)
    walk(arch, v)
    hw = ["height", "width"] if dynamic_size else [input_size, input_size]
    graph = helper.make_graph(
        v.nodes,
        arch.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, *hw])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", arch.num_classes])],
        initializer=v.inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opsets, producer_name="batchcls.models", producer_version=BUILDER_VERSION,
    )
    # The lowest IR version the opset allows (8 for 17), not onnx's newest: older onnxruntime loads it.
    model.ir_version = helper.find_min_ir_version_for(opsets)
    helper.set_model_props(model, {"arch": arch.name, "builder_version": BUILDER_VERSION})
    return model
