"""Label sources: built-in ILSVRC2012 ground truth and ReaL, label files in every form, class folders,
class subsets, and each refusal with its message."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest

from batchcls.data.discover import discover
from batchcls.data.labels import (BUILTIN_SOURCE, builtin_val_labels, imagenet_synsets, load_class_subset,
                                  load_real_labels, resolve_real_labels, val_number)
from batchcls.errors import JobError
from batchcls.metrics import NONFINITE_ERROR, mark_nonfinite, subset_topk
from batchcls.stages.report import real_accuracy

SYN = imagenet_synsets()
VAL_FILE = os.path.join(os.path.dirname(__file__), "..", "batchcls", "resources", "labels",
                        "ILSVRC2012_val_synsets.txt")


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").write(b"x")


def _val(k: int) -> str:
    return f"ILSVRC2012_val_{k:08d}.JPEG"


def test_builtin_ground_truth_facts():
    lines = open(VAL_FILE, encoding="utf-8").read().splitlines()
    assert len(lines) == 50_000 and lines[0] == "n01751748"
    gt = builtin_val_labels()
    assert len(gt) == 50_000 and gt[0] == 65 and SYN[65] == "n01751748"
    assert set(collections.Counter(gt).values()) == {50} and len(set(gt)) == 1000
    assert [SYN[c] for c in gt[:3]] == lines[:3]  # line k is the synset of val image k


def test_shipped_real_labels():
    real = load_real_labels()
    assert len(real) == 50_000 and sum(1 for s in real if s) == 46_837
    assert real[0] == () and real[1] == (970, 795)
    assert os.path.exists(os.path.join(os.path.dirname(VAL_FILE), "imagenet_real.LICENSE"))
    # Both files are indexed by val image number: the original label lies in the ReaL set of ~90% of the
    # scored images (a shift by one image would give ~0.1%).
    gt = builtin_val_labels()
    scored = [k for k in range(50_000) if real[k]]
    assert 89.9 < 100 * sum(gt[k] in real[k] for k in scored) / len(scored) < 90.1


def test_val_number():
    assert val_number("ILSVRC2012_val_00000001.JPEG") == 1
    assert val_number("val/n01440764/ILSVRC2012_val_00050000.png") == 50_000
    assert val_number("ILSVRC2012_val_00008726") == 8726  # Kaggle ids have no extension
    for name in ("ILSVRC2012_val_00050001.JPEG", "ILSVRC2012_val_1.JPEG", "x_ILSVRC2012_val_00000001.JPEG",
                 "ILSVRC2012_val_00000000.JPEG", "holiday.jpg"):
        assert val_number(name) is None


# ---------------------------------------------------------------- label files in every form

def _flat(tmp_path, ks=(1, 2, 3)):
    root = tmp_path / "val"
    for k in ks:
        _touch(root / _val(k))
    return root


FORMS = {
    "caffe": f"{_val(1)} 65\n{_val(2)} 970\n{_val(3)} 230\n",
    "synset": f"{_val(1)} n01751748\n{_val(2)} {SYN[970]}\n{_val(3)} {SYN[230]}\n",
    "kaggle": "ImageId,PredictionString\n"
              f"ILSVRC2012_val_00000002,{SYN[970]} 1 2 3 4 {SYN[970]} 5 6 7 8\n"
              f"ILSVRC2012_val_00000001,n01751748 10 20 30 40\nILSVRC2012_val_00000003,{SYN[230]} 1 1 2 2\n",
    "messy": f"\ufeff# val.txt, written on Windows\r\n\r\n{_val(1)}\t65\r\n  {_val(2)}    970  \r\n"
             f"# a comment\r\n{_val(3)} \t 230\r\n\r\n",
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_label_file_forms(tmp_path, form):
    root = _flat(tmp_path)
    lf = tmp_path / "labels.txt"
    lf.write_bytes(FORMS[form].encode("utf-8"))
    ds = discover(str(root), str(lf))
    assert [(s.path, s.label) for s in ds.samples] == [(_val(1), 65), (_val(2), 970), (_val(3), 230)]
    assert ds.class_source == f"label file {lf}" and ds.notes == ()


def test_paddleclas_list_relative_to_the_dataset_parent(tmp_path):
    """ILSVRC2012/val_list.txt holds 'val/ILSVRC2012_val_00000001.JPEG 65', the root is ILSVRC2012/val."""
    base = tmp_path / "ILSVRC2012"
    root = _flat(base)
    # Line 3 is written the Windows way.
    (base / "val_list.txt").write_text(f"val/{_val(1)} 65\nval/{_val(2)} 970\nval\\{_val(3)} 230\nval/{_val(9)} 1\n")
    ds = discover(str(root), str(base / "val_list.txt"))
    # No 'val/...' duplicates, no missing-file rows: each line is the file under the root; a listed file the
    # root lacks is still a sample (its row fails in prep) at the place the list names.
    assert [(s.path, s.label) for s in ds.samples] == [(_val(1), 65), (_val(2), 970), (_val(3), 230), (_val(9), 1)]


def test_label_paths_resolution_order(tmp_path):
    """As written under the root, then relative to the label file's folder, then by unique basename."""
    root = tmp_path / "data"
    _touch(root / "images" / _val(1))
    _touch(root / "sub" / _val(2))
    _touch(root / "x" / _val(3))
    lists = tmp_path / "elsewhere" / "lists"
    lists.mkdir(parents=True)
    lf = lists / "val_list.txt"
    lf.write_text(f"images/{_val(1)} 1\nother/{_val(2)} 2\n{_val(3)} 3\n")
    ds = discover(str(root), str(lf), layout="folders")
    assert [(s.path, s.label) for s in ds.samples] == [("images/" + _val(1), 1), ("sub/" + _val(2), 2),
                                                      ("x/" + _val(3), 3)]
    # Relative to the label file's folder (which lies inside the root).
    (root / "images" / "list.txt").write_text(f"{_val(1)} 4\n../sub/{_val(2)} 5\n")
    ds = discover(str(root), str(root / "images" / "list.txt"), layout="folders")
    assert {s.path: s.label for s in ds.samples if s.label is not None} == {"images/" + _val(1): 4,
                                                                         "sub/" + _val(2): 5}
    assert ds.notes[0] == "1 images are not in the label file: unlabelled"  # then: not the ground truth classes


