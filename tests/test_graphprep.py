"""uint8 into the graph: logits bit-identical to the host table for the three profiles, on built,
fp16 and int8 models; the wrapped model cached by content and reused; the worker sends uint8."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from batchcls.backends import create_backend
from batchcls.backends.graphprep import cached_uint8_model, wrap_uint8
from batchcls.stages.infer import InferWorker
from batchcls.synthetic import tiny_classifier_onnx
from batchcls.transforms import create_transform
from batchcls.transforms.normalize import apply_table, normalization_table

PROFILES = {"timm": {"profile": "timm"}, "vdsp": {"profile": "vdsp", "vdsp_params": "timm-dla34"},
            "ppcls": {"profile": "ppcls"}}


def _table(profile: str) -> np.ndarray:
    t = create_transform(**PROFILES[profile])
    return normalization_table(t.mean, t.std, t.scale_rule)


def _crops(n: int = 5, seed: int = 0) -> np.ndarray:
    # every byte value in every channel, plus random ones
    x = np.random.default_rng(seed).integers(0, 256, (n, 3, 224, 224), dtype=np.uint8)
    x[0, :, 0, :192] = np.arange(192, dtype=np.uint8)
    x[0, :, 1, :64] = np.arange(192, 256, dtype=np.uint8)
    return x


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """float32 (built DLA), fp16 (float32 IO, as onnxruntime's converter keeps it) and int8 (QDQ) models."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from batchcls.models.export import export_onnx

    tmp = tmp_path_factory.mktemp("graphprep")
    dla = str(tmp / "dla46_c.onnx")
    export_onnx("dla46_c", "random:0", dla)
    tiny = tiny_classifier_onnx(str(tmp / "tiny.onnx"), seed=3)
    fp16 = str(tmp / "tiny.fp16.onnx")
    onnx.save(convert_float_to_float16(onnx.load(tiny), keep_io_types=True), fp16)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": apply_table(_crops(2, s), _table("timm"))} for s in range(2)])

        def get_next(self):
            return next(self.batches, None)

    int8 = str(tmp / "tiny.int8.onnx")
    quantize_static(tiny, int8, Reader(), quant_format=QuantFormat.QDQ)
    return {"dla46_c": dla, "tiny": tiny, "fp16": fp16, "int8": int8}


def _logits(model: str, table, crops, threads=1):
    host = create_backend("onnxruntime", model, intra_op_threads=threads)
    graph = create_backend("onnxruntime", model, intra_op_threads=threads, graph_table=table)
    assert host.input_dtype == "float32" and graph.input_dtype == "uint8"
    return host.run(apply_table(crops, table)), graph.run(crops)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_graph_logits_equal_host_bit_for_bit(models, profile):
    table = _table(profile)
    crops = _crops()
    for name in ("dla46_c", "tiny", "fp16", "int8"):
        host, graph = _logits(models[name], table, crops)
        assert host.dtype == graph.dtype == np.float32 and host.shape == (5, 1000)
        assert np.array_equal(host.view(np.uint32), graph.view(np.uint32)), (profile, name)


def test_prefix_output_is_the_host_table(models):
    """The prefix alone (model = identity after it) gives apply_table's floats exactly."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 224, 224])
    ident = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    ident.ir_version = 8  # what onnxruntime 1.17+ reads (onnx's own default may be newer)
    import onnxruntime as ort

    for profile in PROFILES:
        table = _table(profile)
        wrapped = wrap_uint8(ident, table)
        assert wrapped.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        sess = ort.InferenceSession(wrapped.SerializeToString(), providers=["CPUExecutionProvider"])
        crops = _crops(2)
        out = sess.run(None, {"x_uint8": crops})[0]
        assert np.array_equal(out.view(np.uint32), apply_table(crops, table).view(np.uint32))
    with pytest.raises(ValueError, match="uint8"):
        wrap_uint8(wrapped, table)


def test_wrapped_model_cached_by_content(models, tmp_path):
    data = open(models["tiny"], "rb").read()
    timm, ppcls = _table("timm"), _table("ppcls")
    first, key, reused = cached_uint8_model(data, timm, str(tmp_path))
    assert not reused and os.listdir(tmp_path) == [f"{key[:24]}.onnx"]
    again, key2, reused2 = cached_uint8_model(data, timm, str(tmp_path))
    assert reused2 and key2 == key and again == first
    other, key3, reused3 = cached_uint8_model(data, ppcls, str(tmp_path))  # another table: another entry
    assert not reused3 and key3 != key and len(os.listdir(tmp_path)) == 2
    # a backend with a cache_dir reuses the same file (the key names it)
    b = create_backend("onnxruntime", models["tiny"], graph_table=timm, cache_dir=str(tmp_path))
    assert b.graph_key == key and b.describe()["normalize"] == "graph"


def test_worker_sends_uint8_and_matches_host(models):
    args = dict(model=models["tiny"], backend="onnxruntime", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                batch_size=4, topk=5, save_logits=True)
    host = InferWorker(backend_options={}, **args)
    graph = InferWorker(backend_options={"graph_table": _table("timm")}, **args)
    assert host.host_normalize and not graph.host_normalize
    shard = {"indices": np.arange(5, dtype=np.int32), "errors": [""] * 5, "images": _crops()}
    a, b = host(shard), graph(shard)
    assert np.array_equal(a["topk_ids"], b["topk_ids"]) and np.array_equal(a["logits"], b["logits"])
    graph.check_input((3, 224, 224))
    assert graph.warmup_s is None  # the CPU provider has nothing to warm up
    graph.warm_up((3, 224, 224))  # what a GPU worker does in check_input: one full uint8 batch
    assert graph.warmup_s > 0 and graph.describe()["warmup_s"] == graph.warmup_s
