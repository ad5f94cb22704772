"""The host path at GPU rates gives the same results: top-k by argpartition equals the full stable
sort, and the direct npz read equals np.load."""

from __future__ import annotations

import numpy as np

from batchcls.cache import read_shard, write_shard
from batchcls.metrics import softmax, topk


def _reference(logits, k):
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return ids.astype(np.int16), np.take_along_axis(softmax(logits), ids, axis=1).astype(np.float32)


def test_topk_equals_stable_full_sort_with_ties_nan_inf():
    rng = np.random.default_rng(0)
    nan = rng.standard_normal((30, 1000)).astype(np.float32)
    nan[::3, ::7] = np.nan
    inf = rng.standard_normal((20, 1000)).astype(np.float32)
    inf[:5, :3], inf[5:9] = np.inf, -np.inf
    cases = [rng.standard_normal((300, 1000)).astype(np.float32),
             rng.integers(0, 4, (200, 1000)).astype(np.float32),  # ties everywhere
             np.zeros((3, 1000), np.float32), rng.standard_normal((4, 6)).astype(np.float32), nan, inf]
    with np.errstate(invalid="ignore"):
        for logits in cases:
            for k in (1, 5, 6, 10):
                ids, probs = topk(logits, k)
                ref_ids, ref_probs = _reference(logits, k)
                assert np.array_equal(ids, ref_ids)
                assert np.array_equal(probs, ref_probs, equal_nan=True)


def test_direct_npz_read_equals_np_load(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 3, 16, 16), dtype=np.uint8)
    idx = np.arange(8, dtype=np.int32)
    errors = [""] * 3 + ["prep: bad"] + [""] * 4
    path = str(tmp_path / "s.npz")
    write_shard(path, images, idx, errors)
    got, got_idx, got_err = read_shard(path, idx, (3, 16, 16))
    with np.load(path) as z:
        assert np.array_equal(got, z["images"]) and got.flags.c_contiguous and got.flags.writeable
    assert np.array_equal(got_idx, idx) and got_err == errors
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])  # truncated: not a hit, prepared again
    assert read_shard(path, idx, (3, 16, 16)) is None
