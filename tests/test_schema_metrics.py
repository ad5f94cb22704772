"""Output rows and metrics: Parquet round trip, one row per sample, top-k and accuracy against plain numpy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batchcls.metrics import accuracy, softmax, topk
from batchcls.schema import build_table, part_path, read_predictions, write_part


def test_topk_and_softmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 1000)).astype(np.float32) * 5
    ids, probs = topk(logits, 5)
    assert ids.dtype == np.int16 and probs.dtype == np.float32
    for row in range(7):
        order = sorted(range(1000), key=lambda c: -logits[row, c])[:5]
        assert ids[row].tolist() == order
    p = softmax(logits)
    assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(probs, np.take_along_axis(p, ids.astype(int), axis=1))
    big = np.array([[1e30, 0.0, -1e30]], np.float32)
    assert np.isfinite(softmax(big)).all()
    tie_ids, _ = topk(np.zeros((1, 4), np.float32), 2)
    assert tie_ids.tolist() == [[0, 1]]


def test_accuracy():
    labels = np.array([1, 2, 3, 4])
    ids = np.array([[1, 0, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 0, 0, 9], [4, 0, 0, 0, 0]])
    acc = accuracy(labels, ids)
    assert acc == {"count": 4, "top1": 50.0, "top5": 75.0}
    assert accuracy(labels[:0], ids[:0])["top1"] is None
    assert accuracy(labels, ids[:, :1])["top5"] is None


def test_table_round_trip(tmp_path):
    logits = np.random.default_rng(1).standard_normal((2, 10)).astype(np.float32)
    ids, probs = topk(logits, 3)
    table = build_table([4, 5, 6], ["a.JPEG", "b é.JPEG", "c.JPEG"], [1, None, 3], ["", "prep: empty file", ""],
                        ids, probs, logits)
    path = part_path(str(tmp_path), 3)
    write_part(path, table)
    back = read_predictions(str(tmp_path))
    assert back.schema.field("index").type == pa.int32() and back.schema.field("label").type == pa.int16()
    assert back.schema.field("topk_ids").type == pa.list_(pa.int16())
    assert back.schema.field("logits").type == pa.list_(pa.float16(), 10)
    rows = back.to_pylist()
    assert [r["index"] for r in rows] == [4, 5, 6]
    assert rows[1] == {"index": 5, "path": "b é.JPEG", "label": None, "topk_ids": None, "topk_probs": None,
                       "error": "prep: empty file", "logits": None}
    assert rows[2]["topk_ids"] == ids[1].tolist() and rows[0]["error"] is None
    assert np.allclose(rows[2]["logits"], logits[1], atol=1e-2)
    assert np.allclose(rows[0]["topk_probs"], probs[0])
