"""VastAI on-device DSP preprocessing (OpenCV decode, fixed bilinear resize, crop) from its vdsp_params JSON."""

from __future__ import annotations

import json
import math
import os
from importlib import resources

import cv2
import numpy as np
from PIL import Image

from batchcls.transforms.base import Transform, check_crop_pct, check_max_pixels
from batchcls.transforms.decode import decode_cv2_bgr, ensure_bytes
from batchcls.transforms.normalize import check_mean_std

REQUIRED_KEYS = ("OimageWidth", "OimageHeight", "CropX", "CropY", "ResizeWidth", "ResizeHeight",
                 "Mean", "Std", "NormaType", "ResizeType")
# (x / 255 - mean) / std: the only normalisation the DLA JSONs use, and what normalize() does.
NORMA_TYPES = ("DIV255_MINUSMEAN_DIVSTD",)
# OpenCV's bilinear (no antialiasing), which is what the DSP reproduces.
RESIZE_TYPES = ("BILINEAR_CV",)
# The DSP receives RGB planes and is told not to convert colours: the host must send RGB.
_INPUT_FORMATS = ("RGB_PLANAR",)
_COLOR_CODES = ("NO_CHANGE",)
_PACKAGE_DIR = "resources/vdsp_params"
_SUFFIX = "-vdsp_params.json"


