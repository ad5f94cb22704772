"""Sample discovery: both ILSVRC2012 val layouts, labels, stable order, even subsets."""

from __future__ import annotations

import os

import pytest

from batchcls.data.discover import discover, imagenet_class_names, imagenet_synsets, select
from batchcls.errors import JobError


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").write(b"x")


def test_shipped_labels():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and list(synsets) == sorted(synsets)
    assert synsets[0] == "n01440764" and imagenet_class_names()[0] == "tench, Tinca tinca"
    assert len(imagenet_class_names()) == 1000


def test_flat_with_label_file(tmp_path):
    names = ["ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000001.JPEG", "a b é.jpg", "notes.txt"]
    for n in names:
        _touch(tmp_path / n)
    labels = tmp_path / "val_label.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000003.JPEG 970\na b é.jpg 1\n"
                      "ILSVRC2012_val_00000009.JPEG 5\n")
    ds = discover(str(tmp_path), str(labels))
    assert ds.layout == "flat"
    got = [(s.index, s.path, s.label) for s in ds.samples]
    # A file listed in the label file but missing is still a sample: it fails in prep, never vanishes.
    assert got == [(0, "ILSVRC2012_val_00000001.JPEG", 65), (1, "ILSVRC2012_val_00000003.JPEG", 970),
                   (2, "ILSVRC2012_val_00000009.JPEG", 5), (3, "a b é.jpg", 1)]


def test_flat_without_labels(tmp_path):
    for i in range(3):
        _touch(tmp_path / f"x{i}.JPEG")
    ds = discover(str(tmp_path))
    assert [s.label for s in ds.samples] == [None] * 3 and not ds.labelled


def test_synset_folders(tmp_path):
    synsets = imagenet_synsets()
    _touch(tmp_path / synsets[999] / "ILSVRC2012_val_00000002.JPEG")
    _touch(tmp_path / synsets[0] / "ILSVRC2012_val_00000293.JPEG")
    _touch(tmp_path / synsets[0] / "ILSVRC2012_val_00000001.JPEG")
    os.makedirs(tmp_path / synsets[0] / "x.JPEG")  # a directory named like an image is a (failing) sample
    ds = discover(str(tmp_path))
    assert ds.layout == "folders" and ds.class_source == "ImageNet synset folders"
    assert [(s.path, s.label) for s in ds.samples] == [
        (f"{synsets[0]}/ILSVRC2012_val_00000001.JPEG", 0), (f"{synsets[0]}/ILSVRC2012_val_00000293.JPEG", 0),
        (f"{synsets[0]}/x.JPEG", 0), (f"{synsets[999]}/ILSVRC2012_val_00000002.JPEG", 999)]


def test_non_synset_folders_use_sorted_position(tmp_path):
    _touch(tmp_path / "zebra" / "1.jpg")
    _touch(tmp_path / "ant" / "2.jpg")
    ds = discover(str(tmp_path))
    assert [(s.path, s.label) for s in ds.samples] == [("ant/2.jpg", 0), ("zebra/1.jpg", 1)]


def test_bad_label_line(tmp_path):
    _touch(tmp_path / "a.JPEG")
    labels = tmp_path / "l.txt"
    labels.write_text("a.JPEG 3\na.JPEG three\n")
    with pytest.raises(JobError, match=r"dataset.labels: .*l.txt:2: expected '<filename> <class index>'"):
        discover(str(tmp_path), str(labels))


def test_stable_order(tmp_path):
    for n in ["b.JPEG", "a.JPEG", "c.JPEG"]:
        _touch(tmp_path / n)
    assert discover(str(tmp_path)).samples == discover(str(tmp_path)).samples


def test_limit_covers_classes_evenly(tmp_path):
    synsets = imagenet_synsets()
    for c in range(4):
        for i in range(25):
            _touch(tmp_path / synsets[c] / f"{c:02d}_{i:03d}.JPEG")
    ds = discover(str(tmp_path))
    sub = select(ds.samples, 20)
    counts = {c: sum(1 for s in sub if s.label == c) for c in range(4)}
    assert counts == {0: 5, 1: 5, 2: 5, 3: 5}
    assert [s.index for s in sub] == sorted(s.index for s in sub)
    assert select(ds.samples, 20) == sub
    assert select(ds.samples, None) == ds.samples and select(ds.samples, 1000) == ds.samples


def test_limit_unlabelled_is_spread(tmp_path):
    for i in range(100):
        _touch(tmp_path / f"{i:03d}.JPEG")
    sub = select(discover(str(tmp_path)).samples, 4)
    assert [s.index for s in sub] == [0, 25, 50, 75]
