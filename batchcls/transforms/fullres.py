"""Full-resolution decode for a device that resizes and crops itself: uint8 RGB CHW with even width and height."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from batchcls.constants import IMAGENET_MEAN, IMAGENET_STD
from batchcls.transforms.base import Transform, check_max_pixels
from batchcls.transforms.decode import decode_cv2_bgr, ensure_bytes


class FullResTransform(Transform):
    """What the vendor's own script sends a VastAI card: `cv2.imread(IMREAD_COLOR)`, an odd width or
    height resized down to the even size below it (cv2 bilinear, as the script does), BGR -> RGB, CHW.

    The size varies from image to image (`out_shape` is (3, None, None)); the card's vdsp op does
    the resize, crop and normalisation, so mean/std here are only recorded, never applied.
    """

    profile = "fullres"

    def __init__(self, *, max_pixels=None, mean=None, std=None):
        self.max_pixels = check_max_pixels(Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
        self.mean = tuple(mean or IMAGENET_MEAN)
        self.std = tuple(std or IMAGENET_STD)
        self.out_shape = (3, None, None)

    def resolved(self) -> dict:
        return {"profile": self.profile, "decoder": "cv2", "odd_sizes": "resized down to even (cv2 bilinear)",
                "geometry": "on device", "max_pixels": self.max_pixels}

    def from_bytes(self, data: bytes, name: str = "<bytes>") -> np.ndarray:
        """Encoded bytes to uint8 (3, H, W) RGB at full resolution, H and W even, C-contiguous."""
        bgr = decode_cv2_bgr(ensure_bytes(data, name), name, self.max_pixels)
        h, w = bgr.shape[:2]
        if h % 2 or w % 2:
            bgr = cv2.resize(bgr, (max(2, w // 2 * 2), max(2, h // 2 * 2)), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))
