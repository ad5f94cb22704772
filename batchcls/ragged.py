"""Variable-size uint8 CHW images in one flat buffer plus their shapes (full-resolution shards)."""

from __future__ import annotations

import numpy as np


class RaggedImages:
    """`n` images of different sizes: `pixels` holds their uint8 CHW bytes end to end, `shapes` [n, 3]
    their (C, H, W). One buffer instead of n arrays: one npz member, one zero-copy object in Ray."""

    def __init__(self, pixels: np.ndarray, shapes: np.ndarray):
        self.pixels = np.asarray(pixels, dtype=np.uint8).reshape(-1)
        self.shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 3)
        sizes = self.shapes.prod(axis=1)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if self.offsets[-1] != self.pixels.size:
            raise ValueError(f"ragged images: shapes cover {self.offsets[-1]} bytes, the buffer holds {self.pixels.size}")

    @classmethod
    def from_list(cls, images: list[np.ndarray]) -> "RaggedImages":
        if not images:
            return cls(np.zeros(0, np.uint8), np.zeros((0, 3), np.int64))
        return cls(np.concatenate([np.ascontiguousarray(a, dtype=np.uint8).reshape(-1) for a in images]),
                   np.array([a.shape for a in images], dtype=np.int64))

    def __len__(self) -> int:
        return int(self.shapes.shape[0])

    @property
    def dtype(self):
        return self.pixels.dtype

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def image(self, i: int) -> np.ndarray:
        """Image i as a (C, H, W) view of the buffer."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.pixels[a:b].reshape(tuple(self.shapes[i]))

    def __getitem__(self, key):
        """An int gives one (C, H, W) view; a slice gives a list of them (a batch)."""
        if isinstance(key, slice):
            return [self.image(i) for i in range(len(self))[key]]
        return self.image(int(key))
