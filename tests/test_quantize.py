"""int8 and fp16 builds: the calibration set (balanced, stable, the images prepared), the cache key, the
built graphs against fp32, each error, and both precisions through a job on a local Ray cluster."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from batchcls import calibrate
from batchcls.config import load_job
from batchcls.errors import JobError
from batchcls.models import quantize as q
from batchcls.plan import make_plan
from batchcls.stages.prep import prep_shard, transform_spec
from batchcls.synthetic import generate_imagenet_folder, tiny_classifier_onnx
from batchcls.transforms.normalize import normalize

from conftest import BAD_FILES, write_bad_files, write_job


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """12 small JPEGs over 3 classes, plus the BAD_FILES labelled as class of the first image."""
    root = str(tmp_path_factory.mktemp("calib"))
    labels = generate_imagenet_folder(root, 12, classes=3, seed=3)
    write_bad_files(root, os.path.join(root, "ILSVRC2012_val_00000001.JPEG"))
    first_class = open(labels).readline().split()[1]
    with open(labels, "a") as f:
        for name in BAD_FILES:
            f.write(f"{name} {first_class}\n")
    return root, labels


def _job(tmp_path, root, labels, model, name="job", **model_fields):
    """A job file `tmp_path/name/job.yaml` over `root` with `model` (caches in tmp_path/cache)."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    sections = {"model": {"name": "tiny", "onnx": model, **model_fields},
                "dataset": {"root": root, **({"labels": labels} if labels else {})},
                "runtime": {"cache_dir": str(tmp_path / "cache"), "progress": False},
                "output": {"dir": str(tmp_path / "out")}}
    return write_job(folder, **sections)


def _settings(**kw):
    return q.CalibrationSettings(**kw)


def test_calibration_set_is_class_balanced_and_stable(tmp_path, imagenet_flat, tiny_onnx):
    root, labels = imagenet_flat
    plan = make_plan(load_job(_job(tmp_path, root, labels, tiny_onnx)), tiny_onnx)
    classes = Counter(s.label for s in plan.dataset.samples)
    assert len(classes) == 11 and classes[7] == 4  # 10 classes of 30, and the 4 bad files labelled 7
    eleven = calibrate.calibration_samples(plan, _settings(images=11))
    assert sorted(Counter(s.label for s in eleven).values()) == [1] * 11  # one per class
    for n in (25, 37):
        drawn = calibrate.calibration_samples(plan, _settings(images=n))
        counts = Counter(s.label for s in drawn)
        assert len(drawn) == n and len(counts) == 11 and max(counts.values()) - min(counts.values()) <= 1
        assert drawn == calibrate.calibration_samples(plan, _settings(images=n))  # the same every time
        assert [s.index for s in drawn] == sorted(s.index for s in drawn)
    # A class with fewer images gives all it has; the others share the rest evenly.
    counts = Counter(s.label for s in calibrate.calibration_samples(plan, _settings(images=64)))
    others = [c for label, c in counts.items() if label != 7]
    assert counts[7] == 4 and sum(others) == 60 and set(others) == {6}
    # The evaluation's dataset.limit does not change the calibration set (it is drawn from the whole folder).
    limited = make_plan(load_job(_job(tmp_path, root, labels, tiny_onnx), ["dataset.limit=20"]), tiny_onnx)
    assert calibrate.calibration_samples(limited, _settings(images=25)) == \
        calibrate.calibration_samples(plan, _settings(images=25))


def test_unlabelled_set_refused_when_balance_is_asked(tmp_path, tiny_onnx):
    root = str(tmp_path / "unlabelled")
    generate_imagenet_folder(root, 6, classes=2, seed=0, small=True)
    os.unlink(os.path.join(root, "val_label.txt"))
    # ILSVRC2012-named files are labelled by the built-in ground truth unless labelling is off.
    plan = make_plan(load_job(_job(tmp_path, root, "none", tiny_onnx)), tiny_onnx)
    with pytest.raises(JobError, match=r"model\.calibration\.balance: .* have no labels"):
        calibrate.calibration_samples(plan, _settings(images=4))
    assert len(calibrate.calibration_samples(plan, _settings(images=4, balance=False))) == 4


