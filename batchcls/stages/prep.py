"""Prep stage: Shard -> uint8 CHW crops via the transforms and the npz cache; a bad file -> an error record."""

from __future__ import annotations

import os
import time
from functools import lru_cache

import numpy as np

from ..cache import read_shard, write_shard
from ..errors import SampleError
from ..ragged import RaggedImages
from ..transforms import create_transform


@lru_cache(maxsize=8)
def _transform(spec: tuple):
    return create_transform(**dict(spec))


def transform_spec(params: dict) -> tuple:
    """A hashable form of create_transform's keyword arguments, to reuse one transform per process."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def prep_shard(root: str, samples: list[tuple[int, str]], spec: tuple, cache_path: str | None) -> dict:
    """Prepare one shard: `samples` are (index, path relative to root). Returns
    {'indices': int32 [n], 'errors': [n] ('' when fine), 'images': uint8 [n_ok, 3, H, W], 'cached', 'prep_s'};
    for a transform of variable size (out_shape (3, None, None)) 'images' is a RaggedImages of n_ok.

    A cached shard with the same indices and crop shape is read instead of prepared; a new one is
    written to `cache_path` atomically. No single image can fail the shard.
    """
    t0 = time.perf_counter()
    transform = _transform(spec)
    indices = np.array([i for i, _ in samples], dtype=np.int32)
    if cache_path:
        hit = read_shard(cache_path, indices, transform.out_shape)
        if hit is not None:
            images, _, errors = hit
            return {"indices": indices, "errors": errors, "images": images, "cached": True,
                    "prep_s": time.perf_counter() - t0}
    ragged = None in transform.out_shape  # full-resolution images, each its own size
    images = [] if ragged else np.empty((len(samples), *transform.out_shape), dtype=np.uint8)
    errors: list[str] = []
    n_ok = 0
    for _, rel in samples:
        try:
            image = transform.load(os.path.join(root, rel))
            if ragged:
                images.append(image)
            else:
                images[n_ok] = image
            errors.append("")
            n_ok += 1
        except SampleError as e:
            errors.append(f"prep: {e.reason}")
        except Exception as e:  # noqa: BLE001 - one image's failure is its row's error, never the run's
            errors.append(f"prep: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    images = RaggedImages.from_list(images) if ragged else images[:n_ok]
    if cache_path:
        try:
            write_shard(cache_path, images, indices, errors)
        except OSError:
            pass  # a full or read-only cache only costs a re-prep next time; the run goes on
    return {"indices": indices, "errors": errors, "images": images, "cached": False,
            "prep_s": time.perf_counter() - t0}