@pytest.mark.parametrize("text,message", [
    (f"../{_val(1)} 1\n", r"labels.txt:1: '\.\./ILSVRC2012_val_00000001.JPEG' lies outside dataset.root"),
    ("/etc/passwd 1\n", r"labels.txt:1: '/etc/passwd' lies outside dataset.root"),
    (f"{_val(1)} 1\n{_val(2)} 2\n{_val(1)} 1\n", r"labels.txt:3: 'ILSVRC2012_val_00000001.JPEG' is listed twice "
                                                 r"\(lines 1 and 3\)"),
    (f"{_val(1)} 1000\n", r"labels.txt:1: class index 1000 is outside 0-999"),
    (f"{_val(1)} -1\n", r"labels.txt:1: expected '<filename> <class index>' \(0-999\), '<filename> <synset>'"),
    (f"{_val(1)}\n", r"labels.txt:1: expected '<filename> <class index>'"),
    (f"{_val(1)} n99999999\n", r"labels.txt:1: expected .*got 'ILSVRC2012_val_00000001.JPEG n99999999'"),
    ("ImageId,PredictionString\nILSVRC2012_val_00000001,\n", r"labels.txt:2: expected"),
])
def test_label_file_refusals(tmp_path, text, message):
    root = _flat(tmp_path)
    (tmp_path / "labels.txt").write_text(text)
    with pytest.raises(JobError, match=r"^dataset.labels: .*" + message):
        discover(str(root), str(tmp_path / "labels.txt"))


def test_absolute_path_inside_root_is_accepted_and_ambiguous_basename_refused(tmp_path):
    root = tmp_path / "r"
    _touch(root / "a" / "x.JPEG")
    _touch(root / "b" / "x.JPEG")
    lf = tmp_path / "l.txt"
    lf.write_text(f"{root / 'a' / 'x.JPEG'} 3\n")
    assert {s.path: s.label for s in discover(str(root), str(lf)).samples}["a/x.JPEG"] == 3
    lf.write_text("x.JPEG 3\n")
    with pytest.raises(JobError, match=r"l.txt:1: 'x.JPEG' matches 2 files under the root \(a/x.JPEG, b/x.JPEG\)"):
        discover(str(root), str(lf))


# ---------------------------------------------------------------- built-in ground truth and folders

