"""Every kind of bad file becomes a SampleError with a short reason, in every profile."""

from __future__ import annotations

import os
import re
import struct
import zlib

import numpy as np
import pytest

from batchcls.errors import SampleError
from batchcls.transforms import PROFILES, TimmTransform, create_transform
from batchcls.synthetic import encode, make_rgb

BOMB = r"image is 30000x30000 = 900000000 pixels, over the decompression-bomb limit of 89478485 pixels"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that only declares its size: signature, IHDR, a token IDAT, IEND."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_header(width: int, height: int) -> bytes:
    """SOI and a baseline SOF0 frame header declaring the size, and nothing to decode."""
    sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 17, 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    return b"\xff\xd8" + sof + b"\xff\xd9"


@pytest.fixture(scope="module")
def good_jpeg() -> bytes:
    return encode(make_rgb(500, 375, 5))


@pytest.fixture(scope="module")
def good_png() -> bytes:
    return encode(make_rgb(300, 200, 6), "PNG")


def _make(tmp_path, kind: str, good_jpeg: bytes, good_png: bytes) -> tuple[str, str]:
    """(path, regex the reason must match) for one kind of bad file."""
    path = str(tmp_path / f"bad {kind} ü.JPEG")  # spaces and non-ASCII in the name on purpose
    data = {
        "empty": b"",
        "truncated_jpeg": good_jpeg[: len(good_jpeg) // 2],
        "truncated_jpeg_no_eoi": good_jpeg[:-2],
        "truncated_png": good_png[: len(good_png) // 2],
        "random_bytes": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "text": b"this is not a JPEG at all\n" * 10,
        "png_bomb_header": _png_header(30000, 30000),
        "jpeg_bomb_header": _jpeg_header(30000, 30000),
    }
    reasons = {
        "empty": r"^empty file \(0 bytes\)$",
        "truncated_jpeg": r"^truncated image: ",
        "truncated_jpeg_no_eoi": r"^truncated image: ",
        "truncated_png": r"^truncated image: ",
        "random_bytes": r"^not an image: cannot identify image file$",
        "text": r"^not an image: cannot identify image file$",
        "png_bomb_header": "^" + BOMB + "$",
        "jpeg_bomb_header": "^" + BOMB + "$",
        "directory": r"^is a directory$",
        "missing": r"^no such file$",
    }
    if kind == "directory":
        os.makedirs(path)
    elif kind != "missing":
        with open(path, "wb") as f:
            f.write(data[kind])
    return path, reasons[kind]


KINDS = ["empty", "truncated_jpeg", "truncated_jpeg_no_eoi", "truncated_png", "random_bytes", "text",
         "png_bomb_header", "jpeg_bomb_header", "directory", "missing"]


def _transform(profile: str, **kwargs):
    return create_transform(profile, vdsp_params="timm-dla34" if profile == "vdsp" else None, **kwargs)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_file_raises_sample_error(tmp_path, profile, kind, good_jpeg, good_png):
    path, reason = _make(tmp_path, kind, good_jpeg, good_png)
    with pytest.raises(SampleError) as info:
        _transform(profile).load(path)
    assert info.value.path == path
    assert info.value.reason == info.value.reason.strip() and "\n" not in info.value.reason
    assert re.search(reason, info.value.reason), info.value.reason


@pytest.mark.parametrize("kind", KINDS)
def test_timm_plain_pil_path_gives_the_same_reasons(tmp_path, kind, good_jpeg, good_png):
    path, reason = _make(tmp_path, kind, good_jpeg, good_png)
    with pytest.raises(SampleError) as info:
        TimmTransform(fast=False).load(path)
    assert re.search(reason, info.value.reason), info.value.reason


@pytest.mark.parametrize("profile", PROFILES)
def test_bomb_via_small_max_pixels_on_a_real_image(tmp_path, profile, good_jpeg, good_png):
    for name, data, size in (("a.jpg", good_jpeg, "500x375 = 187500"), ("b.png", good_png, "300x200 = 60000"),
                             ("c.bmp", encode(make_rgb(40, 30, 1), "BMP"), "40x30 = 1200")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(SampleError) as info:
            _transform(profile, max_pixels=1000).load(str(path))
        assert info.value.reason == f"image is {size} pixels, over the decompression-bomb limit of 1000 pixels"
        assert _transform(profile, max_pixels=10**6).load(str(path)).shape == (3, 224, 224)


@pytest.mark.parametrize("profile", PROFILES)
def test_unreadable_file(tmp_path, profile, good_jpeg):
    # root reads a chmod 000 file anyway (CAP_DAC_OVERRIDE), so as root there is nothing to test.
    if os.geteuid() == 0:
        pytest.skip("running as root, which can read a chmod 000 file: nothing to test")
    path = tmp_path / "locked.JPEG"
    path.write_bytes(good_jpeg)
    path.chmod(0)
    try:
        with pytest.raises(SampleError) as info:
            _transform(profile).load(str(path))
        assert info.value.reason == "unreadable: Permission denied"
    finally:
        path.chmod(0o644)


def test_unreadable_reason_even_as_root(tmp_path, monkeypatch, good_jpeg):
    """The same mapping, with the permission error simulated so that it runs as root too."""
    path = tmp_path / "locked.JPEG"
    path.write_bytes(good_jpeg)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("batchcls.transforms.decode.open", denied, raising=False)
    for profile in PROFILES:
        with pytest.raises(SampleError) as info:
            _transform(profile).load(str(path))
        assert (info.value.path, info.value.reason) == (str(path), "unreadable: Permission denied")


@pytest.mark.parametrize("profile", PROFILES)
def test_odd_file_names_load(tmp_path, profile, good_jpeg):
    for name in ("with space.JPEG", "ünïcødé 图像.jpg", "semi;colon'quote\".png", "-dash.JPEG"):
        path = tmp_path / name
        path.write_bytes(good_jpeg)
        assert _transform(profile).load(str(path)).shape == (3, 224, 224)
        assert _transform(profile).load(path).shape == (3, 224, 224)  # os.PathLike too


def test_truncation_behind_an_embedded_thumbnail(good_jpeg):
    """An APP1 segment carrying its own SOI..EOI, as EXIF thumbnails do, must not hide a cut scan."""
    thumb = b"Exif\0\0\xff\xd8" + bytes(10) + b"\xff\xd9"
    data = good_jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(thumb) + 2) + thumb + good_jpeg[2:]
    for profile in PROFILES:
        t = _transform(profile)
        assert t.from_bytes(data).shape == (3, 224, 224)
        with pytest.raises(SampleError) as info:
            t.from_bytes(data[: len(data) * 2 // 3], "cut.jpg")
        assert info.value.reason.startswith("truncated image: "), (profile, info.value.reason)


@pytest.mark.parametrize("profile", PROFILES)
def test_empty_bytes(profile):
    with pytest.raises(SampleError) as info:
        _transform(profile).from_bytes(b"", "x.jpg")
    assert (info.value.path, info.value.reason) == ("x.jpg", "empty file (0 bytes)")
