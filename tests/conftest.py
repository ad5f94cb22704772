"""Shared fixtures: generated JPEG folders with bad files, a tiny seeded ONNX model, a local Ray cluster."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from batchcls.synthetic import encode, generate_imagenet_folder, make_rgb, tiny_classifier_onnx

# Bad inputs every run must survive: name -> how to make it in a folder.
BAD_FILES = {
    "ILSVRC2012_val_90000001.JPEG": "empty",
    "ILSVRC2012_val_90000002.JPEG": "truncated",
    "ILSVRC2012_val_90000003.JPEG": "not_image",
    "ILSVRC2012_val_90000004.JPEG": "directory",
}


def write_bad_files(root: str, good_example: str) -> dict[str, str]:
    """Add the BAD_FILES to `root`, the truncated one cut from `good_example`; returns name -> kind."""
    for name, kind in BAD_FILES.items():
        path = os.path.join(root, name)
        if kind == "empty":
            open(path, "wb").close()
        elif kind == "truncated":
            data = open(good_example, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
        elif kind == "not_image":
            open(path, "wb").write(b"this is not a JPEG at all\n" * 10)
        elif kind == "directory":
            os.makedirs(path, exist_ok=True)
    return dict(BAD_FILES)


def reference_timm(path: str, size: int = 256, crop: int = 224, mean=(0.485, 0.456, 0.406),
                   std=(0.229, 0.224, 0.225)) -> np.ndarray:
    """The seed's preprocessing written from PIL calls and torchvision's documented rounding:
    shorter side -> `size` (long side truncated), bilinear; center crop at int(round((H - crop) / 2));
    ToTensor + Normalize in float32. Returns float32 CHW."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
    x = arr.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    m = np.array(mean, np.float32)[:, None, None]
    s = np.array(std, np.float32)[:, None, None]
    return (x - m) / s


@pytest.fixture(scope="session")
def imagenet_flat(tmp_path_factory):
    """A flat ILSVRC2012-val-like folder: 300 generated JPEGs over 10 classes, a label file, and the
    BAD_FILES (listed in the label file too, so they are labelled samples that fail)."""
    root = str(tmp_path_factory.mktemp("val_flat"))
    labels = generate_imagenet_folder(root, 300, classes=10, seed=1)
    write_bad_files(root, os.path.join(root, "ILSVRC2012_val_00000001.JPEG"))
    with open(labels, "a") as f:
        for name in BAD_FILES:
            f.write(f"{name} 7\n")
    return root, labels


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    return tiny_classifier_onnx(str(tmp_path_factory.mktemp("model") / "tiny.onnx"), seed=0)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray cluster of 2 CPUs for one test module (modules with their own cluster shut it down)."""
    import ray

    from batchcls.cluster import connect

    if ray.is_initialized():
        ray.shutdown()
    connect(None, num_cpus=2)  # as a run without runtime.ray_address starts its own
    yield ray
    ray.shutdown()


@pytest.fixture
def small_photos(tmp_path):
    """A few small generated JPEGs, one per call."""
    paths = []
    for i, size in enumerate([(120, 90), (90, 120), (300, 200)]):
        p = tmp_path / f"img {i} é.JPEG"
        p.write_bytes(encode(make_rgb(size[0], size[1], seed=5 + i)))
        paths.append(str(p))
    return paths


def write_job(tmp_path, **sections) -> str:
    """A job YAML in tmp_path from section dicts; returns its path."""
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return str(path)


def write_png_bomb(path: str, width: int = 30000, height: int = 30000) -> None:
    """A tiny PNG whose header declares width x height pixels: over PIL's decompression-bomb limit."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width * 3 + 1))  # one scanline; the header alone must be refused
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