def test_flat_val_names_get_builtin_labels(tmp_path):
    root = _flat(tmp_path, ks=(1, 2, 50_000))
    _touch(root / "holiday.jpg")
    ds = discover(str(root))
    gt = builtin_val_labels()
    assert [(s.path, s.label) for s in ds.samples] == [
        (_val(1), 65), (_val(2), gt[1]), (_val(50_000), gt[49_999]), ("holiday.jpg", None)]
    assert ds.class_source == BUILTIN_SOURCE == "built-in ILSVRC2012 validation ground truth"
    assert ds.notes == ("1 images are not named ILSVRC2012_val_NNNNNNNN: unlabelled",)
    off = discover(str(root), "none")
    assert [s.label for s in off.samples] == [None] * 4 and off.class_source.startswith("none")
    lf = tmp_path / "l.txt"
    lf.write_text(f"{_val(1)} 3\n")
    ds = discover(str(root), str(lf))
    assert ds.samples[0].label == 3  # an explicit label file always wins, but not silently
    assert any(n.startswith(f"WARNING: images named like ILSVRC2012 val images: 1 of 1 have another class in the "
                            f"label file than in the built-in ground truth (first: {_val(1)})") for n in ds.notes)
    lf.write_text(f"{_val(1)} 65\n{_val(2)} {gt[1]}\n")
    assert not any(n.startswith("WARNING") for n in discover(str(root), str(lf)).notes)


def test_numeric_class_folders_are_class_indices(tmp_path):
    """ImageNet-V2: folder '10' is class 10, not the third name of a sorted listing."""
    for c in (0, 1, 2, 10, 100, 999):
        _touch(tmp_path / str(c) / f"img{c}.jpeg")
    ds = discover(str(tmp_path))
    assert {s.path: s.label for s in ds.samples} == {f"{c}/img{c}.jpeg": c for c in (0, 1, 2, 10, 100, 999)}
    assert ds.class_source == "numeric class folders (folder name = class index)" and ds.notes == ()
    _touch(tmp_path / "1000" / "a.jpeg")
    with pytest.raises(JobError, match=r"dataset.root: .*1000: numeric class folder '1000' is outside 0-999"):
        discover(str(tmp_path))


def test_synset_folders_checked_against_builtin(tmp_path):
    _touch(tmp_path / SYN[65] / _val(1))  # right: val 1 is n01751748
    _touch(tmp_path / SYN[0] / _val(2))  # wrong folder
    _touch(tmp_path / SYN[0] / "own.jpg")  # not a val name: nothing to check
    ds = discover(str(tmp_path))
    assert ds.class_source == "ImageNet synset folders"
    assert {s.path: s.label for s in ds.samples} == {f"{SYN[65]}/{_val(1)}": 65, f"{SYN[0]}/{_val(2)}": 0,
                                                     f"{SYN[0]}/own.jpg": 0}
    assert ds.disagree == {f"{SYN[0]}/{_val(2)}"}


def test_other_folders_sorted_with_a_note(tmp_path):
    _touch(tmp_path / "zebra" / "1.jpg")
    _touch(tmp_path / "ant" / "2.jpg")
    ds = discover(str(tmp_path))
    assert [s.label for s in ds.samples] == [0, 1] and "by sorted name" not in ds.class_source
    assert "position in the sorted list of 2 folder names, which may not match the model's classes" in ds.notes[0]


# ---------------------------------------------------------------- ReaL and class subsets

def test_real_labels_resolution_and_refusals(tmp_path):
    assert resolve_real_labels("none", [_val(1)]) == (None, "off (dataset.real_labels: none)")
    assert resolve_real_labels(None, ["holiday.jpg"])[0] is None
    real, source = resolve_real_labels(None, ["n01440764/" + _val(3)])
    assert len(real) == 50_000 and source.startswith("built-in ImageNet-ReaL")
    p = tmp_path / "real.json"
    p.write_text(json.dumps([[1], [], [2, 3]]))
    assert resolve_real_labels(str(p), ["x.jpg"]) == (((1,), (), (2, 3)), f"ReaL label file {p}")
    for bad, msg in ((json.dumps({"a": 1}), "expected a JSON list"), ("[[1], [1000]]", r"entry 2 \(ILSVRC2012_val_"
                     r"00000002\) must be a list of class indices 0-999"), ("[[1", "cannot be read as JSON")):
        p.write_text(bad)
        with pytest.raises(JobError, match="dataset.real_labels: .*real.json: " + msg):
            load_real_labels(str(p))


