"""Stages tested directly, without Ray: prep (bad files become error records, cache reuse), infer, reduce."""

from __future__ import annotations

import os

import numpy as np
import pytest

from batchcls.data.discover import Sample
from batchcls.data.shards import Shard
from batchcls.errors import BatchclsError
from batchcls.schema import read_predictions
from batchcls.stages.infer import InferWorker
from batchcls.stages.prep import prep_shard, transform_spec
from batchcls.stages.reduce import reduce_shard
from batchcls.synthetic import tiny_classifier_onnx
from batchcls.transforms import create_transform

from conftest import reference_timm, write_bad_files, write_png_bomb

SPEC = transform_spec({"profile": "timm"})


def _worker(model, **kw):
    args = dict(model=model, backend="onnxruntime", backend_options={}, mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225), batch_size=4, topk=5, save_logits=True)
    args.update(kw)
    return InferWorker(**args)


@pytest.fixture
def mixed_dir(tmp_path, small_photos):
    root = os.path.dirname(small_photos[0])
    write_bad_files(root, small_photos[0])
    write_png_bomb(os.path.join(root, "bomb.png"))
    names = sorted(os.listdir(root))
    return root, names


def test_prep_records_every_bad_file(mixed_dir, tmp_path):
    root, names = mixed_dir
    samples = [(i, n) for i, n in enumerate(names)] + [(99, "missing.JPEG")]
    cache = str(tmp_path / "cache" / "s.npz")
    out = prep_shard(root, samples, SPEC, cache)
    errors = dict(zip([n for _, n in samples], out["errors"]))
    good = [n for n in names if n.startswith("img")]
    assert all(errors[n] == "" for n in good)
    bad = [n for n in errors if n not in good]
    assert len(bad) == 6 and all(errors[n].startswith("prep: ") for n in bad), errors
    assert "decompression" in errors["bomb.png"].lower()
    assert out["images"].shape == (len(good), 3, 224, 224) and out["images"].dtype == np.uint8
    assert out["indices"].tolist() == [i for i, _ in samples] and out["cached"] is False
    again = prep_shard(root, samples, SPEC, cache)
    assert again["cached"] is True and again["errors"] == out["errors"]
    assert np.array_equal(again["images"], out["images"])


def test_prep_matches_reference(small_photos):
    root = os.path.dirname(small_photos[0])
    samples = [(i, os.path.basename(p)) for i, p in enumerate(small_photos)]
    out = prep_shard(root, samples, SPEC, None)
    t = create_transform("timm")
    from batchcls.transforms import normalize

    got = normalize(out["images"], t.mean, t.std)
    for i, p in enumerate(small_photos):
        assert np.abs(got[i] - reference_timm(p)).max() <= 1e-6


def test_infer_worker_matches_onnxruntime(tiny_onnx):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 3, 224, 224), dtype=np.uint8)
    w = _worker(tiny_onnx)
    out = w({"images": images, "indices": np.arange(11, dtype=np.int32), "errors": [""] * 10 + ["prep: x"]})
    assert out["batches"] == 3 and out["topk_ids"].shape == (10, 5) and out["logits"].dtype == np.float16
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    x = ((images.astype(np.float32) / np.float32(255)) - mean) / std
    ref = ort.InferenceSession(tiny_onnx).run(None, {"input": x})[0]
    assert out["topk_ids"].tolist() == np.argsort(-ref, axis=1, kind="stable")[:, :5].tolist()
    assert np.allclose(out["logits"], ref, atol=2e-2, rtol=1e-2)


def test_fixed_batch_model_pads_last_batch(tmp_path):
    fixed = tiny_classifier_onnx(str(tmp_path / "fixed.onnx"), seed=3, fixed_batch=4)
    dynamic = tiny_classifier_onnx(str(tmp_path / "dyn.onnx"), seed=3)
    images = np.random.default_rng(1).integers(0, 256, (6, 3, 224, 224), dtype=np.uint8)
    payload = {"images": images, "indices": np.arange(6, dtype=np.int32), "errors": [""] * 6}
    a, b = _worker(fixed)(payload), _worker(dynamic)(payload)
    assert a["topk_ids"].tolist() == b["topk_ids"].tolist()
    with pytest.raises(BatchclsError, match="fixed batch of 4; set inference.batch_size to 4"):
        _worker(fixed, batch_size=8)(payload)


def test_input_size_mismatch_is_explained(tiny_onnx):
    with pytest.raises(BatchclsError, match="crops are 3x256x256 but the model expects 3x224x224"):
        _worker(tiny_onnx).check_input((3, 256, 256))


def test_missing_provider_is_explained(tiny_onnx):
    with pytest.raises(BatchclsError, match="CUDAExecutionProvider not available"):
        _worker(tiny_onnx, backend_options={"providers": ["CUDAExecutionProvider"]})


def test_reduce_writes_one_row_per_sample(tmp_path, tiny_onnx):
    samples = tuple(Sample(i, f"{i}.JPEG", i % 2) for i in range(5))
    shard = Shard(2, samples, "k")
    images = np.zeros((4, 3, 224, 224), np.uint8)
    errors = ["", "", "prep: truncated image", "", ""]
    result = _worker(tiny_onnx)({"images": images, "indices": np.arange(5, dtype=np.int32), "errors": errors})
    reduce_shard(shard, result, str(tmp_path))
    rows = read_predictions(str(tmp_path)).to_pylist()
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2]["error"] == "prep: truncated image" and rows[2]["topk_ids"] is None
    assert all(len(r["topk_ids"]) == 5 for r in rows if r["error"] is None)
    assert os.path.exists(tmp_path / "predictions" / "part-00002.parquet")


@pytest.mark.parametrize("profile", ["timm", "ppcls"])
def test_worker_normalises_as_the_profile_does(tiny_onnx, profile):
    """PaddleClas multiplies by float32(1/255) where torchvision divides: the worker follows the profile."""
    import onnxruntime as ort

    t = create_transform(profile)
    images = np.random.default_rng(2).integers(0, 256, (3, 3, 224, 224), dtype=np.uint8)
    out = _worker(tiny_onnx, mean=t.mean, std=t.std, scale_rule=t.scale_rule)(
        {"images": images, "indices": np.arange(3, dtype=np.int32), "errors": [""] * 3})
    ref = ort.InferenceSession(tiny_onnx).run(None, {"input": t.normalize(images)})[0]
    assert np.array_equal(out["logits"], ref.astype(np.float16))
