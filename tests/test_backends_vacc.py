"""The vacc backend against the vaststreamx test double, without Ray: the call sequence, die claims,
both preprocessing modes, float16 outputs, probs vs logits, padding, and each error as one line."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

from batchcls.backends import create_backend
from batchcls.backends.vacc import claim_die
from batchcls.errors import BackendUnavailable, BatchclsError
from batchcls.metrics import softmax, topk
from batchcls.stages.infer import InferWorker
from batchcls.transforms import create_transform, shipped_vdsp_params
from batchcls.transforms.fullres import FullResTransform

from conftest import write_job
from vacc_double import compiled_models, use_fake_sdk

VDSP = shipped_vdsp_params()["timm-dla34"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_onnx):
    use_fake_sdk()
    return compiled_models(str(tmp_path_factory.mktemp("vacc")), tiny_onnx)


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    folder = str(tmp_path / "locks")
    monkeypatch.setattr("batchcls.backends.vacc.DIE_LOCK_DIR", folder)
    monkeypatch.setattr("batchcls.backends.vacc.CLAIM_TIMEOUT_S", 0.5)
    opened = []
    yield opened
    for b in opened:
        b.close()


def _open(prefix, lock_dir, **kw):
    kw.setdefault("vdsp_params", VDSP)
    kw.setdefault("die_count", 4)
    backend = create_backend("vacc", prefix, **kw)
    lock_dir.append(backend)
    return backend


def test_missing_sdk_says_where_it_comes_from(models, lock_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vaststreamx", None)  # import fails as on a host without the wheel
    with pytest.raises(BackendUnavailable, match="vaststreamx is not installed.*not on PyPI"):
        _open(models["logits"], lock_dir)


def test_claims_take_distinct_dies_and_free_them_with_the_holder(tmp_path):
    folder = str(tmp_path / "locks")
    a, fa = claim_die([0, 1], folder)
    b, fb = claim_die([0, 1], folder)
    assert (a, b) == (0, 1)
    with pytest.raises(BackendUnavailable, match=r"inference.devices: every die .*\(0, 1\) is held"):
        claim_die([0, 1], folder, timeout_s=0.3)
    os.close(fa)
    assert claim_die([0, 1], folder)[0] == 0
    os.close(fb)


def test_host_geometry_equals_onnxruntime_on_the_same_crops(models, lock_dir, tiny_onnx, small_photos):
    """The card only normalises (identity crop_resize_ext): outputs equal onnxruntime on the host's crops
    normalised with the JSON's mean/std, within float16."""
    import vaststreamx

    t = create_transform("vdsp", vdsp_params=VDSP)
    crops = np.stack([t.load(p) for p in small_photos])
    backend = _open(models["logits"], lock_dir, on_device=False, batch_size=2, outputs="logits")
    assert (backend.batch_size, backend.input_shape, backend.input_dtype) == (2, (3, 224, 224), "uint8")
    vaststreamx.calls.clear()
    worker = InferWorker.__new__(InferWorker)
    worker.backend = backend
    got = worker._run(crops[:1])  # a short batch is padded to the compiled batch
    got = np.concatenate([got, backend.run(crops[1:3])])
    assert vaststreamx.calls[0] == ("set_device", backend.die)
    want = ort.InferenceSession(tiny_onnx).run(None, {"input": t.normalize(crops)})[0]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.allclose(got, want, atol=3e-2, rtol=1e-2)
    assert np.array_equal(got, got.astype(np.float16).astype(np.float32))  # float16 from the card


def test_on_device_takes_full_resolution_and_does_the_vendor_geometry(models, lock_dir, tiny_onnx, small_photos):
    full = [FullResTransform().load(p) for p in small_photos]
    assert all(a.shape[1] % 2 == 0 and a.shape[2] % 2 == 0 for a in full)
    backend = _open(models["logits"], lock_dir, on_device=True, batch_size=3, outputs="logits")
    assert backend.input_shape == (3, None, None)
    got = backend.run(full)
    t = create_transform("vdsp", vdsp_params=VDSP)
    # The vendor script resizes odd sizes down to even before the card's own 256x256 resize.
    import cv2
    crops = []
    for a in full:
        hwc = cv2.resize(np.ascontiguousarray(a.transpose(1, 2, 0)), (256, 256), interpolation=cv2.INTER_LINEAR)
        crops.append(hwc[16:240, 16:240].transpose(2, 0, 1))
    want = ort.InferenceSession(tiny_onnx).run(None, {"input": t.normalize(np.ascontiguousarray(np.stack(crops)))})[0]
    assert np.allclose(got, want, atol=3e-2, rtol=1e-2)


def test_probs_model_is_detected_and_not_softmaxed_again(models, lock_dir, tiny_onnx, small_photos):
    t = create_transform("vdsp", vdsp_params=VDSP)
    crops = np.stack([t.load(p) for p in small_photos])
    backend = _open(models["probs"], lock_dir, on_device=False, batch_size=3)
    probs = backend.run(crops)
    assert backend.outputs == "probs" and "assumed probs" in backend.outputs_note
    ids, p = topk(probs, 5, "probs")
    logits = ort.InferenceSession(tiny_onnx).run(None, {"input": t.normalize(crops)})[0]
    ref = softmax(logits)
    assert np.allclose(p, np.take_along_axis(ref, ids.astype(np.int64), 1), atol=2e-3)
    assert not np.allclose(topk(probs, 5)[1], p, atol=1e-4)  # softmax of probabilities would flatten them
    logit_backend = _open(models["logits"], lock_dir, on_device=False, batch_size=3)
    logit_backend.run(crops)
    assert logit_backend.outputs == "logits"


