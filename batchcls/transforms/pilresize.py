"""torchvision's Resize(shorter side) + CenterCrop on PIL images, bit-exact, computing only kept pixels."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image

try:  # the compiled resampler (setup.py); without it Pillow does the same work, slower
    from ._resample import resize_crop as _compiled
except ImportError:  # pragma: no cover - an install without a C compiler
    _compiled = None

# Half-width of Pillow's filters, in source pixels at scale 1 (Resample.c).
_FILTER_SUPPORT = {Image.Resampling.BILINEAR: 1.0, Image.Resampling.BICUBIC: 2.0}


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's _compute_resized_output_size for an int size: (width, height) after Resize."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)  # same operation order as torchvision: truncation matters
    return (size, new_long) if width <= height else (new_long, size)


def crop_offset(length: int, crop: int) -> int:
    """torchvision's CenterCrop offset: int(round((length - crop) / 2)), round half to even."""
    return int(round((length - crop) / 2.0))


def resize_center_crop(src, size: int, crop: int, resample: int, *, crop_aware: bool = True) -> np.ndarray:
    """Resize(size) of the shorter side then CenterCrop(crop): uint8 CHW (3, crop, crop).

    src is an RGB PIL image, or an HWC uint8 array with 3 (RGB) or 4 (RGBX) channels. Equal to
    torchvision's Resize + CenterCrop + ToTensor on the PIL image before the division by 255,
    zero padding included when the crop is larger than the resized image. With crop_aware, the
    same pixels are computed without resampling rows and columns the crop throws away.
    """
    w, h = (src.shape[1], src.shape[0]) if isinstance(src, np.ndarray) else src.size
    if crop_aware:
        args = _compiled_args(w, h, size, crop, int(resample))
        if args is not None:
            return _compiled(np.asarray(src) if isinstance(src, Image.Image) else src, *args)
    plan = _plan(w, h, size, crop, resample) if crop_aware else None
    if plan is not None:
        return _to_chw(_run(src, plan, crop, resample))
    img = _as_image(src)
    out_w, out_h = resized_size(w, h, size)
    if (out_w, out_h) != (w, h):
        img = img.resize((out_w, out_h), resample)
    if crop > out_w or crop > out_h:
        return _pad_crop(_to_chw(img), crop)
    left, top = crop_offset(out_w, crop), crop_offset(out_h, crop)
    return _to_chw(img.crop((left, top, left + crop, top + crop)))


def _as_image(src, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None) -> Image.Image:
    """src (PIL image or HWC RGB/RGBX array) restricted to rows/cols, as an RGB PIL image."""
    if isinstance(src, Image.Image):
        w, h = src.size
        r, c = rows or (0, h), cols or (0, w)
        return src if (r, c) == ((0, h), (0, w)) else src.crop((c[0], r[0], c[1], r[1]))
    part = src[slice(*rows) if rows else slice(None), slice(*cols) if cols else slice(None)]
    part = np.ascontiguousarray(part)
    # Pillow stores RGB as 4 bytes a pixel: unpacking RGBX into it is a plain copy.
    rawmode = "RGBX" if part.shape[2] == 4 else "RGB"
    return Image.frombytes("RGB", (part.shape[1], part.shape[0]), part, "raw", rawmode)


def _to_chw(img: Image.Image) -> np.ndarray:
    w, h = img.size
    out = np.empty((3, h, w), np.uint8)
    for c, band in enumerate("RGB"):
        out[c] = np.frombuffer(img.tobytes("raw", band), np.uint8).reshape(h, w)
    return out


def _pad_crop(chw: np.ndarray, crop: int) -> np.ndarray:
    """torchvision's CenterCrop when the image is smaller than the crop: zero-pad, then crop."""
    _, h, w = chw.shape
    pad_top = (crop - h) // 2 if crop > h else 0
    pad_left = (crop - w) // 2 if crop > w else 0
    padded = np.zeros((3, max(h, crop), max(w, crop)), np.uint8)
    padded[:, pad_top : pad_top + h, pad_left : pad_left + w] = chw
    top, left = crop_offset(padded.shape[1], crop), crop_offset(padded.shape[2], crop)
    return np.ascontiguousarray(padded[:, top : top + crop, left : left + crop])


