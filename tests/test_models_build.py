"""ONNX graph building: validity, dynamic batch and size, weight validation messages."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from batchcls.errors import BatchclsError
from batchcls.models import build_onnx, param_shapes, random_weights

ARCH = "dla46_c"  # the smallest; the other blocks are covered by the parity test


@pytest.fixture(scope="module")
def weights():
    return random_weights(ARCH, 0)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _images(n: int, size: int = 224) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((n, 3, size, size), dtype=np.float32)


def test_graph_checks_and_declares_io(weights):
    model = build_onnx(ARCH, weights)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims) == ("input", ["batch", 3, 224, 224])
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 1000]
    assert out.name == "logits"
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convs
    assert ops <= {"Conv", "Relu", "Add", "MaxPool", "Concat", "GlobalAveragePool", "Flatten", "Gemm"}


def test_dynamic_batch_gives_same_per_sample_logits(weights):
    session = _session(build_onnx(ARCH, weights))
    x = _images(3)
    batch3 = session.run(None, {"input": x})[0]
    batch1 = session.run(None, {"input": x[1:2]})[0]
    assert batch3.shape == (3, 1000)
    np.testing.assert_allclose(batch1[0], batch3[1], rtol=1e-5, atol=1e-5)


def test_dynamic_size_runs_any_multiple_of_32(weights):
    model = build_onnx(ARCH, weights, dynamic_size=True)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    session = _session(model)
    for size in (160, 256):
        assert session.run(None, {"input": _images(1, size)})[0].shape == (1, 1000)


def test_res2net_graph_splits_and_pools():
    model = build_onnx("dla60_res2next", random_weights("dla60_res2next", 0))
    ops = [n.op_type for n in model.graph.node]
    # 16 blocks (leaves of depth 1, 2, 4, 1 trees, two blocks each); the strided first block of each
    # of levels 2-5 pools its last split.
    assert ops.count("Split") == 16
    assert ops.count("AveragePool") == 4


def test_other_opset(weights):
    model = build_onnx(ARCH, weights, opset=18)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 18


def test_unsupported_opset_is_a_user_error(weights):
    with pytest.raises(BatchclsError, match="opset 11 is not supported"):
        build_onnx(ARCH, weights, opset=11)


def test_missing_tensor_names_it_and_its_shape(weights):
    partial = {k: v for k, v in weights.items() if k != "level3.tree1.tree1.conv2.weight"}
    expected = r"missing tensor 'level3.tree1.tree1.conv2.weight' \(expected shape \(32, 32, 3, 3\)\)"
    with pytest.raises(BatchclsError, match=expected):
        build_onnx(ARCH, partial)


def test_misshaped_tensor_names_both_shapes(weights):
    bad = dict(weights, **{"fc.weight": np.zeros((1000, 512, 1, 1), np.float32)})
    with pytest.raises(BatchclsError, match=r"'fc.weight' has shape \(1000, 512, 1, 1\), expected \(1000, 256, 1, 1\)"):
        build_onnx(ARCH, bad)


def test_weights_of_another_arch_are_rejected():
    with pytest.raises(BatchclsError, match="for dla34"):
        build_onnx("dla34", random_weights(ARCH, 0))


def test_random_weights_cover_exactly_the_expected_tensors():
    for arch in ("dla34", "dla60_res2net"):
        w = random_weights(arch, 3)
        assert {k: v.shape for k, v in w.items()} == param_shapes(arch)
        assert all(v.dtype == np.float32 for v in w.values())


def test_random_weights_depend_only_on_seed():
    a, b, c = random_weights(ARCH, 1), random_weights(ARCH, 1), random_weights(ARCH, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc.weight"], c["fc.weight"])
