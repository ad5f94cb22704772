"""Read and decode one image file, turning every failure into a SampleError with a short reason."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from batchcls.errors import SampleError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0..7, SOI.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])
# What simplejpeg decodes exactly as PIL does; CMYK/YCCK go to PIL, which inverts Adobe CMYK.
_SIMPLEJPEG_COLORSPACES = frozenset(["YCbCr", "Gray", "RGB"])


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file; a directory, a missing, unreadable or empty file raises SampleError."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise SampleError(name, "is a directory") from None
    except FileNotFoundError:
        raise SampleError(name, "no such file") from None
    except OSError as e:
        raise SampleError(name, f"unreadable: {e.strerror or e}") from None
    if not data:
        raise SampleError(name, "empty file (0 bytes)")
    return data


def ensure_bytes(data, name: str) -> bytes:
    """bytes from any buffer; empty data raises SampleError like an empty file."""
    data = data if isinstance(data, bytes) else bytes(data)
    if not data:
        raise SampleError(name, "empty file (0 bytes)")
    return data


def check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse images over max_pixels before anything is decoded (PIL's decompression-bomb guard)."""
    if max_pixels is not None and width * height > max_pixels:
        raise SampleError(
            name,
            f"image is {width}x{height} = {width * height} pixels, over the "
            f"decompression-bomb limit of {max_pixels} pixels",
        )


@dataclass(frozen=True)
class JpegLayout:
    """Frame size and where the first scan starts (None when the file ends before it)."""

    width: int
    height: int
    scan_offset: int | None


def jpeg_layout(data: bytes) -> JpegLayout | None:
    """Walk the JPEG marker segments up to the first scan; None if this is not a JPEG frame."""
    if not data.startswith(JPEG_SOI):
        return None
    size, i, n = None, 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF or marker in _JPEG_STANDALONE:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:
            return None if size is None else JpegLayout(size[0], size[1], i)
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF and i + 9 <= n:
            size = (int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big"))
        i += 2 + length
    return None if size is None else JpegLayout(size[0], size[1], None)


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, or None if this is not a PNG."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def png_is_complete(data: bytes) -> bool:
    """Every chunk, the final IEND included, fits in the data (length, type, data, CRC)."""
    i, n = len(PNG_SIGNATURE), len(data)
    while i + 12 <= n:
        if data[i + 4 : i + 8] == b"IEND":
            return True
        i += 12 + int.from_bytes(data[i : i + 4], "big")
    return False


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a JPEG or PNG header without decoding; None for other formats."""
    layout = jpeg_layout(data)
    if layout is not None:
        return layout.width, layout.height
    return png_size(data)


def check_complete(name: str, data: bytes) -> None:
    """Refuse JPEG and PNG files that end early: OpenCV may decode them into grey garbage."""
    if data.startswith(JPEG_SOI):
        layout = jpeg_layout(data)
        if layout is None:
            raise SampleError(name, "cannot decode: JPEG without a frame header (truncated or corrupt)")
        # 0xFF is always stuffed or a restart marker inside scans, so a later FFD9 is the real EOI.
        if layout.scan_offset is None or data.rfind(JPEG_EOI) < layout.scan_offset:
            raise SampleError(name, "truncated image: JPEG data ends before its end-of-image marker")
    elif png_size(data) is not None and not png_is_complete(data):
        raise SampleError(name, "truncated image: PNG data ends before its IEND chunk")


def decode_reason(exc: BaseException) -> str:
    """A short human reason for an exception raised by PIL while opening or decoding."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image: cannot identify image file"
    if isinstance(exc, Image.DecompressionBombError):
        return f"over the decompression-bomb limit: {exc}"
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower():
        return f"truncated image: {text}"
    return f"cannot decode: {text}"


def open_pil_rgb(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """torchvision's default loader: Image.open(...).convert('RGB'), no EXIF rotation, no ICC."""
    size = header_size(data)
    if size is not None:
        check_pixels(name, size[0], size[1], max_pixels)
    try:
        img = Image.open(io.BytesIO(data))
        check_pixels(name, img.width, img.height, max_pixels)
        return img.convert("RGB")
    except SampleError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise SampleError(name, decode_reason(e)) from e


def decode_jpeg_rgbx(data: bytes, name: str, max_pixels: int | None) -> np.ndarray | None:
    """HWC RGBX uint8 via simplejpeg, RGB bytes identical to PIL's; None when PIL must decide.

    RGBX because Pillow stores RGB as 4 bytes a pixel: turning it into a PIL image is then a copy.

    simplejpeg (strict) raises on anything libjpeg only warns about, such as a truncated scan;
    those files, CMYK/YCCK files and non-JPEGs return None so that PIL, the reference, decodes
    them or reports the error.
    """
    if not data.startswith(JPEG_SOI):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _SIMPLEJPEG_COLORSPACES:
        return None
    check_pixels(name, width, height, max_pixels)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGBX", fastdct=False, fastupsample=False)
    except ValueError:
        return None


def decode_cv2_bgr(data: bytes, name: str, max_pixels: int | None) -> np.ndarray:
    """cv2.imdecode(data, IMREAD_COLOR): HWC BGR uint8, after the size and truncation checks."""
    size = header_size(data)
    if size is None:
        size = _pil_header_size(data, name)
    if size is not None:
        check_pixels(name, size[0], size[1], max_pixels)
    check_complete(name, data)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        reason = "cannot decode: OpenCV could not decode it" if size else "not an image: cannot identify image file"
        raise SampleError(name, reason)
    if size is None:
        check_pixels(name, bgr.shape[1], bgr.shape[0], max_pixels)
    return bgr


def _pil_header_size(data: bytes, name: str) -> tuple[int, int] | None:
    """Size of formats other than JPEG/PNG from PIL's lazy header parse; None if PIL cannot tell."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Image.DecompressionBombError as e:
        raise SampleError(name, decode_reason(e)) from e
    except Exception:
        # OpenCV reads a few formats PIL does not; let it try.
        return None