@dataclass(frozen=True)
class _Plan:
    """How to compute the kept pixels with two single-axis Pillow resizes (see _plan)."""

    first: int  # axis of Pillow's first pass: 0 = horizontal (x), 1 = vertical (y)
    keep: tuple[int, int]  # input range kept along the other axis
    out: tuple[int, int]  # (width, height) after Resize
    offset: tuple[int, int]  # (left, top) of the CenterCrop
    box1: tuple[float, float] | None  # exact box of the kept pixels along the first axis
    box2: tuple[float, float] | None  # same along the second axis, relative to keep[0]


@functools.lru_cache(maxsize=4096)
def _plan(w: int, h: int, size: int, crop: int, resample: int) -> _Plan | None:
    """The crop of img.resize(out) as two single-axis resizes; None when not provably exact.

    Pillow resizes in two 8-bit passes, one per axis, so two single-axis calls in Pillow's own
    order give the same bytes as one call. Rows (or columns) the second pass does not read are
    cut from the first pass's input, and an axis with an exact (dyadic) scale gets a `box`
    restricted to the kept pixels: with a dyadic scale every filter centre and weight Pillow
    computes for the box is the very double it computes for the full image. The short side's
    scale is dyadic when the resize size is a power of two (256), which makes the default fast.
    """
    out = resized_size(w, h, size)
    if out == (w, h) or crop > min(out) or resample not in _FILTER_SUPPORT or not _order_rule_holds():
        return None
    first = 1 if _vertical_first((w, h), out) else 0
    second, size_in = 1 - first, (w, h)
    offset = (crop_offset(out[0], crop), crop_offset(out[1], crop))
    keep = _needed_input(size_in[second], out[second], offset[second], crop, _FILTER_SUPPORT[resample])
    box1 = _exact_box(size_in[first], out[first], offset[first], crop, shift=0)
    box2 = _exact_box(size_in[second], out[second], offset[second], crop, shift=keep[0])
    if box1 is None and box2 is None:
        return None
    return _Plan(first, keep, out, offset, box1, box2)


def _run(src, plan: _Plan, crop: int, resample: int) -> Image.Image:
    """Execute a plan on src: the crop x crop RGB image torchvision would produce."""
    first, second = plan.first, 1 - plan.first
    part = _as_image(src, rows=plan.keep) if second == 1 else _as_image(src, cols=plan.keep)
    part = _single_pass(part, first, plan.out[first], plan.box1, plan.offset[first], crop, resample)
    if plan.box2 is not None:
        return part.resize(_axes_size(first, crop, crop), resample, _axes_box(first, (0, crop), plan.box2))
    # The second axis has no exact box: run it on the full frame, the rows it skips left at zero.
    full_len = src.shape[1 - second] if isinstance(src, np.ndarray) else src.size[second]
    canvas = Image.new("RGB", _axes_size(first, crop, full_len))
    canvas.paste(part, _axes_size(first, 0, plan.keep[0]))
    return _single_pass(canvas, second, plan.out[second], None, plan.offset[second], crop, resample)


def _single_pass(img, axis, out_len, box, offset, crop, resample) -> Image.Image:
    """Resample along one axis only, keeping crop pixels from offset; box = exact kept extent."""
    other = img.size[1 - axis]
    if box is not None:
        return img.resize(_axes_size(axis, crop, other), resample, _axes_box(axis, box, (0, other)))
    full = img.resize(_axes_size(axis, out_len, other), resample)
    return full.crop(_axes_box(axis, (offset, offset + crop), (0, other)))


def _axes_size(axis: int, along: int, across: int) -> tuple[int, int]:
    return (along, across) if axis == 0 else (across, along)


def _axes_box(axis: int, along: tuple, across: tuple) -> tuple:
    if axis == 0:
        return (along[0], across[0], along[1], across[1])
    return (across[0], along[0], across[1], along[1])


def _needed_input(in_len: int, out_len: int, first: int, count: int, support: float) -> tuple[int, int]:
    """Input range [lo, hi) Pillow reads for outputs first..first+count-1 (precompute_coeffs).

    Widened by one pixel on each side: any superset is exact, a too-narrow range would not be.
    """
    scale = in_len / out_len
    reach = support * max(scale, 1.0)
    lo = int((first + 0.5) * scale - reach + 0.5)
    hi = int((first + count - 0.5) * scale + reach + 0.5)
    return max(lo - 1, 0), min(hi + 1, in_len)


