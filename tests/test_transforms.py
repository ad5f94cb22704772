"""Transforms: each profile against an independent reference, the fast timm path against the plain one."""

from __future__ import annotations

import io
import json
import math
import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from batchcls.constants import IMAGENET_MEAN, IMAGENET_STD
from batchcls.errors import SampleError
from batchcls.transforms import (PROFILES, TimmTransform, create_transform, load_vdsp_params, normalize,
                                 shipped_vdsp_params)
from batchcls.transforms import pilresize
from batchcls.transforms.normalize import normalization_table
from batchcls.synthetic import encode, make_rgb

# Sizes that exercise the rounding rules: landscape/portrait, short side already 256, square,
# smaller than the crop, odd, very wide/tall (Pillow 13 then resizes vertically first), 1x1.
SIZES = [(500, 375), (375, 500), (256, 341), (341, 256), (256, 256), (224, 224), (100, 80), (80, 100),
         (223, 301), (301, 223), (1001, 333), (333, 1001), (257, 255), (1, 1), (7, 300), (1200, 900)]


def _save(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _odd_modes(rgb: np.ndarray) -> dict[str, bytes]:
    """Every decoder path and colour mode convert('RGB') handles differently."""
    img = Image.fromarray(rgb)
    alpha = Image.fromarray(rgb[:, :, 0]).point(lambda v: 255 - v)
    rgba = img.copy()
    rgba.putalpha(alpha)
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 3
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: torchvision does not apply it, OpenCV does
    i16 = Image.fromarray((rgb[:, :, 1].astype(np.uint16) * 257))
    return {
        "gray.jpg": encode(rgb, mode="L"),
        "cmyk.jpg": encode(rgb, mode="CMYK"),
        "progressive.jpg": encode(rgb, progressive=True),
        "s444.jpg": encode(rgb, subsampling="4:4:4"),
        "s422.jpg": encode(rgb, subsampling="4:2:2", quality=75),
        "adobe_rgb.jpg": _pil_bytes(img, "JPEG", keep_rgb=True, quality=90),
        "exif6.jpg": _pil_bytes(img, "JPEG", quality=90, exif=exif.tobytes()),
        "rgba.png": _pil_bytes(rgba, "PNG"),
        "palette.png": _pil_bytes(palette, "PNG"),
        "la.png": _pil_bytes(rgba.convert("LA"), "PNG"),
        "l.png": _pil_bytes(img.convert("L"), "PNG"),
        "i16.png": _pil_bytes(i16, "PNG"),
        "bilevel.png": _pil_bytes(img.convert("1"), "PNG"),
        "rgb.bmp": _pil_bytes(img, "BMP"),
        "rgb.webp": _pil_bytes(img, "WEBP", quality=90),
        "rgb.tif": _pil_bytes(img, "TIFF"),
        "palette.gif": _pil_bytes(palette, "GIF"),
        "png_named.JPEG": _pil_bytes(img, "PNG"),  # ImageNet has a PNG with a .JPEG name
        "trailing.jpg": encode(rgb) + b"\0\0 bytes after the end-of-image marker",
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """name -> path of generated images: JPEGs of SIZES plus every odd mode, from fixed seeds."""
    root = tmp_path_factory.mktemp("transform_images")
    out = {}
    for seed, (w, h) in enumerate(SIZES):
        out[f"{w}x{h}.jpg"] = _save(str(root / f"{w}x{h}.jpg"), encode(make_rgb(w, h, seed)))
    for name, data in _odd_modes(make_rgb(333, 250, 99)).items():
        out[name] = _save(str(root / name), data)
    return out


# ---------------------------------------------------------------- independent references


def reference_timm(path: str, size: int, crop: int, resample=Image.BILINEAR) -> np.ndarray:
    """torchvision v1 written out with PIL: loader, Resize(size), CenterCrop(crop) with padding."""
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    w, h = img.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    if new != (w, h):
        img = img.resize(new, resample)
    w, h = img.size
    if crop > w or crop > h:
        pad = ((crop - w) // 2 if crop > w else 0, (crop - h) // 2 if crop > h else 0,
               (crop - w + 1) // 2 if crop > w else 0, (crop - h + 1) // 2 if crop > h else 0)
        img = ImageOps.expand(img, border=pad, fill=0)
        w, h = img.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop))).transpose(2, 0, 1)