def load_vdsp_params(path: str | os.PathLike) -> dict:
    """The vendor's JSON as it is ({"OpType": ..., "OpConfig": {...}}); ValueError naming what is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            params = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read vdsp params JSON: {e}") from None
    config = params.get("OpConfig") if isinstance(params, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: missing key 'OpConfig' (the vendor's vdsp params have OpType and OpConfig)")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"{path}: OpConfig is missing key {missing[0]!r} (required: {', '.join(REQUIRED_KEYS)})")
    return params


def shipped_vdsp_params() -> dict[str, str]:
    """Short name ('timm-dla34') -> path of every vdsp params JSON shipped in the package."""
    folder = resources.files("batchcls").joinpath(_PACKAGE_DIR)
    return {p.name[: -len(_SUFFIX)]: str(p) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(_SUFFIX)}


def resolve_vdsp_params(name_or_path: str | os.PathLike) -> str:
    """A path to an existing JSON, or a shipped name like 'timm-dla34' (or its file name)."""
    if os.path.isfile(name_or_path):
        return os.fspath(name_or_path)
    shipped = shipped_vdsp_params()
    key = os.fspath(name_or_path)
    key = key[: -len(_SUFFIX)] if key.endswith(_SUFFIX) else key
    if key in shipped:
        return shipped[key]
    raise ValueError(
        f"vdsp_params {os.fspath(name_or_path)!r} is neither a JSON file nor a shipped name; "
        f"allowed names: {', '.join(shipped)} (e.g. 'timm-dla34')"
    )


class VdspTransform(Transform):
    """What the VastAI DSP does: OpenCV decode, resize to exactly ResizeWidth x ResizeHeight with
    cv2.INTER_LINEAR (aspect ignored), crop OimageWidth x OimageHeight at (CropX, CropY).

    mean/std default to the JSON's (fp16-rounded) values. The resize runs on OpenCV's BGR and the
    channel swap happens in the CHW copy that has to be made anyway: same bytes, one copy less.
    """

    profile = "vdsp"

    def __init__(self, vdsp_params: str | os.PathLike, *, input_size=None, resize_size=None, crop_pct=None,
                 interpolation=None, mean=None, std=None, max_pixels=None):
        self.params_path = resolve_vdsp_params(vdsp_params)
        config = load_vdsp_params(self.params_path)["OpConfig"]
        self._read_geometry(config)
        _check_agrees(self, input_size, resize_size, crop_pct)
        if interpolation not in (None, "bilinear"):
            raise ValueError(f"interpolation {interpolation!r} is not what {self.params_path} does "
                             f"(ResizeType {config['ResizeType']!r}); allowed for vdsp: 'bilinear'")
        self.mean, self.std = check_mean_std(config["Mean"] if mean is None else mean,
                                             config["Std"] if std is None else std)
        self.max_pixels = check_max_pixels(Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
        self.out_shape = (3, self.crop_h, self.crop_w)

    def _read_geometry(self, config: dict) -> None:
        where = self.params_path
        for key, allowed in (("NormaType", NORMA_TYPES), ("ResizeType", RESIZE_TYPES),
                             ("IimageFormat", _INPUT_FORMATS), ("ColorCvtCode", _COLOR_CODES)):
            if key in config and config[key] not in allowed:
                raise ValueError(f"{where}: unsupported {key} {config[key]!r}; allowed: {', '.join(allowed)}")
        ints = {}
        for key in ("ResizeWidth", "ResizeHeight", "OimageWidth", "OimageHeight", "CropX", "CropY"):
            value = config[key]
            lowest = 0 if key.startswith("Crop") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{where}: {key} must be an integer >= {lowest}; got {value!r}")
            ints[key] = value
        self.resize_w, self.resize_h = ints["ResizeWidth"], ints["ResizeHeight"]
        self.crop_w, self.crop_h = ints["OimageWidth"], ints["OimageHeight"]
        self.crop_x, self.crop_y = ints["CropX"], ints["CropY"]
        if self.crop_x + self.crop_w > self.resize_w or self.crop_y + self.crop_h > self.resize_h:
            raise ValueError(
                f"{where}: crop {self.crop_w}x{self.crop_h} at ({self.crop_x},{self.crop_y}) is larger than "
                f"the resize {self.resize_w}x{self.resize_h}; CropX + OimageWidth must be <= ResizeWidth "
                "and CropY + OimageHeight <= ResizeHeight"
            )

    def resolved(self) -> dict:
        return {
            "profile": self.profile,
            "vdsp_params": os.path.basename(self.params_path),
            "resize": [self.resize_w, self.resize_h],
            "crop_xy": [self.crop_x, self.crop_y],
            "crop": [self.crop_w, self.crop_h],
            "interpolation": "bilinear_cv",
            "mean": list(self.mean),
            "std": list(self.std),
            "max_pixels": self.max_pixels,
        }

    def from_bytes(self, data: bytes, name: str = "<bytes>") -> np.ndarray:
        """Encoded bytes to the uint8 (3, OimageHeight, OimageWidth) RGB crop, C-contiguous."""
        bgr = decode_cv2_bgr(ensure_bytes(data, name), name, self.max_pixels)
        if bgr.shape[:2] != (self.resize_h, self.resize_w):
            bgr = cv2.resize(bgr, (self.resize_w, self.resize_h), interpolation=cv2.INTER_LINEAR)
        kept = bgr[self.crop_y : self.crop_y + self.crop_h, self.crop_x : self.crop_x + self.crop_w]
        return np.ascontiguousarray(kept[:, :, ::-1].transpose(2, 0, 1))


def _check_agrees(t: VdspTransform, input_size, resize_size, crop_pct) -> None:
    """Sizes come from the JSON; values given anyway must describe the same geometry."""
    checks = (("input_size", input_size, t.crop_w if t.crop_w == t.crop_h else None),
              ("resize_size", resize_size, t.resize_w if t.resize_w == t.resize_h else None))
    for name, given, actual in checks:
        if given is not None and given != actual:
            raise ValueError(f"{name}={given!r} conflicts with {t.params_path} "
                             f"(crop {t.crop_w}x{t.crop_h}, resize {t.resize_w}x{t.resize_h}); "
                             f"leave {name} unset for the vdsp profile")
    crop_pct = check_crop_pct(crop_pct)
    if crop_pct is not None and (t.resize_w != t.resize_h or math.floor(t.crop_w / crop_pct) != t.resize_w):
        raise ValueError(f"crop_pct={crop_pct!r} conflicts with {t.params_path} "
                         f"(crop {t.crop_w} of a {t.resize_w} resize); leave crop_pct unset for the vdsp profile")