def test_real_accuracy_matches_independent_count():
    rng = np.random.default_rng(3)
    real = tuple(tuple(sorted(set(rng.integers(0, 20, rng.integers(0, 4)).tolist()))) for _ in range(300))
    paths = [_val(k) for k in range(1, 301)] + ["holiday.jpg", _val(40_000)]
    ids = rng.integers(0, 20, (len(paths), 5))
    ok = rng.random(len(paths)) > 0.1
    ids[~ok] = -1
    got = real_accuracy(paths, ok, ids, real)
    scored = [i for i in range(300) if real[i]]
    ok_scored = [i for i in scored if ok[i]]
    top1 = sum(int(ids[i, 0]) in real[i] for i in ok_scored)
    top5 = sum(bool(set(ids[i].tolist()) & set(real[i])) for i in ok_scored)
    assert got["val_images"] == 301 and got["scored"] == len(ok_scored) and got["scored_all"] == len(scored)
    assert got["empty_sets"] == 301 - len(scored)  # val 40000 lies beyond this file: not scored
    assert got["top1"] == pytest.approx(100 * top1 / len(ok_scored))
    assert got["top5"] == pytest.approx(100 * top5 / len(ok_scored))
    assert got["top5_all"] == pytest.approx(100 * top5 / len(scored))


def test_class_subset_file(tmp_path):
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(1000, 200, replace=False).tolist())
    p = tmp_path / "subset.txt"
    p.write_text("\ufeff# ImageNet-A style\n" + "".join(f"{SYN[c]}\n" if c % 2 else f"{c}\r\n" for c in chosen))
    assert load_class_subset(str(p)) == tuple(chosen)
    for text, msg in ((f"{SYN[3]}\n3\n", r"subset.txt:2: class 3 is listed twice \(lines 1 and 2\)"),
                      ("n99999999\n", r"subset.txt:1: 'n99999999' is neither an ImageNet synset"),
                      ("1000\n", "subset.txt:1: '1000' is neither"), ("# nothing\n", "lists no classes")):
        p.write_text(text)
        with pytest.raises(JobError, match="dataset.class_subset: .*" + msg):
            load_class_subset(str(p))


def test_subset_topk_ranks_within_the_subset_in_model_class_ids():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((7, 1000)).astype(np.float32)
    subset = np.array(sorted(rng.choice(1000, 200, replace=False)))
    ids, probs = subset_topk(logits, 5, subset)
    sub = logits[:, subset]
    expected = subset[np.argsort(-sub, axis=1)[:, :5]]
    assert ids.tolist() == expected.tolist() and set(ids.ravel()) <= set(subset.tolist())
    e = np.exp(sub - sub.max(axis=1, keepdims=True))
    assert np.allclose(probs[:, 0], (e / e.sum(axis=1, keepdims=True)).max(axis=1), rtol=1e-5)


def test_mark_nonfinite_keeps_rows_aligned():
    errors = ["", "prep: truncated", "", "", "prep: empty", ""]
    finite = np.array([True, False, True, False])
    assert mark_nonfinite(errors, finite) == ["", "prep: truncated", NONFINITE_ERROR, "", "prep: empty",
                                              NONFINITE_ERROR]
    with pytest.raises(AssertionError):
        mark_nonfinite(errors, finite[:3])


def test_labels_outside_the_models_outputs_are_refused(tmp_path):
    from batchcls.data.labels import check_label_range
    from batchcls.plan import model_outputs
    from batchcls.synthetic import tiny_classifier_onnx

    assert model_outputs(tiny_classifier_onnx(str(tmp_path / "m.onnx"), num_classes=10)) == 10
    root = _flat(tmp_path)
    lf = tmp_path / "labels.txt"
    lf.write_text(f"{_val(1)} 3\n{_val(2)} 9\n{_val(3)} 10\n")
    ds = discover(str(root), str(lf))
    check_label_range(ds.samples, 11, ds.class_source, ds.label_lines)
    with pytest.raises(JobError, match=r"dataset.labels: .*labels.txt:3: class 10 is outside the model's 10 "
                                       r"outputs \(0-9\)"):
        check_label_range(ds.samples, 10, ds.class_source, ds.label_lines)
    with pytest.raises(JobError, match=r"ILSVRC2012_val_00000001.JPEG \(built-in .*\): class 65 is outside"):
        ds = discover(str(root))
        check_label_range(ds.samples, 10, ds.class_source, ds.label_lines)


