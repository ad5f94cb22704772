"""A test double of VastAI's vaststreamx: exactly the calls batchcls's vacc backend makes, with the
semantics the vendor's samples document (VastModelZOO classification/common/vsx/classification.py,
VastStreamX-Samples common/model_base.py and common/resnet.py).

- `set_device(die)` returns 0 for a die that exists (FAKE_VSX_DIES of them, default 4), else -1.
- A compiled model is a prefix with three files; here PREFIX.so holds an ONNX model (run with
  onnxruntime), PREFIX.json says whether the compiled graph ends in a softmax, PREFIX.params is opaque.
- `create_image` takes uint8 RGB planar (3, H, W) with even H and W, as the vendor's script sends.
- The vdsp op is computed with OpenCV from its JSON (bilinear resize, crop, (x/255 - mean)/std) and
  emits float16; `crop_resize_ext` (crop_x, crop_y, resize_w, resize_h) replaces the JSON's resize/crop.
- `run_sync` takes exactly the model's batch of images (short batches are undocumented, so refused)
  and returns per image a list of one float16 (1, C) tensor.
- `load_ops_from_json_file` returns [] for a file it cannot read or an unknown OpType.
- FAKE_VSX_FAIL_ONCE=PATH: the first run_sync of any process that finds PATH removes it and fails.
"""

from __future__ import annotations

import json
import os
import threading

import cv2
import numpy as np
import onnxruntime as ort

__version__ = "0.0+fake"

FUSION_OPS = {"FUSION_OP_RGB_RESIZE_CVTCOLOR_CROP_NORM_TENSOR": 100, "FUSION_OP_RGB_CVTCOLOR_NORM_TENSOR": 101}


class ImageFormat:
    YUV_NV12, RGB_PLANAR, BGR_PLANAR, RGB_INTERLEAVE, BGR_INTERLEAVE, GRAY = 0, 5000, 5001, 5002, 5003, 5004


class StreamBalanceMode:
    ONCE, RUN = 0, 1


class GraphOutputType:
    GRAPH_OUTPUT_TYPE_NCHW_DEVICE, GRAPH_OUTPUT_TYPE_NCHW_HOST, GRAPH_OUTPUT_TYPE_884_DEVICE = 0, 1, 2


class TypeFlag:
    UINT8, FLOAT16, FLOAT32 = 0, 1, 2


_thread = threading.local()
calls: list = []  # (name, args) of every call, for tests in this process


def set_device(device_id: int) -> int:
    calls.append(("set_device", device_id))
    if not 0 <= int(device_id) < int(os.environ.get("FAKE_VSX_DIES", "4")):
        return -1
    _thread.die = int(device_id)
    return 0


def _current_die() -> int:
    die = getattr(_thread, "die", None)
    if die is None:
        raise RuntimeError("vaststreamx: no device set in this thread (call set_device first)")
    return die


class Image:
    def __init__(self, data: np.ndarray, fmt: int, width: int, height: int, device_id: int):
        self.data, self.format, self.width, self.height, self.device_id = data, fmt, width, height, device_id
        self.shape = data.shape


def create_image(arr, fmt, width, height, device_id) -> Image:
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or not arr.flags.c_contiguous:
        raise TypeError("create_image: expects a C-contiguous uint8 numpy array")
    if fmt != ImageFormat.RGB_PLANAR or arr.shape != (3, height, width):
        raise ValueError(f"create_image: RGB_PLANAR wants (3, {height}, {width}), got {arr.shape}")
    if width % 2 or height % 2:
        raise RuntimeError(f"create_image: RGB_PLANAR {width}x{height}: width and height must be even")
    return Image(arr.copy(), fmt, width, height, device_id)


class Tensor:
    def __init__(self, data: np.ndarray):
        self._data = data
        self.shape = data.shape


def as_numpy(tensor: Tensor) -> np.ndarray:
    return tensor._data.copy()


