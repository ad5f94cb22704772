"""Full-resolution shards: RaggedImages, their npz cache round trip, and prep with the fullres transform."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from batchcls.cache import read_shard, write_shard
from batchcls.ragged import RaggedImages
from batchcls.stages.prep import prep_shard, transform_spec
from batchcls.transforms.fullres import FullResTransform


def test_ragged_views_and_batches():
    imgs = [np.full((3, h, w), i, np.uint8) for i, (h, w) in enumerate([(4, 6), (2, 2), (8, 10)])]
    r = RaggedImages.from_list(imgs)
    assert len(r) == 3 and r.nbytes == sum(a.nbytes for a in imgs)
    assert all(np.array_equal(r[i], a) for i, a in enumerate(imgs))
    assert [a.shape for a in r[1:]] == [(3, 2, 2), (3, 8, 10)]
    with pytest.raises(ValueError, match="shapes cover"):
        RaggedImages(np.zeros(5, np.uint8), np.array([[3, 1, 1]]))


def test_cache_round_trip_and_kind_check(tmp_path):
    r = RaggedImages.from_list([np.arange(3 * 4 * 6, dtype=np.uint8).reshape(3, 4, 6), np.ones((3, 2, 8), np.uint8)])
    path = str(tmp_path / "s.npz")
    idx = np.array([5, 6, 7], np.int32)
    write_shard(path, r, idx, ["", "prep: bad", ""])
    images, indices, errors = read_shard(path, idx, (3, None, None))
    assert isinstance(images, RaggedImages) and errors == ["", "prep: bad", ""]
    assert np.array_equal(images.pixels, r.pixels) and np.array_equal(images.shapes, r.shapes)
    assert read_shard(path, idx, (3, 224, 224)) is None  # a crop shard is not a full-resolution one


def test_prep_fullres_is_the_vendor_scripts_input(small_photos, tmp_path):
    """cv2.imread, odd sizes resized down to even (cv2 default bilinear), RGB planar."""
    from batchcls.synthetic import encode, make_rgb

    odd = tmp_path / "odd.JPEG"
    odd.write_bytes(encode(make_rgb(121, 91, seed=9)))
    paths = [*small_photos, str(odd)]
    spec = transform_spec({"profile": "fullres"})
    out = prep_shard("/", [(i, p.lstrip("/")) for i, p in enumerate(paths)], spec, str(tmp_path / "c.npz"))
    assert len(out["images"]) == 4 and out["errors"] == [""] * 4
    for i, p in enumerate(paths):
        bgr = cv2.imread(p, cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        if h % 2 or w % 2:
            bgr = cv2.resize(bgr, (w // 2 * 2, h // 2 * 2))
        assert np.array_equal(out["images"][i], np.stack(cv2.split(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
    assert out["images"][3].shape == (3, 90, 120)
    again = prep_shard("/", [(i, p.lstrip("/")) for i, p in enumerate(paths)], spec, str(tmp_path / "c.npz"))
    assert again["cached"] and np.array_equal(again["images"].pixels, out["images"].pixels)
    assert FullResTransform().out_shape == (3, None, None)
