"""The timm profile against torchvision (and timm's create_transform) themselves, when installed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from batchcls.constants import IMAGENET_MEAN, IMAGENET_STD
from batchcls.transforms import TimmTransform, normalize
from batchcls.synthetic import encode, make_rgb

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")
folder = pytest.importorskip("torchvision.datasets.folder")
InterpolationMode = transforms.InterpolationMode


def _pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    """60 generated images: 42 JPEGs of random geometry and the odd modes the loader converts."""
    root = tmp_path_factory.mktemp("tv_parity")
    rng = np.random.default_rng(2024)
    files = {}
    fixed = [(500, 375), (375, 500), (256, 341), (256, 256), (100, 80), (333, 1001), (1001, 333), (1, 1)]
    sizes = fixed + [tuple(int(v) for v in rng.integers(30, 1000, 2)) for _ in range(34)]
    for i, (w, h) in enumerate(sizes):
        files[f"j{i}_{w}x{h}.JPEG"] = encode(make_rgb(w, h, 500 + i), progressive=i % 7 == 3)
    rgb = make_rgb(357, 268, 77)
    img = Image.fromarray(rgb)
    rgba = img.copy()
    rgba.putalpha(Image.fromarray(255 - rgb[:, :, 2]))
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    files.update({
        "gray.JPEG": encode(rgb, mode="L"), "cmyk.JPEG": encode(rgb, mode="CMYK"),
        "prog.JPEG": encode(rgb, progressive=True), "444.JPEG": encode(rgb, subsampling="4:4:4"),
        "rgba.png": _pil_bytes(rgba, "PNG"), "palette.png": _pil_bytes(palette, "PNG"),
        "la.png": _pil_bytes(rgba.convert("LA"), "PNG"), "l.png": _pil_bytes(img.convert("L"), "PNG"),
        "i16.png": _pil_bytes(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257), "PNG"),
        "bilevel.png": _pil_bytes(img.convert("1"), "PNG"), "rgb.bmp": _pil_bytes(img, "BMP"),
        "rgb.webp": _pil_bytes(img, "WEBP", quality=90), "rgb.tif": _pil_bytes(img, "TIFF"),
        "palette.gif": _pil_bytes(palette, "GIF"), "png.JPEG": _pil_bytes(img, "PNG"),
        "small_gray.png": _pil_bytes(Image.fromarray(rgb[:90, :70, 1]), "PNG"),
        "tall_rgba.png": _pil_bytes(rgba.resize((120, 700)), "PNG"),
        "cmyk_small.JPEG": encode(rgb[:150, :200], mode="CMYK"),
    })
    out = []
    for name, data in files.items():
        path = root / name
        path.write_bytes(data)
        out.append(str(path))
    return out


def _torchvision(size: int, crop: int, interpolation, to_float: bool):
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)] if to_float else \
        [transforms.PILToTensor()]
    return transforms.Compose([transforms.Resize(size, interpolation=interpolation), transforms.CenterCrop(crop),
                               *tail])


@pytest.mark.parametrize("size, crop, interpolation", [
    (256, 224, "bilinear"), (256, 224, "bicubic"), (232, 224, "bilinear"), (200, 224, "bilinear"),
])
def test_uint8_crop_equals_torchvision_bit_for_bit(paths, size, crop, interpolation):
    assert len(paths) >= 50
    ours = TimmTransform(input_size=crop, resize_size=size, interpolation=interpolation)
    theirs = _torchvision(size, crop, InterpolationMode(interpolation), to_float=False)
    for path in paths:
        expected = theirs(folder.default_loader(path)).numpy()
        np.testing.assert_array_equal(ours.load(path), expected, err_msg=path)


def test_float_input_equals_torchvision(paths):
    ours = TimmTransform()
    theirs = _torchvision(256, 224, InterpolationMode.BILINEAR, to_float=True)
    batch = np.stack([ours.load(p) for p in paths])
    expected = torch.stack([theirs(folder.default_loader(p)) for p in paths]).numpy()
    got = normalize(batch, ours.mean, ours.std)
    worst = float(np.abs(got - expected).max())
    print(f"\ntorchvision parity: {len(paths)} images, uint8 crop identical, float max |diff| = {worst:.3g}")
    assert worst <= 1e-6


def test_equals_timm_create_transform_for_dla(paths):
    timm_data = pytest.importorskip("timm.data")
    timm_models = pytest.importorskip("timm.models")
    for arch in ("dla34", "dla46_c"):
        config = timm_data.resolve_data_config(pretrained_cfg=timm_models.get_pretrained_cfg(arch).to_dict())
        theirs = timm_data.create_transform(**config, is_training=False)
        ours = TimmTransform(input_size=config["input_size"][-1], crop_pct=config["crop_pct"],
                             interpolation=config["interpolation"], mean=config["mean"], std=config["std"])
        for path in paths[::3]:
            expected = theirs(folder.default_loader(path)).numpy()
            got = normalize(ours.load(path)[None], ours.mean, ours.std)[0]
            assert float(np.abs(got - expected).max()) <= 1e-6, path