def reference_vdsp(path: str, config: dict) -> np.ndarray:
    """The DSP as plain OpenCV calls: decode, to RGB, resize (aspect ignored), crop."""
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (config["ResizeWidth"], config["ResizeHeight"]), interpolation=cv2.INTER_LINEAR)
    x, y = config["CropX"], config["CropY"]
    return rgb[y : y + config["OimageHeight"], x : x + config["OimageWidth"]].transpose(2, 0, 1)


def reference_ppcls(path: str, resize_short: int = 256, size: int = 224) -> np.ndarray:
    """PaddleClas's DecodeImage, ResizeImage, CropImage, followed literally (operators.py)."""
    with open(path, "rb") as f:
        img = cv2.imdecode(np.frombuffer(f.read(), dtype="uint8"), 1)
    img = img[:, :, ::-1]
    img_h, img_w = img.shape[:2]
    percent = float(resize_short) / min(img_w, img_h)
    w, h = int(round(img_w * percent)), int(round(img_h * percent))
    img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR)
    img_h, img_w = img.shape[:2]
    w_start, h_start = (img_w - size) // 2, (img_h - size) // 2
    return img[h_start : h_start + size, w_start : w_start + size, :].transpose(2, 0, 1)


# ---------------------------------------------------------------- timm


@pytest.mark.parametrize("kwargs, size, crop, resample", [
    ({}, 256, 224, Image.BILINEAR),
    ({"interpolation": "bicubic"}, 256, 224, Image.BICUBIC),
    ({"crop_pct": 0.9}, 248, 224, Image.BILINEAR),            # floor(224 / 0.9) = 248
    ({"input_size": 256, "resize_size": 256}, 256, 256, Image.BILINEAR),
    ({"input_size": 224, "resize_size": 200}, 200, 224, Image.BILINEAR),  # crop > resize: zero padding
    ({"input_size": 288, "resize_size": 320, "interpolation": "bicubic"}, 320, 288, Image.BICUBIC),
])
def test_timm_matches_reference(images, kwargs, size, crop, resample):
    t = create_transform("timm", **kwargs)
    assert t.out_shape == (3, crop, crop) and t.resize_size == size
    for name, path in images.items():
        got = t.load(path)
        assert got.dtype == np.uint8 and got.flags.c_contiguous and got.shape == t.out_shape, name
        np.testing.assert_array_equal(got, reference_timm(path, size, crop, resample), err_msg=name)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_timm_fast_path_is_byte_identical_to_plain_pil(tmp_path, images, interpolation):
    """simplejpeg + crop-aware resizing against Image.open().convert() + one resize call."""
    rng = np.random.default_rng(7)
    paths = dict(images)
    for i in range(24):  # random geometries, both resize orders of Pillow, JPEG and PNG
        w, h = (int(v) for v in rng.integers(60, 1100, 2))
        data = encode(make_rgb(w, h, 1000 + i), "PNG" if i % 6 == 0 else "JPEG")
        paths[f"random{i}"] = _save(str(tmp_path / f"r{i}.img"), data)
    for input_size, resize_size in ((224, 256), (224, 232), (112, 128)):
        fast = TimmTransform(input_size, resize_size, interpolation=interpolation)
        plain = TimmTransform(input_size, resize_size, interpolation=interpolation, fast=False)
        for name, path in paths.items():
            np.testing.assert_array_equal(fast.load(path), plain.load(path), err_msg=f"{name} {resize_size}")