def test_set_device_failure_names_die_and_host(models, lock_dir):
    with pytest.raises(BackendUnavailable, match=r"no die 9 on host .*set_device returned -1.*driver"):
        _open(models["logits"], lock_dir, devices=[9])


def test_empty_op_list_names_the_json(models, lock_dir, tmp_path):
    bad = tmp_path / "bad-vdsp_params.json"
    bad.write_text('{"OpType": "FUSION_OP_UNKNOWN", "OpConfig": {}}')
    with pytest.raises(BatchclsError, match=r"preprocess.vdsp_params: '.*bad-vdsp_params.json' gives no vdsp operator"):
        _open(models["logits"], lock_dir, vdsp_params=str(bad))


def test_missing_model_file_is_named(models, lock_dir, tmp_path):
    import shutil

    prefix = str(tmp_path / "m" / "mod")
    os.makedirs(os.path.dirname(prefix))
    for s in (".so", ".json"):
        shutil.copy(models["logits"] + s, prefix + s)
    with pytest.raises(BatchclsError, match=r"model.vacc: '.*mod.params' does not exist on host"):
        _open(prefix, lock_dir)


def _vacc_job(tmp_path, prefix, **inference):
    from batchcls.config import load_job

    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    return load_job(write_job(tmp_path, model={"name": "dla34", "source": "timm", "vacc": prefix},
                              dataset={"root": str(root)}, inference={"backend": "vacc", **inference},
                              output={"dir": str(tmp_path / "out")}))


def test_job_validation_names_the_missing_file_of_the_prefix(models, tmp_path):
    import shutil

    from batchcls.errors import JobError

    prefix = str(tmp_path / "c" / "mod")
    os.makedirs(os.path.dirname(prefix))
    for s in (".so", ".params"):
        shutil.copy(models["logits"] + s, prefix + s)
    with pytest.raises(JobError, match=r"model.vacc: '.*mod.json' does not exist"):
        _vacc_job(tmp_path, prefix)
    shutil.copy(models["logits"] + ".json", prefix + ".json")
    job = _vacc_job(tmp_path, prefix, devices=[0, 1])
    assert job.inference.devices == [0, 1]
    with pytest.raises(JobError, match="inference.devices: must be a non-empty list of distinct"):
        _vacc_job(tmp_path, prefix, devices=[1, 1])


def test_a_precision_build_is_refused_for_a_compiled_vacc_model(models, tmp_path):
    from batchcls.config import load_job
    from batchcls.errors import JobError

    (tmp_path / "imgs").mkdir()
    with pytest.raises(JobError, match="model.precision: 'int8' builds an ONNX model; a vacc model's precision"):
        load_job(write_job(tmp_path, model={"name": "dla34", "vacc": models["logits"], "precision": "int8"},
                           dataset={"root": str(tmp_path / "imgs")}, inference={"backend": "vacc"},
                           output={"dir": str(tmp_path / "out")}))


def test_vacc_fields_on_another_backend_are_refused(tmp_path, tiny_onnx):
    from batchcls.config import load_job
    from batchcls.errors import JobError

    (tmp_path / "imgs").mkdir()
    base = dict(model={"name": "t", "onnx": tiny_onnx}, dataset={"root": str(tmp_path / "imgs")},
                output={"dir": str(tmp_path / "out")})
    with pytest.raises(JobError, match="inference.devices: applies to inference.backend vacc only"):
        load_job(write_job(tmp_path, **base, inference={"devices": [0]}))
    with pytest.raises(JobError, match="model.vacc: is the compiled model of the vacc backend"):
        load_job(write_job(tmp_path, **{**base, "model": {"name": "t", "vacc": "x/mod"}}))
    with pytest.raises(JobError, match="runtime.resources: declares the resources of a local cluster only"):
        load_job(write_job(tmp_path, **base, runtime={"resources": {"vacc": 2}, "ray_address": "auto"}))


def test_shipped_vacc_job_validates_and_resolves(models, tmp_path):
    """jobs/dla34.vacc.yaml, pointed at a compiled model and a dataset that exist."""
    import yaml

    from batchcls.config import validate_job
    from batchcls.plan import resolve_preprocess, resolve_vacc

    path = os.path.join(os.path.dirname(__file__), "..", "jobs", "dla34.vacc.yaml")
    raw = yaml.safe_load(open(path))
    raw["model"]["vacc"] = models["probs"]
    job = validate_job(raw, path)
    assert (job.inference.backend, job.inference.workers, job.runtime.resources) == ("vacc", 4, {"vacc": 4})
    vacc = resolve_vacc(job)
    assert vacc["on_device"] and vacc["vdsp_params"].endswith("timm-dla34-vdsp_params.json")
    assert resolve_preprocess(job, None) == {"profile": "fullres"}
    raw["preprocess"].update(on_device=False, profile="timm")
    assert resolve_preprocess(validate_job(raw, path), None)["profile"] == "timm"


def test_unwritable_lock_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BackendUnavailable, match="cannot create the die locks folder"):
        claim_die([0], str(blocker / "locks"))
