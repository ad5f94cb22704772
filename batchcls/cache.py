"""npz shard read/write: atomic temp + os.replace, validated on read."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import BatchclsError
from .ragged import RaggedImages


def write_shard(path: str, images: np.ndarray, indices: np.ndarray, errors: list[str]) -> None:
    """Store one prepared shard: uint8 `images` [n_ok, 3, H, W] (or a RaggedImages) of the samples whose error is '',
    int32 `indices` [n] of every sample, `errors` [n] ('' when fine). Uncompressed: compression costs
    more time than it saves (FINDINGS)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    try:
        if isinstance(images, RaggedImages):  # full-resolution images: one flat buffer and the shapes
            np.savez(tmp, pixels=images.pixels, shapes=images.shapes, indices=indices.astype(np.int32),
                     errors=np.array(errors, dtype=str))
        else:
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
            indices, errors = z["indices"], [str(e) for e in z["errors"]]
            if "pixels" in z.files:
                images = RaggedImages(z["pixels"], z["shapes"])
            else:
                images = _read_stored(path, z.zip, "images.npy")
                if images is None:
                    images = z["images"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    n_ok = sum(1 for e in errors if not e)
    if len(errors) != len(indices) or len(images) != n_ok or images.dtype != np.uint8:
        return None
    if expect_indices is not None and not np.array_equal(indices, expect_indices):
        return None
    variable = expect_shape is not None and None in tuple(expect_shape)
    if expect_shape is not None and variable != isinstance(images, RaggedImages):
        return None
    if expect_shape is not None and not variable and n_ok and tuple(images.shape[1:]) != tuple(expect_shape):
        return None
    return images, indices, errors


def _read_stored(path: str, zf: zipfile.ZipFile, member: str) -> np.ndarray | None:
    """An uncompressed npz member read straight into its array (one read, no copies through zipfile:
    np.load's way costs ~2x at warm-cache rates), or None when it is compressed or not a plain C array."""
    info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        f.seek(int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little"), os.SEEK_CUR)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype.hasobject:
            return None
        out = np.empty(shape, dtype=dtype)
        if f.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise EOFError(f"{path}: {member} is truncated")
        return out


def shard_cache_path(cache_dir: str, prep_key: str, shard_key: str) -> str:
    """Where a shard lives in the cache: one folder per preprocessing, one file per shard content."""
    return os.path.join(cache_dir, prep_key, f"{shard_key}.npz")


def probe_writable(folder: str) -> None:
    """Create `folder` and write (then remove) a file there; OSError when that cannot be done."""
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".probe{os.getpid()}")
    with open(probe, "w") as f:
        f.write("ok")
    os.unlink(probe)


def check_writable(folder: str, field: str) -> None:
    """Create `folder` and prove a file can be written there, or say which field to change."""
    try:
        probe_writable(folder)
    except OSError as e:
        raise BatchclsError(f"{field}: cannot write to {folder!r} ({e.strerror}); choose a writable folder "
                            f"with --set {field}=PATH") from None