def test_fast_path_really_takes_simplejpeg_and_crop_aware(images, monkeypatch):
    """Guard for the identity test above: JPEGs must not silently go through PIL."""
    t = TimmTransform()
    assert pilresize._order_rule_holds()
    assert pilresize._plan(500, 375, 256, 224, Image.BILINEAR) is not None
    assert pilresize._plan(333, 1001, 256, 224, Image.BILINEAR) is not None

    def no_pil(*args):
        raise AssertionError("PIL path used")

    monkeypatch.setattr("batchcls.transforms.timm.open_pil_rgb", no_pil)
    for name in ("500x375.jpg", "gray.jpg", "progressive.jpg", "adobe_rgb.jpg", "s444.jpg"):
        t.load(images[name])
    with pytest.raises(AssertionError, match="PIL path"):
        t.load(images["cmyk.jpg"])  # simplejpeg cannot do CMYK: PIL must take it


def test_timm_ignores_exif_orientation(images):
    """torchvision's loader does not rotate; an EXIF-rotated 333x250 stays landscape."""
    t = TimmTransform(input_size=64, resize_size=64)
    got = t.load(images["exif6.jpg"])
    np.testing.assert_array_equal(got, reference_timm(images["exif6.jpg"], 64, 64))


@pytest.mark.parametrize("fast", [True, False])
def test_truncated_jpeg_is_an_error_in_both_paths(tmp_path, fast):
    """PIL's default (LOAD_TRUNCATED_IMAGES=False) is the reference: a cut JPEG never decodes."""
    t = TimmTransform(fast=fast)
    for progressive in (False, True):
        data = encode(make_rgb(500, 375, 3), progressive=progressive)
        for cut in (len(data) - 1, len(data) - 2, len(data) - 40, len(data) // 2, 700):
            with pytest.raises(SampleError, match="truncated"):
                t.from_bytes(data[:cut], "cut.jpg")


def test_from_bytes_equals_load(images):
    for profile in PROFILES:
        t = create_transform(profile, vdsp_params="timm-dla34" if profile == "vdsp" else None)
        for name in ("500x375.jpg", "rgba.png", "cmyk.jpg"):
            with open(images[name], "rb") as f:
                data = f.read()
            np.testing.assert_array_equal(t.from_bytes(memoryview(data)), t.load(images[name]))


# ---------------------------------------------------------------- vdsp and ppcls


def test_vdsp_matches_opencv_reference(images):
    t = create_transform("vdsp", vdsp_params="timm-dla34")
    config = load_vdsp_params(shipped_vdsp_params()["timm-dla34"])["OpConfig"]
    assert t.mean == tuple(config["Mean"]) and t.std == tuple(config["Std"])
    for name, path in images.items():
        if name == "palette.gif" and cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is None:
            continue  # an OpenCV build without GIF
        np.testing.assert_array_equal(t.load(path), reference_vdsp(path, config), err_msg=name)


def test_vdsp_from_a_json_path_with_other_geometry(tmp_path, images):
    params = load_vdsp_params(shipped_vdsp_params()["timm-dla34"])
    params["OpConfig"].update(ResizeWidth=300, ResizeHeight=260, OimageWidth=200, OimageHeight=180,
                              CropX=7, CropY=41)
    path = tmp_path / "custom-vdsp_params.json"
    path.write_text(json.dumps(params))
    t = create_transform("vdsp", vdsp_params=str(path))
    assert t.out_shape == (3, 180, 200)
    for name in ("375x500.jpg", "gray.jpg", "rgba.png"):
        np.testing.assert_array_equal(t.load(images[name]), reference_vdsp(images[name], params["OpConfig"]))


def test_ppcls_matches_paddleclas_reference(images):
    t = create_transform("ppcls")
    assert t.out_shape == (3, 224, 224) and t.resize_size == 256
    for name, path in images.items():
        if name == "palette.gif" and cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is None:
            continue
        np.testing.assert_array_equal(t.load(path), reference_ppcls(path), err_msg=name)


def test_ppcls_normalisation_is_paddleclas_arithmetic(images):
    t = create_transform("ppcls")
    batch = np.stack([t.load(images["500x375.jpg"]), t.load(images["rgba.png"])])
    mean = np.array(IMAGENET_MEAN).reshape((3, 1, 1)).astype("float32")
    std = np.array(IMAGENET_STD).reshape((3, 1, 1)).astype("float32")
    expected = (batch.astype("float32") * np.float32(1.0 / 255.0) - mean) / std
    np.testing.assert_array_equal(t.normalize(batch), expected)


# ---------------------------------------------------------------- normalize


def test_normalize_is_bit_identical_to_float32_arithmetic():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (5, 3, 17, 23), dtype=np.uint8)
    batch[0, :, 0, :] = np.arange(23)[None] * 11  # every channel sees 0 and 242
    batch[0, :, 1, :3] = 255
    fp16_rounded = ((0.485107421875, 0.4560546875, 0.406005859375), (0.22900390625, 0.2239990234375, 0.2249755859375))
    for mean, std in ((IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), fp16_rounded):
        m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        expected = (batch.astype(np.float32) / np.float32(255) - m) / s
        got = normalize(batch, mean, std)
        assert got.dtype == np.float32 and got.shape == batch.shape
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(normalize(batch[2], mean, std), expected[2])


