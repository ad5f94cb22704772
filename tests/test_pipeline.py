"""End to end through a local Ray cluster: one row per input, predictions equal to onnxruntime on the
reference preprocessing, metrics equal to an independent count, cache reuse, resume, lock."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

from batchcls.config import load_job
from batchcls.constants import PREP_NICENESS
from batchcls.errors import BatchclsError
from batchcls.pipeline import run_job
from batchcls.rundir import RunDir
from batchcls.schema import read_predictions

from conftest import BAD_FILES, reference_timm, write_job

pytestmark = pytest.mark.usefixtures("ray_local")


def _job(tmp_path, imagenet_flat, tiny_onnx, out="out", **over):
    root, labels = imagenet_flat
    sections = {"model": {"name": "tiny", "onnx": tiny_onnx},
                "dataset": {"root": root, "labels": labels},
                "inference": {"batch_size": 48, "workers": 1},
                "runtime": {"shard_size": 96, "cache_dir": str(tmp_path / "cache"), "progress": False},
                "output": {"dir": str(tmp_path / out), "save_logits": True}}
    for key, value in over.items():
        section, field = key.split("__")
        sections.setdefault(section, {})[field] = value
    return load_job(write_job(tmp_path, **sections))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, imagenet_flat, tiny_onnx):
    tmp = tmp_path_factory.mktemp("e2e")
    job = _job(tmp, imagenet_flat, tiny_onnx)
    logs = []
    metrics = run_job(job, log=logs.append)
    return tmp, job, metrics, logs


def test_one_row_per_input(first_run, imagenet_flat):
    tmp, job, metrics, _ = first_run
    table = read_predictions(job.output.dir)
    names = sorted(n for n in os.listdir(imagenet_flat[0]) if n.endswith(".JPEG"))
    assert table.num_rows == len(names) == 304
    assert sorted(table["path"].to_pylist()) == names
    assert sorted(table["index"].to_pylist()) == list(range(304))
    parts = sorted(os.listdir(os.path.join(job.output.dir, "predictions")))
    assert parts == [f"part-{i:05d}.parquet" for i in range(4)]  # 304 images in shards of 96
    errors = {r["path"]: r["error"] for r in table.to_pylist() if r["error"]}
    assert sorted(errors) == sorted(BAD_FILES)


def test_local_cluster_runs_workers_at_normal_priority(first_run):
    """Ray starts its workers at nice 15; a local cluster of ours starts them at 0 (the driver's)."""
    _, _, metrics, _ = first_run
    assert [w["nice"] for w in metrics["workers"]] == [os.nice(0)]
    # Prep tasks yield the cores to inference where both share a host.
    assert metrics["prep_niceness"] == max(PREP_NICENESS, os.nice(0))


def test_predictions_equal_direct_onnxruntime(first_run, imagenet_flat, tiny_onnx):
    tmp, job, _, _ = first_run
    rows = [r for r in read_predictions(job.output.dir).to_pylist() if r["error"] is None]
    sess = ort.InferenceSession(tiny_onnx)
    x = np.stack([reference_timm(os.path.join(imagenet_flat[0], r["path"])) for r in rows])
    logits = np.concatenate([sess.run(None, {"input": x[i:i + 50]})[0] for i in range(0, len(x), 50)])
    expected = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    assert [r["topk_ids"] for r in rows] == expected.tolist()
    assert np.allclose(np.array([r["logits"] for r in rows], np.float32), logits, atol=2e-2, rtol=1e-2)


def test_metrics_equal_independent_count(first_run):
    tmp, job, metrics, logs = first_run
    saved = json.load(open(os.path.join(job.output.dir, "metrics.json")))
    rows = pq.read_table(os.path.join(job.output.dir, "predictions")).to_pylist()
    ok = [r for r in rows if r["error"] is None and r["label"] is not None]
    top1 = 100 * sum(r["topk_ids"][0] == r["label"] for r in ok) / len(ok)
    top5 = 100 * sum(r["label"] in r["topk_ids"] for r in ok) / len(ok)
    assert saved["images"] == 304 and saved["failed"] == 4 and saved["labelled"] == 300
    assert saved["top1"] == pytest.approx(top1) and saved["top5"] == pytest.approx(top5)
    assert metrics["top1"] == saved["top1"]
    assert saved["job"]["inference"]["batch_size"] == 48 and saved["preprocess"]["profile"] == "timm"
    for key in ("end_to_end_s", "end_to_end_images_per_s", "prep_images_per_s", "infer_images_per_s", "startup_s"):
        assert saved["timing"][key] > 0
    assert sum(saved["failed_by_reason"].values()) == 4
    assert any("top-1" in line for line in logs)


def test_rerun_reuses_cache(first_run, imagenet_flat, tiny_onnx):
    tmp, job, _, _ = first_run
    again = _job(tmp, imagenet_flat, tiny_onnx, out="out2")
    metrics = run_job(again, log=lambda m: None)
    assert metrics["shards"] == {"total": 4, "reused_parts": 0, "from_cache": 4, "prepared": 0}
    a = read_predictions(job.output.dir).drop(["logits"])
    b = read_predictions(again.output.dir).drop(["logits"])
    assert a.equals(b)


def test_changed_parameter_gets_new_cache(first_run, imagenet_flat, tiny_onnx):
    tmp, _, _, _ = first_run
    job = _job(tmp, imagenet_flat, tiny_onnx, out="out3", preprocess__interpolation="bicubic", dataset__limit=40)
    metrics = run_job(job, log=lambda m: None)
    assert metrics["shards"]["prepared"] == 1 and metrics["shards"]["from_cache"] == 0
    assert metrics["images"] == 40


def test_resume_continues_from_finished_parts(first_run, imagenet_flat, tiny_onnx):
    tmp, job, _, _ = first_run
    out = tmp / "resume"
    shutil.copytree(job.output.dir, out)
    os.unlink(out / "predictions" / "part-00002.parquet")
    open(out / "predictions" / "part-00003.parquet", "wb").write(b"half a file")  # a damaged part is redone
    logs = []
    metrics = run_job(_job(tmp, imagenet_flat, tiny_onnx, out="resume"), log=logs.append)
    assert metrics["shards"]["reused_parts"] == 2
    assert any("reusing 2 finished shards" in line for line in logs)
    assert read_predictions(str(out)).equals(read_predictions(job.output.dir))


def test_other_run_in_same_folder_is_refused(first_run, imagenet_flat, tiny_onnx):
    tmp, job, _, _ = first_run
    other = _job(tmp, imagenet_flat, tiny_onnx, output__topk=3)
    with pytest.raises(BatchclsError, match="holds predictions of a different run"):
        run_job(other, log=lambda m: None)


def test_locked_folder_is_refused(tmp_path, imagenet_flat, tiny_onnx):
    job = _job(tmp_path, imagenet_flat, tiny_onnx, dataset__limit=10)
    with RunDir(job.output.dir):
        with pytest.raises(BatchclsError, match="is in use by another run"):
            run_job(job, log=lambda m: None)


def test_unlabelled_folder(tmp_path, imagenet_flat, tiny_onnx):
    root = tmp_path / "unlabelled"
    root.mkdir()
    for name in sorted(os.listdir(imagenet_flat[0]))[:5]:
        shutil.copy(os.path.join(imagenet_flat[0], name), root / name)
    # Files named like ILSVRC2012 val images get the built-in ground truth unless labels are turned off.
    job = load_job(write_job(tmp_path, model={"name": "tiny", "onnx": tiny_onnx},
                             dataset={"root": str(root), "labels": "none"},
                             runtime={"cache_dir": str(tmp_path / "c"), "progress": False},
                             output={"dir": str(tmp_path / "o")}))
    logs = []
    metrics = run_job(job, log=logs.append)
    assert metrics["images"] == 5 and metrics["top1"] is None and metrics["labelled"] == 0
    assert any("accuracy: not available" in line for line in logs)


def test_built_dla_model_end_to_end(tmp_path, imagenet_flat):
    """model.weights instead of model.onnx: DLA-46-C is built from seeded weights, cached, and run."""
    from batchcls.models.build import build_onnx
    from batchcls.models.weights import load_weights

    root, labels = imagenet_flat
    job = load_job(write_job(tmp_path, model={"name": "dla46_c", "source": "timm", "weights": "random:0"},
                             dataset={"root": root, "labels": labels, "limit": 30},
                             runtime={"cache_dir": str(tmp_path / "cache"), "progress": False},
                             output={"dir": str(tmp_path / "out")}))
    logs = []
    metrics = run_job(job, log=logs.append)
    assert metrics["images"] == 30 and metrics["reference"]["id"] == "dla46_c.timm"
    assert any("reference" in line and "dla46_c.timm" in line for line in logs)
    built = [f for f in os.listdir(tmp_path / "cache" / "onnx") if f.endswith(".onnx")]
    assert len(built) == 1 and built[0].startswith("dla46_c-")
    rows = [r for r in read_predictions(job.output.dir).to_pylist() if r["error"] is None]
    model = build_onnx("dla46_c", load_weights("random:0", "dla46_c"))
    sess = ort.InferenceSession(model.SerializeToString())
    x = np.stack([reference_timm(os.path.join(root, r["path"])) for r in rows])
    expected = np.argsort(-sess.run(None, {"input": x})[0], axis=1, kind="stable")[:, :5]
    assert [r["topk_ids"] for r in rows] == expected.tolist()


def test_workers_holding_every_cpu_are_refused(tmp_path, imagenet_flat, tiny_onnx):
    """2 workers x {CPU: 1} on 2 CPUs would leave prep tasks queued forever: one clear line instead."""
    job = _job(tmp_path, imagenet_flat, tiny_onnx, inference__workers=2, dataset__limit=10)
    with pytest.raises(BatchclsError, match="leave none for prep tasks; give each worker a fraction"):
        run_job(job, log=lambda m: None)
    job = _job(tmp_path, imagenet_flat, tiny_onnx, out="half", inference__workers=2,
               inference__resources={"CPU": 0.5}, dataset__limit=10)
    assert run_job(job, log=lambda m: None)["images"] == 10


def test_model_that_does_not_load_stops_the_run_with_one_error(tmp_path, imagenet_flat):
    """Workers load while the first shards are prepared: their failure still ends the run, named."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    job = _job(tmp_path, imagenet_flat, str(bad), dataset__limit=10)
    with pytest.raises(BatchclsError, match=re.escape(f"model.onnx: cannot load '{bad}': ") + ".*INVALID_PROTOBUF"):
        run_job(job, log=lambda m: None)


def test_crops_that_do_not_fit_the_model_stop_the_run(tmp_path, imagenet_flat, tiny_onnx):
    job = _job(tmp_path, imagenet_flat, tiny_onnx, dataset__limit=10, preprocess__input_size=40,
               preprocess__resize_size=48)
    with pytest.raises(BatchclsError, match="crops are 3x40x40 but the model expects 3x224x224; set "
                                            "preprocess.input_size"):
        run_job(job, log=lambda m: None)  # the tiny model takes 224x224 only
