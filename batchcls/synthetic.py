"""Generated data for demos, tests and benchmarks: ImageNet-like JPEG folders and a tiny seeded ONNX classifier."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw

from .data.discover import imagenet_synsets

# ILSVRC2012 val is mostly 500x375 / 375x500 with a tail of larger images.
_SIZES = ((500, 375), (500, 333), (375, 500), (500, 500), (640, 480), (333, 500), (800, 600), (1024, 768))
_SIZE_WEIGHTS = (0.42, 0.14, 0.16, 0.08, 0.08, 0.06, 0.04, 0.02)


def make_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """A uint8 HWC RGB image with the statistics that matter to resamplers and JPEG.

    Gradients and blurred blobs give the low frequencies of a photograph, hard-edged shapes the
    edges where filters disagree, fine texture and noise the entropy of foliage or fur (a 500x375
    JPEG at quality 90 is ~90 KB, like ImageNet's); flat colour would hide rounding differences.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / max(width, 1) + np.sin(angle) * yy / max(height, 1)
        img[..., c] = rng.uniform(40, 120) + rng.uniform(40, 120) * ramp
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(rng.integers(0, max(width, 2), 2).tolist())
        y0, y1 = sorted(rng.integers(0, max(height, 2), 2).tolist())
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=fill)
    img = np.asarray(pil, np.float32) + rng.normal(0, 14, (height, width, 3)).astype(np.float32)
    for cell, amplitude in ((48, 50.0), (8, 40.0), (3, 45.0)):
        grid = rng.uniform(-amplitude, amplitude, (max(height // cell, 2), max(width // cell, 2)))
        field = Image.fromarray(grid.astype(np.float32)).resize((width, height), Image.BICUBIC)
        img += np.asarray(field, np.float32)[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "JPEG", mode: str = "RGB", **save_args) -> bytes:
    """Encode an HWC RGB array in `mode` (converted with PIL) as `fmt`; save_args go to PIL's save.

    JPEG defaults to quality 90 with 4:2:0 chroma subsampling, like most ImageNet files.
    """
    img = Image.fromarray(rgb).convert(mode)
    if fmt == "JPEG":
        save_args = {"quality": 90, "subsampling": "4:2:0", **save_args}
    buf = io.BytesIO()
    img.save(buf, fmt, **save_args)
    return buf.getvalue()


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
        with open(os.path.join(root, rel), "wb") as f:
            f.write(encode(make_rgb(size[0], size[1], int(rng.integers(2**31)))))
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


def nonfinite_classifier_onnx(path: str, nan_above: float, inf_below: float, seed: int = 0) -> str:
    """`tiny_classifier_onnx` whose logits are all NaN for an image whose mean normalised input is above
    `nan_above` and +Inf where it is below `inf_below` (as an fp16 overflow gives): for testing that
    non-finite outputs become errors, never rankings."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(tiny_classifier_onnx(path, seed=seed))
    g = model.graph
    for node in g.node:
        node.output[:] = ["raw" if o == "logits" else o for o in node.output]
    consts = [helper.make_tensor(name, TensorProto.FLOAT, [], [v]) for name, v in
              (("nan_above", nan_above), ("inf_below", inf_below), ("nan", float("nan")), ("inf", float("inf")))]
    g.initializer.extend(consts)
    g.initializer.append(helper.make_tensor("one_axis", TensorProto.INT64, [1], [1]))
    g.node.extend([
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one_axis"], ["mean1"]),
        helper.make_node("Greater", ["mean1", "nan_above"], ["is_nan"]),
        helper.make_node("Less", ["mean1", "inf_below"], ["is_inf"]),
        helper.make_node("Where", ["is_inf", "inf", "raw"], ["raw_inf"]),
        helper.make_node("Where", ["is_nan", "nan", "raw_inf"], ["logits"]),
    ])
    onnx.checker.check_model(model)
    tmp = f"{path}.tmp{os.getpid()}"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path
