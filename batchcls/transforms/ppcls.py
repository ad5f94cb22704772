"""PaddleClas's own eval preprocessing for its DLA models: cv2 decode, ResizeImage(resize_short), CropImage."""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from batchcls.constants import IMAGENET_MEAN, IMAGENET_STD
from batchcls.transforms.base import Transform, check_crop_pct, check_interpolation, check_max_pixels, check_size
from batchcls.transforms.decode import decode_cv2_bgr, ensure_bytes
from batchcls.transforms.normalize import check_mean_std

# The rules are those of PaddlePaddle/PaddleClas, branch develop at d178931f (2024-10-18;
# operators.py last changed in 541326ea, 2023-03-02): ppcls/configs/ImageNet/DLA/DLA34.yaml, Eval transform_ops
#   DecodeImage(to_rgb=True, channel_first=False), ResizeImage(resize_short=256),
#   CropImage(size=224), NormalizeImage(scale=1.0/255.0, ImageNet mean/std, order='')
# and ppcls/data/preprocess/ops/operators.py:
#   DecodeImage: cv2.imdecode(np.frombuffer(img, 'uint8'), 1), then img[:, :, ::-1] (RGB)
#   ResizeImage: percent = float(resize_short) / min(w, h); w = int(round(w * percent)),
#                h = int(round(h * percent)); UnifiedResize backend 'cv2', interpolation None
#                -> cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
#   CropImage:   w_start = (img_w - w) // 2, h_start = (img_h - h) // 2, plain slicing
#   NormalizeImage: (img.astype('float32') * float32(scale) - mean) / std  (scale_rule below)
DEFAULT_RESIZE_SHORT = 256
DEFAULT_CROP = 224
_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


class PpclsTransform(Transform):
    """What PaddleClas's DLA eval pipeline feeds its models, as uint8 CHW RGB.

    The resize is done on OpenCV's BGR and the channel order reversed in the CHW copy: OpenCV
    resamples each channel independently, so this equals resizing PaddleClas's RGB array.
    """

    profile = "ppcls"
    scale_rule = "mul_inv255"

    def __init__(self, input_size: int | None = None, resize_size: int | None = None,
                 crop_pct: float | None = None, interpolation: str | None = None,
                 mean=None, std=None, max_pixels: int | None = None):
        self.input_size = check_size("input_size", DEFAULT_CROP if input_size is None else input_size)
        if resize_size is None:
            # Same convention as timm when only the crop is given: 224 -> 256.
            crop_pct = check_crop_pct(crop_pct)
            resize_size = DEFAULT_RESIZE_SHORT if crop_pct is None else math.floor(self.input_size / crop_pct)
        self.resize_size = check_size("resize_size", resize_size, example=256)
        if self.input_size > self.resize_size:
            raise ValueError(
                f"input_size {self.input_size} is larger than resize_size {self.resize_size}: PaddleClas's "
                "CropImage would return a smaller image; use input_size <= resize_size (e.g. 224 and 256)"
            )
        self.interpolation = check_interpolation(self.profile, interpolation or "bilinear")
        self.mean, self.std = check_mean_std(IMAGENET_MEAN if mean is None else mean,
                                             IMAGENET_STD if std is None else std)
        self.max_pixels = check_max_pixels(Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
        self.out_shape = (3, self.input_size, self.input_size)
        self._cv2_interpolation = _CV2_INTERPOLATION[self.interpolation]

    def resolved(self) -> dict:
        return {
            "profile": self.profile,
            "input_size": self.input_size,
            "resize_short": self.resize_size,
            "interpolation": f"{self.interpolation}_cv",
            "mean": list(self.mean),
            "std": list(self.std),
            "scale_rule": self.scale_rule,
            "max_pixels": self.max_pixels,
        }

    def from_bytes(self, data: bytes, name: str = "<bytes>") -> np.ndarray:
        """Encoded bytes to the uint8 (3, input_size, input_size) RGB crop, C-contiguous."""
        bgr = decode_cv2_bgr(ensure_bytes(data, name), name, self.max_pixels)
        h, w = bgr.shape[:2]
        percent = float(self.resize_size) / min(w, h)
        new_w, new_h = int(round(w * percent)), int(round(h * percent))
        if (new_w, new_h) != (w, h):
            bgr = cv2.resize(bgr, (new_w, new_h), interpolation=self._cv2_interpolation)
        crop = self.input_size
        left, top = (new_w - crop) // 2, (new_h - crop) // 2
        kept = bgr[top : top + crop, left : left + crop]
        return np.ascontiguousarray(kept[:, :, ::-1].transpose(2, 0, 1))
