"""Stable split of samples into Shard(id, samples); cache keys from preprocessing parameters and file list."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from .discover import Sample

# Bump when the npz layout or any transform's pixels change, so old caches are not reused.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Shard:
    """A fixed slice of the run's samples; `id` is its position, stable for the same job and folder."""

    id: int
    samples: tuple[Sample, ...]
    key: str = ""  # cache key: preprocessing + this shard's files (names, sizes, mtimes)

    def __len__(self) -> int:
        return len(self.samples)


def effective_shard_size(shard_size: int, batch_size: int) -> int:
    """`shard_size` rounded up to whole batches, so every batch of a run but its last is full."""
    return -(-shard_size // batch_size) * batch_size


def preprocess_key(resolved: dict) -> str:
    """Hash of every parameter that can change a pixel (the transform's `resolved()`)."""
    blob = json.dumps({"format": CACHE_FORMAT, **resolved}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _file_fingerprint(root: str, rel: str) -> str:
    try:
        st = os.stat(os.path.join(root, rel))
        return f"{rel}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError as e:
        return f"{rel}\0missing:{e.errno}"


def shard_sizes(total: int, size: int, first: int | None = None) -> list[int]:
    """Shard lengths for `total` samples: from `first` (one batch), doubling up to `size`, then `size`.

    Inference starts once the first shard is prepared: a run's first shard is small so the device
    waits for one batch, not for a whole shard, while later shards stay large (fewer tasks and parts).
    """
    step = min(first or size, size)
    sizes = []
    while total > 0:
        sizes.append(min(step, total))
        total -= sizes[-1]
        step = min(2 * step, size)
    return sizes


def make_shards(root: str, samples: tuple[Sample, ...], size: int, prep_key: str,
                first: int | None = None) -> list[Shard]:
    """Cut `samples` (index order) into shards of `shard_sizes(len(samples), size, first)`; each shard's
    key covers `prep_key`, the dataset root and, per file, its relative path, index, size and
    modification time."""
    shards = []
    root_abs = os.path.abspath(root)
    start = 0
    for sid, length in enumerate(shard_sizes(len(samples), size, first)):
        chunk = samples[start:start + length]
        start += length
        h = hashlib.sha256(f"{prep_key}\0{root_abs}".encode())
        for s in chunk:
            h.update(f"\0{s.index}\0{_file_fingerprint(root, s.path)}".encode())
        shards.append(Shard(sid, chunk, h.hexdigest()[:24]))
    return shards
