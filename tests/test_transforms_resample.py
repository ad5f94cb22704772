"""The compiled resampler: byte-identical to Pillow's resize + crop, and on where it is built."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from batchcls.transforms import pilresize
from batchcls.transforms.pilresize import compiled_resize_available, resize_center_crop

FILTERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


def test_compiled_resampler_is_built_and_passes_its_self_check():
    assert pilresize._compiled is not None, "batchcls/transforms/_resample.c was not built: install with a C compiler"
    assert compiled_resize_available()


def _photo(rng, w, h):
    """Smooth gradients plus noise: neither flat nor pure noise, so rounding differences would show."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], axis=2)
    return np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size,crop", [(256, 224), (232, 224), (320, 288), (224, 224), (160, 128)])
def test_same_bytes_as_pillow_for_random_sizes(size, crop):
    rng = np.random.default_rng(size * 1000 + crop)
    compiled = 0
    for _ in range(60):
        w, h = (int(v) for v in rng.integers(1, 900, 2))
        if rng.random() < 0.2:  # some long thin and some tiny images
            w, h = (int(rng.integers(1, 40)), int(rng.integers(200, 1500)))[:: 1 if rng.random() < 0.5 else -1]
        rgb = _photo(rng, w, h)
        rgbx = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
        for f in FILTERS:
            want = resize_center_crop(Image.fromarray(rgb), size, crop, f, crop_aware=False)  # Pillow alone
            for src in (rgb, rgbx, Image.fromarray(rgb)):
                got = resize_center_crop(src, size, crop, f)
                assert got.shape == (3, crop, crop) and got.dtype == np.uint8
                assert np.array_equal(got, want), (w, h, size, crop, f, type(src))
            compiled += pilresize._compiled_args(w, h, size, crop, int(f)) is not None
    assert compiled > 60  # most cases went through the compiled path, not the fallbacks


def test_same_bytes_on_generated_photos(small_photos):
    for path in small_photos:
        img = Image.open(path).convert("RGB")
        for f in FILTERS:
            want = resize_center_crop(img, 64, 56, f, crop_aware=False)
            assert np.array_equal(resize_center_crop(np.asarray(img), 64, 56, f), want)


@pytest.mark.parametrize("args,match", [
    ((np.zeros((4, 4), np.uint8), 2, 2, 0, 0, 2, 2, 2, False), "3 or 4 channels"),
    ((np.zeros((4, 4, 2), np.uint8), 2, 2, 0, 0, 2, 2, 2, False), "3 or 4 channels"),
    ((np.zeros((4, 4, 3), np.uint8), 2, 2, 1, 0, 2, 2, 2, False), "bad sizes"),
    ((np.zeros((4, 4, 3), np.uint8), 0, 2, 0, 0, 1, 1, 2, False), "bad sizes"),
    ((np.zeros((4, 4, 3), np.uint8), 2, 2, 0, 0, 2, 2, 1, False), "filter"),
])
def test_bad_arguments_raise_instead_of_crashing(args, match):
    if pilresize._compiled is None:
        pytest.skip("compiled resampler not built")
    with pytest.raises(ValueError, match=match):
        pilresize._compiled(*args)
