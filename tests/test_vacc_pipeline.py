"""Whole jobs on the vacc backend through a local Ray cluster with `runtime.resources: {vacc: 2}`, on
the vaststreamx test double: distinct dies, both preprocessing modes, probs and logits models,
and each error the card can raise, checked against an independent OpenCV + onnxruntime computation."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from batchcls.config import load_job
from batchcls.errors import BatchclsError
from batchcls.metrics import softmax
from batchcls.pipeline import run_job
from batchcls.schema import read_predictions
from batchcls.synthetic import generate_imagenet_folder
from batchcls.transforms import shipped_vdsp_params

from conftest import reference_timm, write_bad_files, write_job
from vacc_double import compiled_models, use_fake_sdk

VDSP = shipped_vdsp_params()["timm-dla34"]
CFG = json.load(open(VDSP))["OpConfig"]


@pytest.fixture(scope="module")
def vacc_env(tmp_path_factory, tiny_onnx):
    """Fake compiled models, 40 JPEGs (+ bad files), and a local cluster started as a job with
    runtime.resources {vacc: 2} starts it, with the double on the workers' PYTHONPATH."""
    import ray

    from batchcls.cluster import init_ray

    use_fake_sdk()
    tmp = tmp_path_factory.mktemp("vaccjob")
    os.environ["FAKE_VSX_FAIL_ONCE"] = str(tmp / "fail-once")  # the workers see it from the start
    models = compiled_models(str(tmp / "models"), tiny_onnx)
    root = str(tmp / "val")
    labels = generate_imagenet_folder(root, 40, classes=4, seed=3)
    write_bad_files(root, os.path.join(root, "ILSVRC2012_val_00000001.JPEG"))
    if ray.is_initialized():
        ray.shutdown()
    env = {"models": models, "root": root, "labels": labels, "tmp": tmp}
    job = _job(env, "probe")
    assert init_ray(job)
    assert ray.cluster_resources().get("vacc") == 2
    yield env
    ray.shutdown()
    os.environ.pop("FAKE_VSX_FAIL_ONCE", None)


def _job(env, out, model="logits", **over):
    sections = {"model": {"name": "dla34", "source": "timm", "vacc": env["models"][model]},
                "dataset": {"root": env["root"], "labels": env["labels"]},
                "preprocess": {},
                "inference": {"backend": "vacc", "batch_size": 8, "workers": 2, "resources": {"vacc": 1}},
                "runtime": {"shard_size": 16, "num_cpus": 2, "resources": {"vacc": 2},
                            "cache_dir": str(env["tmp"] / "cache"), "progress": False},
                "output": {"dir": str(env["tmp"] / out), "save_logits": True}}
    for key, value in over.items():
        section, field = key.split("__")
        sections[section][field] = value
    folder = env["tmp"] / f"job-{out}"
    folder.mkdir(exist_ok=True)
    return load_job(write_job(folder, **sections))