def _exact_box(in_len: int, out_len: int, first: int, count: int, shift: int) -> tuple[float, float] | None:
    """Box edges (input units, minus shift) covering outputs first..first+count-1, if exact.

    Exact means the scale in_len/out_len is a double without rounding and both edges and their
    difference are float32 values (Pillow's box is float32): then every centre Pillow computes
    from the box equals, bit for bit, the one it computes for the full image, shifted.
    """
    scale = in_len / out_len
    if Fraction(scale) != Fraction(in_len, out_len):
        return None
    b0, b1 = first * scale - shift, (first + count) * scale - shift
    if b0 < 0 or any(float(np.float32(v)) != v for v in (b0, b1, b1 - b0)):
        return None
    return b0, b1


def _vertical_first(size: tuple[int, int], out: tuple[int, int]) -> bool:
    """Whether Pillow runs the vertical pass first for this resize (Resample.c, Pillow >= 13).

    Pillow 13 runs it first when the height shrinks by more than twice the pixels the width does;
    earlier versions always ran the horizontal pass first. _order_rule_holds checks which it is.
    """
    if _PILLOW_MAJOR < 13:
        return False
    dh, dw = size[1] - out[1], size[0] - out[0]
    return dh > 0 and dh > dw * 2


_PILLOW_MAJOR = int(Image.__version__.split(".")[0])

# (in_w, in_h, out_w, out_h) around the boundary of Pillow 13's rule, both sides of it.
_ORDER_PROBES = ((30, 60, 24, 40), (30, 60, 20, 45), (30, 60, 25, 50), (30, 60, 25, 49), (60, 30, 40, 20),
                 (30, 60, 40, 80), (30, 60, 35, 50), (41, 97, 37, 60))


@functools.cache
def _order_rule_holds() -> bool:
    """Check once, on small random images, that this Pillow passes in the order _vertical_first says.

    If a future Pillow changes its rule, the crop-aware path switches itself off rather than
    drift by a grey level.
    """
    rng = np.random.default_rng(0)
    for w, h, ow, oh in _ORDER_PROBES:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for resample in _FILTER_SUPPORT:
            one = np.asarray(img.resize((ow, oh), resample))
            if _vertical_first((w, h), (ow, oh)):
                two = img.resize((w, oh), resample).resize((ow, oh), resample)
            else:
                two = img.resize((ow, h), resample).resize((ow, oh), resample)
            if not np.array_equal(one, np.asarray(two)):
                return False
    return True


@functools.lru_cache(maxsize=4096)
def _compiled_args(w: int, h: int, size: int, crop: int, resample: int) -> tuple | None:
    """Arguments of the compiled resampler for this resize and crop; None where Pillow must do it
    (no compiler at install, another filter, a crop larger than the image, a Pillow that fails the
    self-check)."""
    out = resized_size(w, h, size)
    if crop > min(out) or resample not in _FILTER_SUPPORT or not compiled_resize_available():
        return None
    return (*out, crop_offset(out[0], crop), crop_offset(out[1], crop), crop, crop, resample,
            _vertical_first((w, h), out))


# (in_w, in_h, out_w, out_h, left, top, crop_w, crop_h): both pass orders, one axis only, no
# change, upscaling, crops at the edges.
_COMPILED_PROBES = ((500, 375, 341, 256, 58, 16, 224, 224), (375, 500, 256, 341, 16, 58, 224, 224),
                    (30, 60, 25, 49, 0, 0, 25, 49), (30, 60, 24, 40, 3, 5, 17, 30), (61, 37, 61, 20, 0, 2, 61, 15),
                    (61, 37, 20, 37, 1, 0, 19, 30), (19, 23, 19, 23, 2, 3, 10, 9), (7, 5, 40, 33, 11, 3, 24, 24))


@functools.cache
def compiled_resize_available() -> bool:
    """The compiled resampler is built, and gives this Pillow's bytes on probe images (both filters,
    both pass orders, RGB and RGBX); otherwise every resize goes through Pillow."""
    if _compiled is None or not _order_rule_holds():
        return False
    rng = np.random.default_rng(1)
    for w, h, ow, oh, left, top, cw, ch in _COMPILED_PROBES:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rgbx = np.concatenate([rgb, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=2)
        for resample in _FILTER_SUPPORT:
            want = np.asarray(Image.fromarray(rgb).resize((ow, oh), resample).crop((left, top, left + cw, top + ch)))
            want = want.transpose(2, 0, 1)
            for src in (rgb, rgbx):
                got = _compiled(src, ow, oh, left, top, cw, ch, int(resample), _vertical_first((w, h), (ow, oh)))
                if not np.array_equal(got, want):
                    return False
    return True