def test_normalize_table_covers_every_value():
    table = normalization_table(IMAGENET_MEAN, IMAGENET_STD)
    assert table.shape == (3, 256) and table.dtype == np.float32
    assert math.isclose(float(table[0, 0]), -0.485 / 0.229, rel_tol=1e-6)


@pytest.mark.parametrize("batch, match", [
    (np.zeros((2, 3, 4, 4), np.float32), "uint8"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"\[N,3,H,W\]"),
    ([[1, 2, 3]], "uint8"),
])
def test_normalize_rejects_bad_batches(batch, match):
    with pytest.raises(ValueError, match=match):
        normalize(batch, IMAGENET_MEAN, IMAGENET_STD)


# ---------------------------------------------------------------- registry and errors


@pytest.mark.parametrize("name", sorted(shipped_vdsp_params()))
def test_every_shipped_vdsp_json(name, images):
    path = shipped_vdsp_params()[name]
    config = load_vdsp_params(path)["OpConfig"]
    assert config["CropX"] + config["OimageWidth"] <= config["ResizeWidth"]
    assert config["CropY"] + config["OimageHeight"] <= config["ResizeHeight"]
    for source in (name, path, os.path.basename(path)):
        t = create_transform("vdsp", vdsp_params=source)
        assert t.out_shape == (3, 224, 224)
        json.dumps(t.resolved())
    assert t.load(images["500x375.jpg"]).shape == (3, 224, 224)


def test_resolved_is_json_and_names_the_pixels():
    for profile in PROFILES:
        t = create_transform(profile, vdsp_params="ppcls-dla34" if profile == "vdsp" else None)
        resolved = json.loads(json.dumps(t.resolved()))
        assert resolved["profile"] == profile and t.profile == profile
        assert resolved["mean"] == list(t.mean) and resolved["std"] == list(t.std)
    assert create_transform("timm", crop_pct=0.875).resolved() == create_transform("timm", resize_size=256).resolved()


def _vdsp_json(tmp_path, **changes) -> str:
    params = load_vdsp_params(shipped_vdsp_params()["timm-dla34"])
    for key, value in changes.items():
        if value is None:
            del params["OpConfig"][key]
        else:
            params["OpConfig"][key] = value
    path = tmp_path / "bad-vdsp_params.json"
    path.write_text(json.dumps(params))
    return str(path)