def _card_input(path: str) -> np.ndarray:
    """Independently: what the vendor's script sends and the card's vdsp op makes of it, in float32."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    if h % 2 or w % 2:
        bgr = cv2.resize(bgr, (w // 2 * 2, h // 2 * 2))
    rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (CFG["ResizeWidth"], CFG["ResizeHeight"]))
    crop = rgb[CFG["CropY"]:CFG["CropY"] + 224, CFG["CropX"]:CFG["CropX"] + 224].astype(np.float32) / 255
    return ((crop - np.array(CFG["Mean"], np.float32)) / np.array(CFG["Std"], np.float32)).transpose(2, 0, 1)


def _ok_rows(job):
    return [r for r in read_predictions(job.output.dir).to_pylist() if r["error"] is None]


def test_on_device_two_workers_distinct_dies_equal_independent_computation(vacc_env, tiny_onnx):
    job = _job(vacc_env, "ondev")
    logs = []
    metrics = run_job(job, log=logs.append)
    assert sorted(w["die"] for w in metrics["workers"]) == [0, 1]
    assert all(w["on_device"] for w in metrics["workers"])
    assert metrics["images"] == 44 and metrics["failed"] == 4
    assert any("assumed logits" in line for line in logs)
    rows = _ok_rows(job)
    x = np.stack([_card_input(os.path.join(vacc_env["root"], r["path"])) for r in rows])
    want = ort.InferenceSession(tiny_onnx).run(None, {"input": x})[0]
    got = np.array([r["logits"] for r in rows], np.float32)
    assert np.allclose(got, want, atol=3e-2, rtol=1e-2)
    assert [r["topk_ids"][0] for r in rows] == np.argmax(want, axis=1).tolist()
    labelled = [r for r in rows if r["label"] is not None]
    top1 = 100 * np.mean([r["topk_ids"][0] == r["label"] for r in labelled])
    assert metrics["top1"] == pytest.approx(top1)


def test_host_geometry_probs_model_keeps_the_cards_probabilities(vacc_env, tiny_onnx, capsys):
    """preprocess.on_device false: the timm profile crops on the host, the card normalises with the
    JSON's mean/std; the model ends in softmax, so top-k probabilities are the card's, not softmaxed twice.
    Run as `python -m batchcls.run JOB --result-txt FILE`."""
    from batchcls.run import main

    job = _job(vacc_env, "host", model="probs", preprocess__on_device=False, preprocess__profile="timm",
               inference__workers=1)
    txt = str(vacc_env["tmp"] / "result.txt")
    assert main([job.path, "--no-progress", "--result-txt", txt]) == 0
    out = capsys.readouterr().out
    assert "model.outputs: assumed probs" in out and "result.txt: 40 images written" in out
    metrics = json.load(open(os.path.join(job.output.dir, "metrics.json")))
    assert metrics["workers"][0]["on_device"] is False
    assert len(open(txt).read().splitlines()) == 5 * 40
    rows = _ok_rows(job)
    x = np.stack([reference_timm(os.path.join(vacc_env["root"], r["path"]), mean=CFG["Mean"], std=CFG["Std"])
                  for r in rows])
    ref = softmax(ort.InferenceSession(tiny_onnx).run(None, {"input": x})[0])
    for r, p in zip(rows, ref):
        tol = 2e-3 * p.max()
        assert np.allclose(r["topk_probs"], p[r["topk_ids"]], atol=tol)  # the model's own probabilities
        assert min(r["topk_probs"]) >= np.sort(p)[-5] - tol  # and the five largest of them


def test_set_device_failure_stops_the_run_with_one_line(vacc_env):
    with pytest.raises(BatchclsError, match=r"inference.devices: no die 7 on host .*set_device returned -1"):
        run_job(_job(vacc_env, "nodie", inference__devices=[7], inference__workers=1), log=lambda m: None)


def test_empty_op_list_names_the_json(vacc_env):
    bad = vacc_env["tmp"] / "new-vdsp_params.json"
    spec = json.load(open(VDSP))
    bad.write_text(json.dumps({**spec, "OpType": "FUSION_OP_NOT_IN_THIS_SDK"}))
    with pytest.raises(BatchclsError, match=r"preprocess.vdsp_params: '.*new-vdsp_params.json' gives no vdsp operator"):
        run_job(_job(vacc_env, "noops", preprocess__vdsp_params=str(bad), preprocess__on_device=False,
                     inference__workers=1), log=lambda m: None)


def test_a_run_that_fails_on_the_card_replaces_the_worker(vacc_env, monkeypatch):
    """The first run_sync anywhere fails: the shard and die are named, the worker is replaced, and the
    run ends with every image in the dump once."""
    flag = vacc_env["tmp"] / "fail-once"
    flag.write_text("1")
    # The workers read it from their environment: the flag path was set before the cluster started.
    assert os.environ.get("FAKE_VSX_FAIL_ONCE") == str(flag)
    logs = []
    job = _job(vacc_env, "fail", inference__workers=1)
    metrics = run_job(job, log=logs.append)
    assert not flag.exists()
    assert any("vacc die " in line and "run_sync failed" in line and line.startswith("shard ") for line in logs)
    assert any("replaced it" in line for line in logs)
    table = read_predictions(job.output.dir)
    assert sorted(table["index"].to_pylist()) == list(range(44)) and metrics["failed"] == 4


def test_bench_vacc_runs_one_instance_per_die(vacc_env, capsys):
    from batchcls.bench import main

    argv = [vacc_env["models"]["logits"], "--backend", "vacc", "--vdsp-params", "timm-dla34", "-i", "2", "-b", "4",
            "--count", "16", "--warmup", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert sorted(w["die"] for w in summary["workers"]) == [0, 1] and summary["resources"] == {"vacc": 1.0}
    assert summary["images"] == 16 and "(vacc die " in out
    assert main([vacc_env["models"]["logits"] + "x", "--backend", "vacc", "--vdsp-params", "timm-dla34"]) == 2
    assert "modx.so' does not exist" in capsys.readouterr().err