def test_escaping_label_path_stops_the_run_before_any_work(tmp_path, tiny_onnx, capsys):
    """Through the CLI: one line naming the job, the label file, the line and the path; exit 2; nothing written."""
    from batchcls.run import main

    from conftest import write_job

    root = _flat(tmp_path)
    (tmp_path / "val_list.txt").write_text(f"{_val(1)} 1\n../../secret.JPEG 2\n")
    job = write_job(tmp_path, model={"name": "tiny", "onnx": tiny_onnx},
                    dataset={"root": str(root), "labels": str(tmp_path / "val_list.txt")},
                    runtime={"cache_dir": str(tmp_path / "cache")}, output={"dir": str(tmp_path / "out")})
    assert main([job, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {job}: dataset.labels: {tmp_path / 'val_list.txt'}:2: '../../secret.JPEG' lies "
                   f"outside dataset.root {str(root)!r}; a label file may only name images under the root"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_job_fields(tmp_path, tiny_onnx):
    from batchcls.config import load_job

    from conftest import write_job

    root = _flat(tmp_path)
    base = {"model": {"name": "tiny", "onnx": tiny_onnx}, "output": {"dir": str(tmp_path / "o")}}
    job = load_job(write_job(tmp_path, dataset={"root": str(root), "labels": "None", "real_labels": "NONE"}, **base))
    assert job.dataset.labels == "none" and job.dataset.real_labels == "none" and job.dataset.class_subset is None
    for field in ("real_labels", "class_subset"):
        with pytest.raises(JobError, match=f"dataset.{field}: 'nowhere.txt' does not exist"):
            load_job(write_job(tmp_path, dataset={"root": str(root), field: "nowhere.txt"}, **base))


def test_other_folders_map_onto_a_class_subset_in_sorted_order(tmp_path):
    for name in ("zebra", "ant", "mole"):
        _touch(tmp_path / name / "1.jpg")
    ds = discover(str(tmp_path), class_subset=(5, 70, 900))
    assert {s.path: s.label for s in ds.samples} == {"ant/1.jpg": 5, "mole/1.jpg": 70, "zebra/1.jpg": 900}
    assert ds.class_source.endswith("onto dataset.class_subset")
    with pytest.raises(JobError, match="dataset.class_subset: lists 2 classes but dataset.root has 3 class folders"):
        discover(str(tmp_path), class_subset=(5, 70))


def test_plan_reports_folders_that_contradict_the_builtin_ground_truth(tmp_path, tiny_onnx):
    from batchcls.config import load_job
    from batchcls.plan import make_plan
    from batchcls.stages.report import format_report

    from conftest import write_job

    root = tmp_path / "val"
    gt = builtin_val_labels()
    for k in range(1, 9):
        _touch(root / SYN[gt[k - 1] if k != 5 else (gt[4] + 1) % 1000] / _val(k))
    job = load_job(write_job(tmp_path, model={"name": "tiny", "onnx": tiny_onnx}, dataset={"root": str(root)},
                             output={"dir": str(tmp_path / "o")}))
    plan = make_plan(job, tiny_onnx)
    info = plan.label_info
    assert info["source"] == "ImageNet synset folders" and info["disagree_builtin"] == 1
    assert info["real_source"].startswith("built-in ImageNet-ReaL") and plan.real_labels is not None
    text = format_report({"images": 8, "succeeded": 8, "failed": 0, "labelled": 8, "top1": None, "top5": None,
                          "labels": info}, None, "t")
    assert f"WARNING: 1 images lie in a class folder other than their built-in ILSVRC2012 ground truth (first: " \
           f"{SYN[(gt[4] + 1) % 1000]}/{_val(5)}): the class folders were built wrongly" in text


def test_plan_warns_of_a_label_file_against_the_ground_truth_unless_the_images_are_generated(tmp_path, tiny_onnx):
    from batchcls.config import load_job
    from batchcls.data.labels import NOT_GROUND_TRUTH
    from batchcls.plan import make_plan

    from conftest import write_job

    root = tmp_path / "val"
    for k in (1, 2):
        _touch(root / _val(k))
    labels = tmp_path / "val.txt"
    labels.write_text(f"{_val(1)} 1\n{_val(2)} 2\n")  # not the ground truth's classes
    sections = dict(model={"name": "tiny", "onnx": tiny_onnx}, output={"dir": str(tmp_path / "o")})
    job = load_job(write_job(tmp_path, dataset={"root": str(root), "labels": str(labels)}, **sections))
    assert [n for n in make_plan(job, tiny_onnx).label_info["notes"] if n.startswith(NOT_GROUND_TRUTH)]
    generated = load_job(write_job(tmp_path, dataset={"root": str(root), "labels": str(labels),
                                                      "generate": {"count": 2, "classes": 2}}, **sections))
    assert not [n for n in make_plan(generated, tiny_onnx).label_info["notes"] if n.startswith(NOT_GROUND_TRUTH)]
