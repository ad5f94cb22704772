"""Generated data for demos, tests and benchmarks: ImageNet-like JPEG folders and a tiny seeded ONNX classifier."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .data.discover import imagenet_synsets

# ILSVRC2012 val is mostly 500x375 / 375x500 with a tail of larger images.
_SIZES = ((500, 375), (500, 333), (375, 500), (500, 500), (640, 480), (333, 500), (800, 600), (1024, 768))
_SIZE_WEIGHTS = (0.42, 0.14, 0.16, 0.08, 0.08, 0.06, 0.04, 0.02)


def make_photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A photograph-like RGB image: smooth gradients, soft shapes, texture and sensor noise (JPEG
    statistics close to real photos, unlike flat noise, which compresses and decodes very differently)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        base[..., c] = 128 + 70 * np.sin(a * xx / w * 3 + b * yy / h * 3 + p * 6)
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2 + 21)), y0 + int(rng.integers(20, h // 2 + 21))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.5))))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def generate_imagenet_folder(root: str, count: int, classes: int = 8, seed: int = 0, layout: str = "flat",
                             small: bool = False) -> str | None:
    """Write `count` JPEGs (quality 90, 4:2:0) named like ILSVRC2012 val into `root`, spread evenly over
    `classes` ImageNet classes. Flat layout: returns the path of the `<filename> <class index>` label
    file written beside the images; folder layout: one folder per synset, returns None.
    `small` makes ~100x75 images for bookkeeping-only runs."""
    rng = np.random.default_rng(seed)
    synsets = imagenet_synsets()
    class_ids = sorted(rng.choice(len(synsets), size=classes, replace=False).tolist())
    os.makedirs(root, exist_ok=True)
    lines = []
    for i in range(count):
        cls = class_ids[i % classes]
        size = _SIZES[rng.choice(len(_SIZES), p=_SIZE_WEIGHTS)]
        if small:
            size = (size[0] // 5, size[1] // 5)
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        rel = name if layout == "flat" else os.path.join(synsets[cls], name)
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        make_photo(rng, size).save(os.path.join(root, rel), "JPEG", quality=90, subsampling="4:2:0")
        lines.append(f"{name} {cls}")
    if layout != "flat":
        return None
    label_path = os.path.join(root, "val_label.txt")
    with open(label_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return label_path


def tiny_classifier_onnx(path: str, seed: int = 0, num_classes: int = 1000, input_size: int = 224,
                         fixed_batch: int | None = None, width: int = 16, stride: int = 4) -> str:
    """A small CNN (conv 3->width, ReLU, conv width->32 stride 2, ReLU, global average pool, 1x1 conv
    to `num_classes`) with seeded random weights, as ONNX opset 17 with input `input` and output `logits`.
    A larger `width` and smaller `stride` make it slower, for tests that need a run to last a while."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("w1", (width, 3, 7, 7), (2 / 147) ** 0.5), init("b1", (width,), 0.1),
             init("w2", (32, width, 3, 3), (2 / (9 * width)) ** 0.5), init("b2", (32,), 0.1),
             init("w3", (num_classes, 32, 1, 1), (1 / 32) ** 0.5), init("b3", (num_classes,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], strides=[stride, stride], pads=[3, 3, 3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Conv", ["p", "w3", "b3"], ["c3"]),
        helper.make_node("Flatten", ["c3"], ["logits"]),
    ]
    batch = fixed_batch if fixed_batch else "N"
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, num_classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path