class Model:
    def __init__(self, model_prefix: str, batch_size: int = 1, hw_config: str = ""):
        files = [model_prefix + s for s in (".so", ".json", ".params")]
        if not all(os.path.isfile(f) for f in files):
            raise RuntimeError(f"vaststreamx: failed to load model {model_prefix}")
        with open(model_prefix + ".json", encoding="utf-8") as f:
            self._meta = json.load(f)["fake_compiled"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(model_prefix + ".so", sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self.device_id = _current_die()
        self.batch_size = self.max_batch_size = int(batch_size)
        self.input_shape = [(self.batch_size, *[int(d) for d in inp.shape[1:]])]
        self.output_shape = [(1, int(self._session.get_outputs()[0].shape[1]))]
        self.input_count = self.output_count = 1

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {self._input: x.astype(np.float32)})[0].reshape(x.shape[0], -1)
        if self._meta.get("softmax"):
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        return out.astype(np.float16)


class ModelOperator:
    def __init__(self, model: Model):
        self.model = model


class BuildInOperator:
    def __init__(self, op_name: str, config: dict):
        self.op_name, self.op_type, self.config = op_name, FUSION_OPS[op_name], dict(config)

    def cast_to_buildin_operator(self) -> "BuildInOperator":
        return self

    def __call__(self, image: Image, crop_resize=None) -> np.ndarray:
        """The fusion op on one RGB planar image: float16 (3, OimageHeight, OimageWidth)."""
        c = self.config
        hwc = image.data.transpose(1, 2, 0)
        if self.op_name == "FUSION_OP_RGB_CVTCOLOR_NORM_TENSOR":
            if (image.width, image.height) != (c["IimageWidth"], c["IimageHeight"]):
                raise RuntimeError("cvtcolor-norm op: image size differs from IimageWidth x IimageHeight")
            kept = hwc
        else:
            cx, cy, rw, rh = crop_resize or (c["CropX"], c["CropY"], c["ResizeWidth"], c["ResizeHeight"])
            if c.get("ResizeType", "BILINEAR_CV") != "BILINEAR_CV":
                raise NotImplementedError("the fake emulates BILINEAR_CV only")
            if (rw, rh) != (image.width, image.height):
                hwc = cv2.resize(np.ascontiguousarray(hwc), (rw, rh), interpolation=cv2.INTER_LINEAR)
            kept = hwc[cy:cy + c["OimageHeight"], cx:cx + c["OimageWidth"]]
            if kept.shape[:2] != (c["OimageHeight"], c["OimageWidth"]):
                raise RuntimeError(f"crop {cx},{cy} of {c['OimageWidth']}x{c['OimageHeight']} outside {rw}x{rh}")
        x = kept.astype(np.float32).transpose(2, 0, 1)
        if c["NormaType"] != "DIV255_MINUSMEAN_DIVSTD":
            raise NotImplementedError("the fake emulates DIV255_MINUSMEAN_DIVSTD only")
        mean = np.array(c["Mean"], np.float32)[:, None, None]
        std = np.array(c["Std"], np.float32)[:, None, None]
        return ((x / np.float32(255) - mean) / std).astype(np.float16)


class Operator:
    @staticmethod
    def load_ops_from_json_file(path: str) -> list:
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
            return [BuildInOperator(spec["OpType"], spec["OpConfig"])]
        except (OSError, ValueError, KeyError, TypeError):
            return []


class Graph:
    def __init__(self, output_type=None):
        self.ops: list = []

    def add_operators(self, *ops) -> None:
        self.ops.extend(ops)


class Stream:
    def __init__(self, graph: Graph, balance_mode: int):
        self.graph, self.outputs, self.built = graph, [], False

    def register_operator_output(self, *args) -> None:
        self.outputs.append(args[-1] if not isinstance(args[-1], list) else args[1])

    def build(self) -> None:
        ops = self.graph.ops
        if len(ops) != 2 or not isinstance(ops[0], BuildInOperator) or not isinstance(ops[1], ModelOperator):
            raise RuntimeError("fake stream: expects graph [fusion op, model op]")
        if ops[1] not in self.outputs:
            raise RuntimeError("fake stream: the model operator's output is not registered")
        self.fusion, self.model, self.built = ops[0], ops[1].model, True

    def run_sync(self, images: list, params: dict | None = None) -> list:
        if not self.built:
            raise RuntimeError("stream not built")
        flag = os.environ.get("FAKE_VSX_FAIL_ONCE")
        if flag and os.path.exists(flag):
            os.unlink(flag)
            raise RuntimeError("vacc runtime: stream run failed (injected)")
        if len(images) != self.model.batch_size:
            raise RuntimeError(f"run_sync: {len(images)} images for a model of batch {self.model.batch_size}")
        if any(img.device_id != self.model.device_id or _current_die() != self.model.device_id for img in images):
            raise RuntimeError("run_sync: image or thread on another die than the model")
        ext = (params or {}).get("crop_resize_ext")
        if ext is not None and len(ext) != len(images):
            raise ValueError("crop_resize_ext: one (crop_x, crop_y, resize_w, resize_h) per image")
        x = np.stack([self.fusion(img, None if ext is None else tuple(ext[i])) for i, img in enumerate(images)])
        out = self.model.forward(x)
        return [[Tensor(out[i:i + 1])] for i in range(len(images))]


def write_compiled_model(prefix: str, onnx_path: str, softmax: bool) -> str:
    """A fake compiled model at `prefix`: the three files, PREFIX.so holding the ONNX."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(onnx_path, "rb") as f, open(prefix + ".so", "wb") as out:
        out.write(f.read())
    with open(prefix + ".json", "w", encoding="utf-8") as f:
        json.dump({"fake_compiled": {"softmax": softmax}}, f)
    with open(prefix + ".params", "wb") as f:
        f.write(b"\0" * 16)
    return prefix
