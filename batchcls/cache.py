"""npz shard read/write: atomic temp + os.replace, validated on read."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import BatchclsError


def write_shard(path: str, images: np.ndarray, indices: np.ndarray, errors: list[str]) -> None:
    """Store one prepared shard: uint8 `images` [n_ok, 3, H, W] of the samples whose error is '',
    int32 `indices` [n] of every sample, `errors` [n] ('' when fine). Uncompressed: compression costs
    more time than it saves (FINDINGS)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    try:
        np.savez(tmp, images=images, indices=indices.astype(np.int32), errors=np.array(errors, dtype=str))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_shard(path: str, expect_indices: np.ndarray | None = None, expect_shape: tuple | None = None):
    """(images, indices, errors) of a cached shard, or None when it is missing, unreadable or does not
    hold what is expected (then it is simply prepared again)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, indices, errors = z["images"], z["indices"], [str(e) for e in z["errors"]]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    n_ok = sum(1 for e in errors if not e)
    if len(errors) != len(indices) or images.shape[0] != n_ok or images.dtype != np.uint8:
        return None
    if expect_indices is not None and not np.array_equal(indices, expect_indices):
        return None
    if expect_shape is not None and n_ok and tuple(images.shape[1:]) != tuple(expect_shape):
        return None
    return images, indices, errors


def shard_cache_path(cache_dir: str, prep_key: str, shard_key: str) -> str:
    """Where a shard lives in the cache: one folder per preprocessing, one file per shard content."""
    return os.path.join(cache_dir, prep_key, f"{shard_key}.npz")


def check_writable(folder: str, field: str) -> None:
    """Create `folder` and prove a file can be written there, or say which field to change."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".probe{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise BatchclsError(f"{field}: cannot write to {folder!r} ({e.strerror}); choose a writable folder "
                            f"with --set {field}=PATH") from None
