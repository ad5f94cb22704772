"""Labels end to end through a local Ray cluster: numeric class folders (ImageNet-V2) with a model that
emits NaN/Inf for some images, and built-in ground truth with ReaL and a 200-class subset; every figure
against an independent computation from onnxruntime on the reference preprocessing."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from batchcls.config import load_job
from batchcls.data.labels import BUILTIN_SOURCE, builtin_val_labels
from batchcls.errors import BatchclsError
from batchcls.metrics import NONFINITE_ERROR
from batchcls.pipeline import run_job
from batchcls.schema import build_table, part_path, read_predictions, write_part
from batchcls.stages.infer import InferWorker
from batchcls.stages.report import compute_metrics, format_report
from batchcls.synthetic import encode, make_rgb, nonfinite_classifier_onnx

from conftest import reference_timm, write_job

NAN_ABOVE, INF_BELOW = 1.8, -1.8  # normalised means of a flat 250 image (~2.3) and of a flat 3 image (~-1.9)


def _logits(model: str, files: list[str]) -> np.ndarray:
    sess = ort.InferenceSession(model)
    return sess.run(None, {"input": np.stack([reference_timm(f) for f in files])})[0]


def _job(tmp_path, model, out="out", **dataset):
    return load_job(write_job(tmp_path, model={"name": "tiny", "onnx": model}, dataset=dataset,
                              inference={"batch_size": 8},
                              runtime={"shard_size": 16, "cache_dir": str(tmp_path / "cache"), "progress": False},
                              output={"dir": str(tmp_path / out)}))


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    return nonfinite_classifier_onnx(str(tmp_path_factory.mktemp("nan") / "nan.onnx"), NAN_ABOVE, INF_BELOW)


def _write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").write(encode(rgb))


def test_infer_worker_turns_nonfinite_logits_into_errors(nan_model):
    rng = np.random.default_rng(0)
    images = rng.integers(90, 140, (5, 3, 224, 224), dtype=np.uint8)
    images[1] = 250
    images[3] = 3
    worker = InferWorker(nan_model, "onnxruntime", {}, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 4, 5, True)
    out = worker({"indices": np.arange(7, dtype=np.int32), "errors": ["", "prep: x", "", "", "", "prep: y", ""],
                  "images": images})
    assert out["errors"] == ["", "prep: x", NONFINITE_ERROR, "", NONFINITE_ERROR, "prep: y", ""]
    assert out["topk_ids"].shape == (3, 5) and out["logits"].shape == (3, 1000) and out["nonfinite"] == 2
    assert np.isfinite(out["logits"].astype(np.float32)).all()
    every = worker({"indices": np.arange(2, dtype=np.int32), "errors": ["", ""], "images": images[[1, 3]]})
    assert every["errors"] == [NONFINITE_ERROR] * 2 and every["topk_ids"].shape == (0, 5)


def _write_dump(out: str, labels, errors, ids) -> None:
    n = len(labels)
    probs = np.full(ids.shape, 0.1, np.float32)
    write_part(part_path(out, 0), build_table(np.arange(n), [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n)],
                                              labels, errors, ids, probs))


def test_compute_metrics_counts_every_labelled_sample(tmp_path):
    rng = np.random.default_rng(4)
    n = 70
    labels = [None if i % 10 == 3 else int(c) for i, c in enumerate(rng.integers(0, 6, n))]
    errors = ["prep: truncated" if i % 7 == 0 else NONFINITE_ERROR if i % 11 == 0 else "" for i in range(n)]
    ok = np.array([not e for e in errors])
    ids = rng.integers(0, 6, (int(ok.sum()), 5))
    _write_dump(str(tmp_path), labels, errors, ids)
    subset = (0, 1, 2, 3, 4)  # label 5 is excluded
    real = tuple((i % 6,) if i % 3 else () for i in range(n))
    m = compute_metrics(str(tmp_path), subset, real)
    full = np.full((n, 5), -1)
    full[ok] = ids
    inc = [i for i in range(n) if labels[i] is not None and labels[i] in subset]
    inc_ok = [i for i in inc if ok[i]]
    top1 = sum(full[i, 0] == labels[i] for i in inc_ok)
    top5 = sum(labels[i] in full[i] for i in inc_ok)
    assert (m["labelled"], m["labelled_all"]) == (len(inc_ok), len(inc))
    assert m["excluded"] == sum(1 for v in labels if v == 5) and m["unlabelled"] == labels.count(None)
    assert m["top1"] == pytest.approx(100 * top1 / len(inc_ok)) and m["top5"] == pytest.approx(100 * top5 / len(inc_ok))
    assert m["top1_all"] == pytest.approx(100 * top1 / len(inc))
    assert m["top5_all"] == pytest.approx(100 * top5 / len(inc))
    assert m["nonfinite"] == errors.count(NONFINITE_ERROR) and m["bad_inputs"] == errors.count("prep: truncated")
    scored = [i for i in range(n) if real[i] and ok[i]]
    assert m["real"]["scored"] == len(scored) and m["real"]["top1"] == pytest.approx(
        100 * sum(full[i, 0] in real[i] for i in scored) / len(scored))
    text = format_report({**m, "labels": {"source": "x", "real_source": "y", "class_subset": 5, "notes": ["z"]}},
                         None, "t")
    assert f"labelled {len(inc)}, unlabelled {labels.count(None)}, excluded {m['excluded']} (class outside the " \
           "5-class subset)" in text and "NOTE: z" in text
    assert f"{len(inc) - len(inc_ok)} failures count as misses" in text


def test_report_when_every_labelled_image_failed(tmp_path):
    _write_dump(str(tmp_path), [1, 2, 3], [NONFINITE_ERROR] * 3, np.zeros((0, 5), np.int64))
    m = compute_metrics(str(tmp_path))
    assert m["top1"] is None and m["top1_all"] == 0.0 and m["labelled_all"] == 3
    lines = format_report(m, None, "t").splitlines()
    assert lines[1].startswith("WARNING: 3 images got non-finite model outputs")
    assert "accuracy: not available (no labelled, successful samples)" in lines
    assert any(line.startswith("all") and "0.000" in line and "3 failures count as misses" in line for line in lines)


def test_numeric_folders_with_nonfinite_outputs_and_bad_files(tmp_path, nan_model, ray_local):
    """Folder '417' is class 417; NaN/Inf outputs and a corrupt file are failures that count as misses."""
    staging = tmp_path / "staging"
    files = [str(staging / f"g{i:02d}.JPEG") for i in range(20)]
    for i, f in enumerate(files):
        _write(f, make_rgb(120, 90, seed=100 + i))
    pred = _logits(nan_model, files).argmax(axis=1)
    root = tmp_path / "v2"
    labels = {}
    for i, f in enumerate(files):
        cls = int(pred[i]) if i % 2 == 0 else (int(pred[i]) + 1) % 1000  # half of them right
        rel = f"{cls}/g{i:02d}.JPEG"
        os.makedirs(root / str(cls), exist_ok=True)
        os.replace(f, root / rel)
        labels[rel] = cls
    for i, value in enumerate([250, 250, 250, 3, 3]):  # NaN, NaN, NaN, Inf, Inf
        _write(str(root / "7" / f"flat{i}.JPEG"), np.full((90, 120, 3), value, np.uint8))
        labels[f"7/flat{i}.JPEG"] = 7
    (root / "7" / "corrupt.JPEG").write_bytes(b"not a jpeg")
    labels["7/corrupt.JPEG"] = 7
    folders = sorted(os.listdir(root))
    assert folders != sorted(folders, key=int)  # labelling by sorted name would be wrong here

    logs = []
    metrics = run_job(_job(tmp_path, nan_model, root=str(root)), log=logs.append)
    rows = read_predictions(str(tmp_path / "out")).to_pylist()
    assert {r["path"]: r["label"] for r in rows} == labels
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert sorted(errors) == ["7/corrupt.JPEG"] + [f"7/flat{i}.JPEG" for i in range(5)]
    assert all(errors[f"7/flat{i}.JPEG"] == NONFINITE_ERROR for i in range(5))
    assert metrics["nonfinite"] == 5 and metrics["bad_inputs"] == 1 and metrics["failed"] == 6
    hits = sum(1 for r in rows if r["error"] is None and r["topk_ids"][0] == r["label"])
    assert hits == 10
    assert metrics["top1"] == pytest.approx(100 * 10 / 20) and metrics["labelled"] == 20
    assert metrics["top1_all"] == pytest.approx(100 * 10 / 26) and metrics["labelled_all"] == 26
    assert metrics["labels"]["source"] == "numeric class folders (folder name = class index)"
    report = next(line for line in logs if line.startswith("== tiny"))
    lines = report.splitlines()
    assert lines[1].startswith("WARNING: 5 images got non-finite model outputs (NaN/Inf logits)")
    assert "failed 6 (1 bad inputs, 5 non-finite outputs)" in lines[2]
    assert any(line.startswith("all") and "38.462" in line and "6 failures count as misses" in line
               for line in lines)
    saved = json.load(open(tmp_path / "out" / "metrics.json"))
    assert saved["top1_all"] == metrics["top1_all"] and saved["real"] is None


def test_builtin_labels_real_and_class_subset(tmp_path, tiny_onnx, ray_local):
    root = tmp_path / "val"
    names = [f"ILSVRC2012_val_{k:08d}.JPEG" for k in range(1, 25)]
    for k, n in enumerate(names, 1):
        _write(str(root / n), make_rgb(120, 90, seed=k))
    _write(str(root / "holiday.jpg"), make_rgb(90, 120, seed=99))
    (root / "ILSVRC2012_val_00000025.JPEG").write_bytes(b"")
    gt = builtin_val_labels()
    rng = np.random.default_rng(5)
    inside = {gt[k - 1] for k in range(1, 13)}
    outside = {gt[k - 1] for k in range(13, 25)} - inside
    others = [c for c in rng.permutation(1000).tolist() if c not in inside | outside]
    subset = sorted(inside | set(others[:200 - len(inside)]))
    (tmp_path / "subset.txt").write_text("".join(f"{c}\n" for c in subset))

    logits = _logits(tiny_onnx, [str(root / n) for n in names])
    sub = np.array(subset)
    top5 = sub[np.argsort(-logits[:, sub], axis=1, kind="stable")[:, :5]]
    real = []
    for k in range(1, 31):  # empty sets; a set holding the subset's top-1; one holding the 3rd; a miss
        p = top5[k - 1].tolist() if k <= 24 else [1, 2, 3, 4, 5]
        real.append([] if k % 4 == 0 else [p[0]] if k % 4 == 1 else [p[2], 999] if k % 4 == 2 else [p[4] + 1])
    (tmp_path / "real.json").write_text(json.dumps(real))

    logs = []
    job = _job(tmp_path, tiny_onnx, root=str(root), real_labels=str(tmp_path / "real.json"),
               class_subset=str(tmp_path / "subset.txt"))
    metrics = run_job(job, log=logs.append)
    rows = {r["path"]: r for r in read_predictions(job.output.dir).to_pylist()}
    assert [rows[n]["topk_ids"] for n in names] == top5.tolist()
    assert rows["holiday.jpg"]["label"] is None and rows["holiday.jpg"]["error"] is None
    assert [rows[n]["label"] for n in names] == [gt[k - 1] for k in range(1, 25)]
    ok = [k for k in range(1, 25) if gt[k - 1] in subset]
    assert metrics["excluded"] == 24 - len(ok) + (0 if gt[24] in subset else 1) and metrics["unlabelled"] == 1
    assert metrics["top1"] == pytest.approx(100 * sum(top5[k - 1, 0] == gt[k - 1] for k in ok) / len(ok))
    scored = [k for k in range(1, 25) if real[k - 1]]
    r1 = sum(top5[k - 1, 0] in real[k - 1] for k in scored)
    r5 = sum(bool(set(top5[k - 1].tolist()) & set(real[k - 1])) for k in scored)
    assert (r1, r5) == (6, 12)
    # val 25 (empty file) failed: its non-empty set counts in scored_all only.
    assert metrics["real"]["scored"] == len(scored) == 18 and metrics["real"]["scored_all"] == 19
    assert metrics["real"]["empty_sets"] == 6 and metrics["real"]["val_images"] == 25
    assert metrics["real"]["top1"] == pytest.approx(100 * r1 / 18) and metrics["real"]["top5"] == pytest.approx(
        100 * r5 / 18)
    info = metrics["labels"]
    assert info["source"] == BUILTIN_SOURCE and info["class_subset"] == 200
    assert info["real_source"] == f"ReaL label file {tmp_path / 'real.json'}"
    assert any("1 images are not named ILSVRC2012_val_NNNNNNNN: unlabelled" in n for n in info["notes"])
    report = next(line for line in logs if line.startswith("== tiny"))
    assert "labels: built-in ILSVRC2012 validation ground truth" in report and "18 scored" in report
    assert "WARNING" not in report
    # The subset changes the predictions: a run with another subset may not reuse these parts.
    (tmp_path / "subset2.txt").write_text("".join(f"{c}\n" for c in subset[:150]))
    other = _job(tmp_path, tiny_onnx, root=str(root), real_labels=str(tmp_path / "real.json"),
                 class_subset=str(tmp_path / "subset2.txt"))
    with pytest.raises(BatchclsError, match="holds predictions of a different run"):
        run_job(other, log=lambda m: None)