def test_build_key_changes_with_each_setting(tmp_path, small_set, tiny_onnx):
    base = _settings()
    key = q.build_key("m" * 64, "int8", base, "calib")
    variants = [q.build_key("n" * 64, "int8", base, "calib"), q.build_key("m" * 64, "fp16", base, "calib"),
                q.build_key("m" * 64, "int8", base, "other images")]
    for field, value in (("method", "percentile"), ("method", "minmax"), ("images", 999), ("per_channel", False),
                         ("percentile", 99.99), ("balance", False)):
        variants.append(q.build_key("m" * 64, "int8", _settings(**{field: value}), "calib"))
    assert len({key, *variants}) == len(variants) + 1
    # fp16 takes no calibration: its key ignores the calibration settings.
    assert q.build_key("m" * 64, "fp16", base, "") == q.build_key("m" * 64, "fp16", _settings(method="minmax"), "")
    # Through the job: another image set, or a changed calibration file, is another build.
    root, labels = small_set
    plan = make_plan(load_job(_job(tmp_path, root, labels, tiny_onnx)), tiny_onnx)
    first = calibrate.cached_path(plan, "int8", _settings(images=8))
    assert first == calibrate.cached_path(plan, "int8", _settings(images=8))
    assert first != calibrate.cached_path(plan, "int8", _settings(images=9))
    drawn = calibrate.calibration_samples(plan, _settings(images=8))
    path = os.path.join(root, drawn[0].path)
    st = os.stat(path)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert calibrate.cached_path(plan, "int8", _settings(images=8)) != first
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _run_cli(capsys, *argv):
    code = calibrate.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _prepared(plan, samples):
    """The crops of `samples` straight from the prep stage (no cache), and the paths that succeeded."""
    got = prep_shard(plan.job.dataset.root, [(s.index, s.path) for s in samples], transform_spec(plan.transform_params), None)
    return got["images"], [s.path for s, e in zip(samples, got["errors"]) if not e]


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory, small_set):
    tmp = tmp_path_factory.mktemp("int8")
    model = tiny_classifier_onnx(str(tmp / "tiny.onnx"), seed=2)
    root, labels = small_set
    job = _job(tmp, root, labels, model)
    out = str(tmp / "built" / "tiny.int8.onnx")
    assert calibrate.main([job, "-o", out, "--images", "16", "--method", "minmax"]) == 0
    return job, model, out


def test_int8_build_has_qdq_nodes_and_follows_fp32(int8_build):
    job, model, out = int8_build
    graph = onnx.load(out).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 6 and ops["Conv"] == 3
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 2
    # The output stays float: the classifier conv (one of three convs) and the Flatten after it are not quantized.
    producer = {o: n for n in graph.node for o in n.output}
    head = producer["logits"]
    assert head.op_type == "Flatten" and producer[head.input[0]].op_type == "Conv"
    assert producer[head.input[0]].input[1] == "w3"  # float weights, not a DequantizeLinear output
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_scale")}
    assert any(v.size == 16 for v in scales.values())  # per-channel: one scale per output channel of conv 1
    plan = make_plan(load_job(job), model)
    images, _ = _prepared(plan, plan.samples)
    x = normalize(images, plan.mean, plan.std)
    ref = ort.InferenceSession(model).run(None, {"input": x})[0]
    got = ort.InferenceSession(out).run(None, {"input": x})[0]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.75


def test_calibration_list_is_the_images_prepared(int8_build):
    job, model, out = int8_build
    plan = make_plan(load_job(job), model)
    drawn = calibrate.calibration_samples(plan, _settings(images=16))
    assert len(drawn) == 16 and {s.path for s in drawn} >= set(BAD_FILES)  # every sample, the bad ones too
    _, expected = _prepared(plan, drawn)
    assert len(expected) == 12
    listed = q.read_calib_list(q.calib_list_path(out))
    assert listed == expected
    meta = q.read_metadata(out)
    assert meta["precision"] == "int8" and meta["calibration_images"].split("\n") == expected
    calib = json.loads(meta["calibration"])
    assert calib["images_used"] == 12 and calib["method"] == "minmax" and calib["vamc_calibrate_mode"] == "max"
    assert calib["images_sha256"] == q.names_digest(expected) and meta["source_sha256"] == q.file_sha256(model)
    # Pixels came through the prep stage's shard cache, as a run's do.
    assert os.listdir(os.path.join(plan.job.runtime.cache_dir, "shards", plan.prep_key))


def test_entropy_build(tmp_path, small_set, capsys, monkeypatch):
    # Fewer bins than the default 2048 keep the KL search short; the code path is the same.
    monkeypatch.setattr(q, "ENTROPY_BINS", 256)
    model = tiny_classifier_onnx(str(tmp_path / "tiny.onnx"), seed=4)
    root, labels = small_set
    out = str(tmp_path / "tiny.entropy.onnx")
    code, stdout, _ = _run_cli(capsys, _job(tmp_path, root, labels, model), "-o", out, "--images", "6", "--per-tensor")
    assert code == 0 and "classes        3" in stdout
    calib = json.loads(q.read_metadata(out)["calibration"])
    assert (calib["method"], calib["vamc_calibrate_mode"], calib["per_channel"]) == ("entropy", "kl_divergence", False)
    graph = onnx.load(out).graph
    scales = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_scale")]
    assert scales and all(s.size == 1 for s in scales)  # per-tensor


def test_fp16_build_keeps_float32_io(tmp_path, small_set, tiny_onnx, capsys):
    root, labels = small_set
    job = _job(tmp_path, root, labels, tiny_onnx)
    out = str(tmp_path / "tiny.fp16.onnx")
    code, _, _ = _run_cli(capsys, job, "-o", out, "--precision", "fp16")
    assert code == 0
    model = onnx.load(out)
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert q.read_metadata(out)["precision"] == "fp16"
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    ref = ort.InferenceSession(tiny_onnx).run(None, {"input": x})[0]
    got = ort.InferenceSession(out).run(None, {"input": x})[0]
    assert got.dtype == np.float32 and np.max(np.abs(got - ref)) < 2e-2 * np.max(np.abs(ref))


