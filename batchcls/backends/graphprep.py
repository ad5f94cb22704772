"""The uint8 -> normalised prefix wrapped around any ONNX: a Gather from the worker's own table.

The crops go to the device as uint8 (4x fewer bytes than float32) and are normalised there by
looking each byte up in the same (3, 256) float32 table the host path uses
(`transforms.normalize.normalization_table`): index = int32(x) + 256 * channel, value =
table.flat[index]. A lookup does no arithmetic, so the model sees the very floats the host would
have sent, bit for bit, on any execution provider. (Cast -> Sub -> Mul in the graph is 1-2 ulp away.)
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Bump when the prefix's nodes change, so wrapped models cached by an older version are rebuilt.
PREFIX_VERSION = 1
PREFIX = "batchcls_uint8_prefix"
INPUT_SUFFIX = "_uint8"
# The model input types the prefix can feed: the table is stored in that type (a float16 model's
# host path would round the same float32 values to float16).
_TABLE_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}


class AlreadyUint8(ValueError):
    """The model takes uint8 itself (and normalises inside): nothing to wrap."""


def wrap_uint8(model: onnx.ModelProto, table: np.ndarray) -> onnx.ModelProto:
    """`model` with its image input replaced by a uint8 input of the same shape, normalised by `table`
    ((3, 256) float32, row c = normalised value of 0..255 for channel c) before the original graph."""
    table = np.asarray(table, dtype=np.float32)
    if table.shape != (3, 256):
        raise ValueError(f"normalisation table must be (3, 256), got {table.shape}")
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, got {[i.name for i in inputs]}")
    original = inputs[0]
    elem = original.type.tensor_type.elem_type
    if elem == TensorProto.UINT8:
        raise AlreadyUint8(f"input {original.name!r} already takes uint8")
    if elem not in _TABLE_TYPES:
        raise ValueError(f"input {original.name!r} is {TensorProto.DataType.Name(elem)}; the uint8 prefix "
                         "feeds float32, float16 or float64 inputs")
    dims = original.type.tensor_type.shape.dim
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        raise ValueError(f"input {original.name!r} is not an [N,3,H,W] image input")
    new_input = helper.make_tensor_value_info(original.name + INPUT_SUFFIX, TensorProto.UINT8, None)
    new_input.type.tensor_type.shape.CopyFrom(original.type.tensor_type.shape)
    flat = table.astype(_TABLE_TYPES[elem]).reshape(-1)
    names = {k: f"{PREFIX}/{k}" for k in ("table", "offset", "as_int", "index")}
    prefix_inits = [numpy_helper.from_array(flat, names["table"]),
                    numpy_helper.from_array(np.array([0, 256, 512], np.int32).reshape(1, 3, 1, 1), names["offset"])]
    nodes = [
        helper.make_node("Cast", [new_input.name], [names["as_int"]], to=TensorProto.INT32, name=f"{PREFIX}/cast"),
        helper.make_node("Add", [names["as_int"], names["offset"]], [names["index"]], name=f"{PREFIX}/offset"),
        helper.make_node("Gather", [names["table"], names["index"]], [original.name], axis=0, name=f"{PREFIX}/gather"),
    ]
    kept = [i for i in graph.input if i.name != original.name]
    del graph.input[:]
    graph.input.extend([new_input, *kept])
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    graph.initializer.extend(prefix_inits)
    return wrapped


def wrapped_key(model_bytes: bytes, table: np.ndarray) -> str:
    """What decides the wrapped model's bytes: the model's content, the table, the prefix version."""
    h = hashlib.sha256(model_bytes)
    h.update(np.ascontiguousarray(table, dtype=np.float32).tobytes())
    h.update(f"prefix={PREFIX_VERSION}".encode())
    return h.hexdigest()


def cached_uint8_model(model_bytes: bytes, table: np.ndarray, cache_dir: str | None) -> tuple[bytes, str, bool]:
    """(wrapped model bytes, content key, reused) for `model_bytes` and `table`, read from
    `<cache_dir>/<key[:24]>.onnx` when it is there and written there (atomically) otherwise. A cache
    that cannot be written costs a rebuild next time, never the run."""
    key = wrapped_key(model_bytes, table)
    path = os.path.join(cache_dir, f"{key[:24]}.onnx") if cache_dir else None
    if path and os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                return f.read(), key, True
        except OSError:
            pass
    try:
        data = wrap_uint8(onnx.load_from_string(model_bytes), table).SerializeToString()
    except AlreadyUint8:
        return model_bytes, key, False
    if path:
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            pass
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return data, key, False
