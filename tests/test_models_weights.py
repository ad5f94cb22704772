"""Weights specs: safetensors round trip, ucbdrive extras, random seeds, and the errors users can fix."""

from __future__ import annotations

import importlib.util
import json
import struct

import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import save_file

from batchcls.errors import BackendUnavailable, BatchclsError
from batchcls.models import build_onnx, load_weights, random_weights, read_weights
from batchcls.models.walk import ucbdrive_unused_projections
from batchcls.models.weights import _as_float32, _read_safetensors

ARCH = "dla46_c"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _logits(weights) -> np.ndarray:
    session = ort.InferenceSession(build_onnx(ARCH, weights).SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224), dtype=np.float32)
    return session.run(None, {"input": x})[0]


def test_safetensors_round_trip_gives_same_logits(tmp_path):
    path = tmp_path / "dla46_c.safetensors"
    save_file(random_weights(ARCH, 5), str(path))
    loaded = load_weights(path, ARCH)
    from_spec = load_weights("random:5", ARCH)
    assert all(np.array_equal(loaded[k], from_spec[k]) for k in from_spec)
    np.testing.assert_array_equal(_logits(loaded), _logits(from_spec))


def test_ucbdrive_style_extras_are_ignored_and_reported(tmp_path, caplog):
    weights = random_weights(ARCH, 0)
    extras = {k: np.zeros(s, np.float32) for k, s in ucbdrive_unused_projections(ARCH).items()}
    tracked = {"base_layer.1.num_batches_tracked": np.zeros((), np.int64)}
    # A DataParallel checkpoint: every key carries a 'module.' prefix.
    state = {f"module.{k}": v for k, v in {**weights, **extras, **tracked}.items()}
    path = tmp_path / "ucb.safetensors"
    save_file(state, str(path))
    with caplog.at_level("INFO", logger="batchcls.models.weights"):
        loaded = read_weights(path, ARCH)
    # dla46_c: level4 is a depth-2 tree from 64 to 128 channels, so one unused projection (5 tensors).
    assert len(loaded.ignored) == len(extras) == 5
    assert "ignored 5 tensors" in caplog.text and "5 are ucbdrive's unused tree projections" in caplog.text
    assert set(loaded.tensors) == set(weights)


def test_float16_checkpoints_are_widened(tmp_path):
    path = tmp_path / "half.safetensors"
    save_file({k: v.astype(np.float16) for k, v in random_weights(ARCH, 0).items()}, str(path))
    assert {v.dtype for v in load_weights(path, ARCH).values()} == {np.dtype(np.float32)}


def test_integer_tensor_is_rejected(tmp_path):
    weights = dict(random_weights(ARCH, 0), **{"fc.bias": np.zeros(1000, np.int64)})
    path = tmp_path / "int.safetensors"
    save_file(weights, str(path))
    with pytest.raises(BatchclsError, match="tensor 'fc.bias' has dtype int64, expected a float type"):
        load_weights(path, ARCH)


def test_misshaped_tensor_in_file_names_tensor_and_shapes(tmp_path):
    weights = random_weights(ARCH, 0)
    weights["level2.tree1.conv1.weight"] = np.zeros((32, 32, 3, 3), np.float32)
    path = tmp_path / "bad.safetensors"
    save_file(weights, str(path))
    expected = (
        r"bad.safetensors: tensor 'level2.tree1.conv1.weight' has shape \(32, 32, 3, 3\), "
        r"expected \(32, 32, 1, 1\)"
    )
    with pytest.raises(BatchclsError, match=expected):
        load_weights(path, ARCH)


def test_missing_tensor_in_file_is_named(tmp_path):
    weights = random_weights(ARCH, 0)
    del weights["fc.bias"]
    path = tmp_path / "partial.safetensors"
    save_file(weights, str(path))
    with pytest.raises(BatchclsError, match=r"missing tensor 'fc.bias' \(expected shape \(1000,\)\)"):
        load_weights(path, ARCH)


def test_bfloat16_tensors_are_widened(tmp_path):
    # 1.0 and -2.0 in bfloat16 (the top halves of their float32 bits), little-endian.
    header = json.dumps({"fc.bias": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x80\x3f\x00\xc0")
    bias = _as_float32(_read_safetensors(str(path))["fc.bias"], "fc.bias", str(path))
    np.testing.assert_array_equal(bias, np.array([1.0, -2.0], np.float32))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("random:-1", "SEED must be a non-negative integer"),
        ("random:abc", "SEED must be a non-negative integer"),
        ("nowhere.safetensors", "weights file not found: nowhere.safetensors"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(BatchclsError, match=message):
        load_weights(spec, ARCH)


def test_unknown_format_and_corrupt_file(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(BatchclsError, match="unknown weights format"):
        load_weights(tmp_path / "w.npz", ARCH)
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    with pytest.raises(BatchclsError, match="not a readable float safetensors file"):
        load_weights(tmp_path / "w.safetensors", ARCH)


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed here")
def test_pth_without_torch_says_how_to_install(tmp_path):
    (tmp_path / "dla46_c.pth").write_bytes(b"x")
    with pytest.raises(BackendUnavailable, match="needs torch: pip install torch"):
        load_weights(tmp_path / "dla46_c.pth", ARCH)


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_pth_ucbdrive_checkpoint_loads(tmp_path):
    import torch

    state = {k: torch.from_numpy(v) for k, v in random_weights(ARCH, 0).items()}
    state.update({k: torch.zeros(s) for k, s in ucbdrive_unused_projections(ARCH).items()})
    torch.save(state, tmp_path / "dla46_c.pth")
    loaded = read_weights(tmp_path / "dla46_c.pth", ARCH)
    assert len(loaded.ignored) == 5
    np.testing.assert_array_equal(loaded.tensors["fc.weight"], random_weights(ARCH, 0)["fc.weight"])