def test_float_head_keeps_the_outputs_float():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Conv", ["input", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph)
    # A single Gemm keeps int8 inputs and weights, with a float output; the Softmax stays float.
    assert q.float_head(model) == (["Softmax_4"], ["Gemm"])
    model.graph.node.insert(0, helper.make_node("Gemm", ["x", "y"], ["z"], name="other"))
    assert q.float_head(model) == (["Softmax_4", "Gemm_3"], [])  # a shared op type: the head layer stays float


def _no_int8_kernel_model(path):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["input"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["logits"])]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_errors_are_one_line(tmp_path, small_set, int8_build, tiny_onnx, capsys):
    root, labels = small_set
    _, _, built = int8_build
    out = str(tmp_path / "o.onnx")
    cases = [
        (_job(tmp_path, root, labels, built, "quantized"), ["-o", out], "is already quantized (it has DequantizeLinear"),
        # A 3-class model: the images' ImageNet labels would be refused first, so this one runs unlabelled.
        (_job(tmp_path, root, "none", _no_int8_kernel_model(str(tmp_path / "pool.onnx")), "pool",
              calibration={"balance": False}), ["-o", out],
         "has no operator with an int8 kernel (Conv, ConvTranspose, Gemm, MatMul); its operators are "
         "Flatten, GlobalAveragePool, Relu"),
        (_job(tmp_path, root, labels, tiny_onnx, "out"), ["-o", str(tmp_path / "pool.onnx" / "x.onnx")], "--output: cannot write"),
    ]
    bad_root = str(tmp_path / "bad")
    os.makedirs(bad_root)
    write_bad_files(bad_root, os.path.join(root, "ILSVRC2012_val_00000001.JPEG"))
    with open(os.path.join(bad_root, "labels.txt"), "w") as f:
        f.writelines(f"{name} 1\n" for name in BAD_FILES)
    cases.append((_job(tmp_path, bad_root, os.path.join(bad_root, "labels.txt"), tiny_onnx, "bad"), ["-o", out],
                  "model.calibration: no calibration image could be prepared"))
    unlabelled = str(tmp_path / "unlabelled")
    generate_imagenet_folder(unlabelled, 3, classes=1, seed=0, small=True)
    os.unlink(os.path.join(unlabelled, "val_label.txt"))
    cases.append((_job(tmp_path, unlabelled, "none", tiny_onnx, "unlabelled"), ["-o", out], "model.calibration.balance: "))
    for job, args, message in cases:
        code, _, err = _run_cli(capsys, job, *args, "--images", "4", "--method", "minmax")
        assert code == 2, message
        assert err.startswith("batchcls quantize: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)


def test_job_fields_are_validated(tmp_path, small_set, tiny_onnx):
    root, labels = small_set
    job = _job(tmp_path, root, labels, tiny_onnx)
    with pytest.raises(JobError, match=r"model\.precision: 'int4' is not allowed; allowed: fp32, fp16, int8"):
        load_job(job, ["model.precision=int4"])
    with pytest.raises(JobError, match=r"model\.calibration\.method: 'kl' is not allowed"):
        load_job(job, ["model.calibration.method=kl"])
    with pytest.raises(JobError, match=r"model\.calibration\.images: must be a positive integer"):
        load_job(job, ["model.calibration.images=0"])
    assert load_job(job).model.calibration.images == 1000


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_precision_through_a_job(tmp_path, small_set, tiny_onnx, precision):
    from batchcls.pipeline import resolve_model, run_job

    root, labels = small_set
    over = ["model.calibration.images=8", "model.calibration.method=percentile", f"model.precision={precision}",
            "dataset.limit=12"]
    job = load_job(_job(tmp_path, root, labels, tiny_onnx), over)
    logs: list[str] = []
    metrics = run_job(job, log=logs.append)
    built = metrics["deploy"]["path"]
    assert built.startswith(os.path.join(job.runtime.cache_dir, "deployed")) and metrics["images"] == 12
    assert metrics["deploy"]["precision"] == precision and metrics["job"]["model"]["precision"] == precision
    with open(os.path.join(job.output.dir, "metrics.json")) as f:
        assert json.load(f)["deploy"] == metrics["deploy"]
    if precision == "int8":
        calib = metrics["deploy"]["calibration"]
        assert calib["images_used"] == 8 and calib["method"] == "percentile"
        evaluated = {s.path for s in make_plan(job, tiny_onnx).samples}
        expected = sum(1 for p in q.read_calib_list(q.calib_list_path(built)) if p in evaluated)
        assert metrics["deploy"]["evaluated_calibration_images"] == expected > 0
        assert any(f"{expected} of the evaluated images were calibration images" in line for line in logs)
    else:
        assert "calibration" not in metrics["deploy"] and "\nprecision fp16\n" in "\n".join(logs)
    # The next run reuses the build.
    mtime = os.stat(built).st_mtime_ns
    assert resolve_model(job) == built and os.stat(built).st_mtime_ns == mtime
