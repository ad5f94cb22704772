"""timm/torchvision eval preprocessing: PIL convert('RGB'), Resize(shorter side), CenterCrop."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from batchcls.constants import IMAGENET_MEAN, IMAGENET_STD
from batchcls.transforms.base import Transform, check_crop_pct, check_interpolation, check_max_pixels, check_size
from batchcls.transforms.decode import decode_jpeg_rgbx, ensure_bytes, open_pil_rgb
from batchcls.transforms.normalize import check_mean_std
from batchcls.transforms.pilresize import resize_center_crop

DEFAULT_INPUT_SIZE = 224
# timm's DEFAULT_CROP_PCT: resize to floor(224 / 0.875) = 256, then crop 224, the ImageNet convention.
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bilinear"
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class TimmTransform(Transform):
    """What timm's eval transform (torchvision v1 on PIL images) produces, to the last bit.

    Image.open(...).convert('RGB') as torchvision's default loader does (no EXIF rotation),
    Resize(resize_size) of the shorter side with PIL's antialiased filter, CenterCrop(input_size)
    with torchvision's rounding and zero padding. The default fast path decodes JPEGs with
    simplejpeg (the same bytes as PIL's decoder) and resamples only the kept pixels; fast=False
    is the plain PIL route, kept as the baseline the fast one is tested against.
    """

    profile = "timm"

    def __init__(self, input_size: int | None = None, resize_size: int | None = None,
                 crop_pct: float | None = None, interpolation: str | None = None,
                 mean=None, std=None, max_pixels: int | None = None, *, fast: bool = True):
        self.input_size = check_size("input_size", DEFAULT_INPUT_SIZE if input_size is None else input_size)
        self.crop_pct = check_crop_pct(crop_pct)
        if resize_size is None:
            # timm's rule: the resize is derived from the crop, floor so that 224/0.875 stays 256.
            resize_size = math.floor(self.input_size / (self.crop_pct or DEFAULT_CROP_PCT))
        self.resize_size = check_size("resize_size", resize_size, example=256)
        self.interpolation = check_interpolation(self.profile, interpolation or DEFAULT_INTERPOLATION)
        self.mean, self.std = check_mean_std(IMAGENET_MEAN if mean is None else mean,
                                             IMAGENET_STD if std is None else std)
        self.max_pixels = check_max_pixels(Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
        self.out_shape = (3, self.input_size, self.input_size)
        self.fast = bool(fast)
        self._resample = _RESAMPLE[self.interpolation]

    def resolved(self) -> dict:
        return {
            "profile": self.profile,
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            # Effective, from the two sizes: settings that give the same pixels give the same dict.
            "crop_pct": self.input_size / self.resize_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "max_pixels": self.max_pixels,
        }

    def from_bytes(self, data: bytes, name: str = "<bytes>") -> np.ndarray:
        """Encoded bytes to the uint8 (3, input_size, input_size) RGB crop, C-contiguous."""
        data = ensure_bytes(data, name)
        src = decode_jpeg_rgbx(data, name, self.max_pixels) if self.fast else None
        if src is None:
            src = open_pil_rgb(data, name, self.max_pixels)
        return resize_center_crop(src, self.resize_size, self.input_size, self._resample, crop_aware=self.fast)