@pytest.mark.parametrize("profile, kwargs, match", [
    ("tf", {}, r"unknown preprocessing profile 'tf'; allowed: timm, vdsp, ppcls"),
    ("timm", {"interpolation": "nearest"}, r"interpolation 'nearest'.*allowed: 'bilinear', 'bicubic'"),
    ("ppcls", {"interpolation": "lanczos"}, r"allowed: 'bilinear', 'bicubic'"),
    ("timm", {"input_size": 0}, r"input_size must be a positive integer"),
    ("timm", {"input_size": 224.0}, r"input_size must be a positive integer"),
    ("timm", {"resize_size": True}, r"resize_size must be a positive integer"),
    ("timm", {"crop_pct": 1.5}, r"crop_pct must be a number in \(0, 1\]"),
    ("ppcls", {"crop_pct": 0}, r"crop_pct must be a number in \(0, 1\]"),
    ("vdsp", {"vdsp_params": "timm-dla34", "crop_pct": float("nan")}, r"crop_pct must be a number in \(0, 1\]"),
    ("timm", {"mean": (0.5, 0.5)}, r"mean must be three finite numbers"),
    ("timm", {"std": (0.2, 0.0, 0.2)}, r"std must be positive"),
    ("timm", {"max_pixels": -1}, r"max_pixels must be a positive integer"),
    ("timm", {"vdsp_params": "timm-dla34"}, r"vdsp_params is only used by the vdsp profile"),
    ("ppcls", {"input_size": 300}, r"input_size 300 is larger than resize_size 256"),
    ("vdsp", {}, r"the vdsp profile needs vdsp_params"),
    ("vdsp", {"vdsp_params": "timm-dla35"}, r"neither a JSON file nor a shipped name.*timm-dla34"),
    ("vdsp", {"vdsp_params": "timm-dla34", "input_size": 256}, r"input_size=256 conflicts"),
    ("vdsp", {"vdsp_params": "timm-dla34", "crop_pct": 0.95}, r"crop_pct=0.95 conflicts"),
    ("vdsp", {"vdsp_params": "timm-dla34", "interpolation": "bicubic"}, r"allowed for vdsp: 'bilinear'"),
])
def test_create_transform_rejects_bad_values(profile, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_transform(profile, **kwargs)


def test_vdsp_accepts_agreeing_sizes():
    t = create_transform("vdsp", vdsp_params="timm-dla34", input_size=224, resize_size=256, crop_pct=0.875,
                         interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert t.mean == IMAGENET_MEAN


@pytest.mark.parametrize("changes, match", [
    ({"Mean": None}, r"OpConfig is missing key 'Mean'"),
    ({"NormaType": "MINUSMEAN_DIVSTD"}, r"unsupported NormaType 'MINUSMEAN_DIVSTD'; allowed: DIV255_MINUSMEAN_DIVSTD"),
    ({"ResizeType": "BICUBIC_PIL"}, r"unsupported ResizeType 'BICUBIC_PIL'; allowed: BILINEAR_CV"),
    ({"ColorCvtCode": "RGB2BGR"}, r"unsupported ColorCvtCode"),
    ({"CropX": 40}, r"crop 224x224 at \(40,16\) is larger than the resize 256x256"),
    ({"OimageHeight": 300}, r"is larger than the resize"),
    ({"ResizeWidth": "256"}, r"ResizeWidth must be an integer"),
])
def test_bad_vdsp_json(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        create_transform("vdsp", vdsp_params=_vdsp_json(tmp_path, **changes))


def test_load_vdsp_params_errors(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read vdsp params JSON"):
        load_vdsp_params(str(tmp_path / "a.json"))
    (tmp_path / "b.json").write_text('{"OpType": "X"}')
    with pytest.raises(ValueError, match="missing key 'OpConfig'"):
        load_vdsp_params(str(tmp_path / "b.json"))
    params = load_vdsp_params(_vdsp_json(tmp_path))  # as it is: nothing added or renamed
    assert set(params) == {"OpType", "OpConfig"} and params["OpConfig"]["ResizeType"] == "BILINEAR_CV"
