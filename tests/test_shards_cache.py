"""Shards and the npz cache: stable split, keys that change with every pixel parameter and file, atomic round trip."""

from __future__ import annotations

import os
import time

import numpy as np

from batchcls.cache import read_shard, shard_cache_path, write_shard
from batchcls.data.discover import Sample
from batchcls.data.shards import effective_shard_size, make_shards, preprocess_key


def _samples(root, n):
    out = []
    for i in range(n):
        p = os.path.join(root, f"{i:03d}.JPEG")
        open(p, "wb").write(b"x" * (i + 1))
        out.append(Sample(i, f"{i:03d}.JPEG", i % 3))
    return tuple(out)


def test_split_is_stable_and_complete(tmp_path):
    samples = _samples(str(tmp_path), 10)
    shards = make_shards(str(tmp_path), samples, 4, "k")
    assert [len(s) for s in shards] == [4, 4, 2] and [s.id for s in shards] == [0, 1, 2]
    assert [x.index for s in shards for x in s.samples] == list(range(10))
    assert [s.key for s in make_shards(str(tmp_path), samples, 4, "k")] == [s.key for s in shards]


def test_effective_shard_size():
    assert effective_shard_size(1000, 48) == 1008
    assert effective_shard_size(96, 48) == 96
    assert effective_shard_size(10, 48) == 48


def test_keys_follow_parameters_and_files(tmp_path):
    samples = _samples(str(tmp_path), 6)
    k1 = preprocess_key({"profile": "timm", "resize_size": 256})
    assert k1 != preprocess_key({"profile": "timm", "resize_size": 288})
    assert k1 == preprocess_key({"resize_size": 256, "profile": "timm"})
    before = make_shards(str(tmp_path), samples, 3, k1)
    assert [s.key for s in make_shards(str(tmp_path), samples, 3, "other")] != [s.key for s in before]
    time.sleep(0.01)
    open(tmp_path / "004.JPEG", "wb").write(b"changed")
    after = make_shards(str(tmp_path), samples, 3, k1)
    assert before[0].key == after[0].key and before[1].key != after[1].key


def test_npz_round_trip_and_damage(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    indices = np.array([5, 6, 7], np.int32)
    path = shard_cache_path(str(tmp_path), "pk", "sk")
    write_shard(path, images, indices, ["", "prep: bad", ""])
    assert os.listdir(os.path.dirname(path)) == ["sk.npz"]  # no temp file left behind
    got_images, got_indices, errors = read_shard(path, indices, (3, 8, 8))
    assert np.array_equal(got_images, images) and np.array_equal(got_indices, indices)
    assert errors == ["", "prep: bad", ""]
    assert read_shard(path, np.array([1, 2, 3], np.int32)) is None  # other samples: not reused
    assert read_shard(path, indices, (3, 9, 9)) is None  # other crop size: not reused
    open(path, "r+b").write(b"garbage")
    assert read_shard(path) is None
    assert read_shard(str(tmp_path / "missing.npz")) is None


def test_first_shards_ramp_up_from_one_batch(tmp_path):
    from batchcls.data.shards import shard_sizes

    assert shard_sizes(1000, 1008, 48) == [48, 96, 192, 384, 280]
    assert shard_sizes(5000, 1008, 48) == [48, 96, 192, 384, 768, 1008, 1008, 1008, 488]
    assert shard_sizes(10, 4) == [4, 4, 2]  # no ramp without `first`
    assert shard_sizes(0, 96, 48) == []
    assert shard_sizes(100, 96, 200) == [96, 4]  # `first` never above the shard size
    samples = tuple(Sample(i, f"img_{i}.JPEG", 0) for i in range(300))
    shards = make_shards(str(tmp_path), samples, 96, "k", first=48)
    assert [len(s) for s in shards] == [48, 96, 96, 60]
    assert [x.index for s in shards for x in s.samples] == list(range(300))
    assert [s.key for s in make_shards(str(tmp_path), samples, 96, "k", first=48)] == [s.key for s in shards]
