"""int8 (QDQ, calibration reader) and fp16 builds of an ONNX, with their settings in the model's metadata."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import onnx

from batchcls.errors import BackendUnavailable, BatchclsError
from batchcls.transforms.normalize import apply_table

PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("entropy", "percentile", "minmax")
# The vendor compiler's `backend.quantize.calibrate_mode` each method stands for (vamc build YAML).
VAMC_CALIBRATE_MODE = {"entropy": "kl_divergence", "percentile": "percentile", "minmax": "max"}
# Images per calibration session call, and per collect_data: onnxruntime's augmented graph outputs every
# activation, and a histogram calibrator holds them until collect_data returns (dla34: ~40 MB an image).
# Feeding one batch at a time keeps memory flat; the histograms are merged between calls.
CALIB_BATCH = 8
# onnxruntime's own entropy default (128 bins, 128 quantized bins) leaves the KL search a single
# candidate, the full range, i.e. max calibration. 2048 signed bins (1024 a side) searched in 128
# quantized bins is TensorRT's KL setting; it costs ~0.5 s per tensor in the threshold search.
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE_BINS = 2048
# Bump when the build recipe changes (pre-processing, quantizer options), so cached builds are not reused.
BUILD_VERSION = 2
META_PREFIX = "batchcls."
# Nodes that mean the graph is already quantized (QDQ or QOperator format, or integer kernels).
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul"}
# The weight-carrying operators onnxruntime has int8 kernels for; a graph without one has nothing to quantize.
INT8_KERNEL_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
HASH_CHUNK_BYTES = 1 << 20
# Operators between the classifier's last weighted layer and the graph output that reshape or normalise
# its values: kept in float, so logits (or probabilities) are never rounded to 256 levels, nor clipped by a
# calibrated range (top-1 is the largest logit: exactly what a KL threshold cuts).
HEAD_PASSTHROUGH_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Softmax")


@dataclass(frozen=True)
class CalibrationSettings:
    """How an int8 build is calibrated: `method` (entropy = KL divergence, percentile, minmax), `images`
    (how many to draw), `per_channel` weights, `percentile` (percentile method only), `balance` (one image per
    class before any class gets a second)."""

    method: str = "entropy"
    images: int = 1000
    per_channel: bool = True
    percentile: float = 99.999
    balance: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def file_sha256(path: str) -> str:
    """sha256 of a file's content, read in 1 MiB pieces."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK_BYTES):
                h.update(chunk)
    except OSError as e:
        raise BatchclsError(f"model.onnx: cannot read {path!r}: {e.strerror}") from None
    return h.hexdigest()


def build_key(model_sha256: str, precision: str, settings: CalibrationSettings | None, calibration_id: str = "") -> str:
    """Hex digest of what decides a build's bytes: the source model's content, the precision, and for int8
    the calibration settings and `calibration_id` (the calibration images and the pixels made of them)."""
    import onnxruntime

    parts = {"model": model_sha256, "precision": precision, "version": BUILD_VERSION, "ort": onnxruntime.__version__}
    if precision == "int8":
        parts.update(settings=(settings or CalibrationSettings()).as_dict(), calibration=calibration_id)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def check_source(model: onnx.ModelProto, source: str, precision: str) -> None:
    """BatchclsError when `model` cannot be built at `precision`: already quantized or float16, or (int8) it
    has no operator with an int8 kernel."""
    ops = {n.op_type for n in model.graph.node}
    done = sorted(ops & QUANTIZED_OPS)
    if done:
        raise BatchclsError(f"model.onnx: {source!r} is already quantized (it has {', '.join(done)} nodes); "
                            "build from the float32 model instead")
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        raise BatchclsError(f"model.onnx: {source!r} already holds float16 weights; build from the float32 model instead")
    if precision == "int8" and not ops & set(INT8_KERNEL_OPS):
        raise BatchclsError(f"model.onnx: {source!r} has no operator with an int8 kernel ({', '.join(INT8_KERNEL_OPS)}); "
                            f"its operators are {', '.join(sorted(ops))}: nothing to quantize, run it at "
                            "model.precision fp32 or fp16")


def _load(path: str, precision: str) -> onnx.ModelProto:
    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a bad file
        raise BatchclsError(f"model.onnx: cannot read {path!r} as ONNX: {' '.join(str(e).split())[:200]}") from None
    check_source(model, path, precision)
    return model


class _BatchReader:
    """A CalibrationDataReader over one float32 batch (onnxruntime asks for `get_next` until None)."""

    def __init__(self, name: str, batch: np.ndarray):
        self.feeds = [{name: batch}]

    def get_next(self):
        return self.feeds.pop() if self.feeds else None


def _chunks(batches: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    for images in batches:
        for start in range(0, images.shape[0], size):
            yield images[start:start + size]


def float_head(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(nodes to leave unquantized, op types whose output is not quantized) so that the graph outputs stay
    float: the HEAD_PASSTHROUGH_OPS before each output are left out, and the weighted layer feeding them keeps
    int8 inputs and weights but a float output (by op type when it is the only node of its type, as a
    classifier's Gemm is; else the layer is left in float). Unnamed nodes are named in place."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    producer = {o: n for n in model.graph.node for o in n.output}
    count: dict[str, int] = {}
    for node in model.graph.node:
        count[node.op_type] = count.get(node.op_type, 0) + 1
    exclude: list[str] = []
    out_types: list[str] = []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in HEAD_PASSTHROUGH_OPS:
            exclude.append(node.name)
            node = producer.get(node.input[0])
        if node is None:
            continue
        if count[node.op_type] == 1:
            out_types.append(node.op_type)
        else:
            exclude.append(node.name)
    return exclude, out_types


def _calibrator(model_path: str, tmp: str, settings: CalibrationSettings):
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
              "minmax": CalibrationMethod.MinMax}[settings.method]
    extra = {"entropy": {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
             "percentile": {"num_bins": PERCENTILE_BINS, "percentile": settings.percentile},
             "minmax": {}}[settings.method]
    # The operator list quantize_static calibrates for, so every tensor it quantizes has a range.
    ops = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
    calibrator = create_calibrator(model_path, ops, augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                                   calibrate_method=method, providers=["CPUExecutionProvider"], extra_options=extra)
    return calibrator, method


def calibrate(model_path: str, batches: Iterable[np.ndarray], table: np.ndarray, settings: CalibrationSettings,
              tmp: str, total: int | None = None, progress: bool = True):
    """Run the calibration over uint8 [N,3,H,W] `batches`, normalised with `table` (the evaluation's own
    (3, 256) lookup), one CALIB_BATCH at a time. Returns (TensorsData, method, images seen, seconds of the
    threshold search)."""
    from tqdm import tqdm

    calibrator, method = _calibrator(model_path, tmp, settings)
    inp = calibrator.infer_session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    if fixed not in (None, 1):
        raise BatchclsError(f"model.onnx: {model_path!r} has a fixed batch of {fixed}; calibration needs a dynamic "
                            "batch (or batch 1): export it with a dynamic first dimension")
    seen = 0
    bar = tqdm(total=total, desc="calibrate", unit="img", disable=not progress, dynamic_ncols=True)
    with bar:
        for chunk in _chunks(batches, fixed or CALIB_BATCH):
            # onnxruntime prints a line per collect_data call; the bar says the same.
            with contextlib.redirect_stdout(io.StringIO()):
                calibrator.collect_data(_BatchReader(inp.name, apply_table(chunk, table)))
            seen += chunk.shape[0]
            bar.update(chunk.shape[0])
    if not seen:
        raise BatchclsError("model.calibration: no calibration image could be prepared; see the dataset's "
                            "errors (python -m batchcls.run on it lists them) or use other images")
    t = time.perf_counter()
    with _threshold_bar(calibrator, progress), contextlib.redirect_stdout(io.StringIO()):
        ranges = calibrator.compute_data()
    return ranges, method, seen, time.perf_counter() - t


@contextlib.contextmanager
def _threshold_bar(calibrator, progress: bool):
    """A progress bar over the KL threshold search (~0.5 s a tensor), counted where the collector calls
    its per-tensor search (an instance attribute shadows the method for this calibrator only)."""
    from tqdm import tqdm

    collector = getattr(calibrator, "collector", None)
    if collector is None or collector.method != "entropy":
        yield
        return
    search = collector.get_entropy_threshold
    with tqdm(total=len(collector.histogram_dict), desc="KL thresholds", unit="tensor", disable=not progress,
              dynamic_ncols=True) as bar:
        def counted(*args, **kwargs):
            bar.update(1)
            return search(*args, **kwargs)

        collector.get_entropy_threshold = counted
        try:
            yield
        finally:
            del collector.get_entropy_threshold


def quantize_int8(model_path: str, out_path: str, batches: Iterable[np.ndarray], table: np.ndarray,
                  settings: CalibrationSettings, metadata: Callable[[], dict], total: int | None = None,
                  progress: bool = True) -> dict:
    """int8 QDQ build of `model_path` (signed int8 activations and weights, per-channel weights unless
    `settings.per_channel` is False): `quant_pre_process`, the streamed calibration over `batches` (images
    prepared and run, then the threshold search), then `quantize_static` with the ranges found. `metadata()`,
    called once the calibration has run (str -> str), goes into the model's metadata_props. Writes `out_path`
    atomically; returns timings (s) and the number of calibration images."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    import inspect

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise BackendUnavailable(f"int8 builds need onnxruntime >= 1.32 (precomputed calibration ranges), this is "
                                 f"{onnxruntime.__version__}: pip install -U onnxruntime (on Python 3.11 or 3.12: "
                                 "onnxruntime has no wheels for 3.10 after 1.23)")
    _load(model_path, "int8")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="batchcls-quant.") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        try:
            # Symbolic shape inference needs sympy; ONNX's own shape inference covers CNNs.
            quant_pre_process(model_path, pre, skip_symbolic_shape=True)
        except Exception as e:  # noqa: BLE001 - onnxruntime's untyped errors
            raise BatchclsError(f"model.onnx: {model_path!r} cannot be pre-processed for quantization: "
                                f"{' '.join(str(e).split())[:300]}") from None
        pre_model = onnx.load(pre)
        exclude, out_types = float_head(pre_model)
        onnx.save(pre_model, pre)
        ranges, method, seen, thresholds_s = calibrate(pre, batches, table, settings, tmp, total, progress)
        t_cal = time.perf_counter()
        cache = os.path.join(tmp, "ranges.json")
        save_tensors_data(ranges, cache)
        quantized = os.path.join(tmp, "int8.onnx")
        try:
            quantize_static(pre, quantized, None, quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=exclude, calibration_cache_path=cache,
                            extra_options={"OpTypesToExcludeOutputQuantization": out_types})
        except Exception as e:  # noqa: BLE001
            raise BatchclsError(f"model.onnx: {model_path!r} cannot be quantized to int8: "
                                f"{' '.join(str(e).split())[:300]}") from None
        _finish(quantized, out_path, metadata())
    return {"images": seen, "calibrate_s": t_cal - t0, "thresholds_s": thresholds_s, "build_s": time.perf_counter() - t0,
            "float_head": {"nodes": exclude, "output_of": out_types}}


def convert_fp16(model_path: str, out_path: str, metadata: dict) -> dict:
    """fp16 build with onnxruntime's converter: weights and activations float16, inputs and outputs kept
    float32, so the engine feeds it as any model. Writes `out_path` atomically."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    t0 = time.perf_counter()
    model = _load(model_path, "fp16")
    try:
        model16 = convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:  # noqa: BLE001
        raise BatchclsError(f"model.onnx: {model_path!r} cannot be converted to fp16: "
                            f"{' '.join(str(e).split())[:300]}") from None
    with tempfile.TemporaryDirectory(prefix="batchcls-fp16.") as tmp:
        path = os.path.join(tmp, "fp16.onnx")
        onnx.save(model16, path)
        _finish(path, out_path, metadata)
    return {"images": 0, "calibrate_s": 0.0, "build_s": time.perf_counter() - t0}


def _finish(built: str, out_path: str, metadata: dict) -> None:
    """Add `metadata`, prove the build loads in onnxruntime, then move it to `out_path`."""
    import onnxruntime as ort

    model = onnx.load(built)
    keep = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        model.metadata_props.add(key=META_PREFIX + key, value=str(value))
    data = model.SerializeToString()
    try:
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - an op without a kernel at this precision
        raise BatchclsError(f"model.onnx: the built model does not load in onnxruntime (an operator without a kernel "
                            f"at this precision?): {' '.join(str(e).split())[:300]}") from None
    write_bytes(out_path, data)


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temp name with the pid, then os.replace."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metadata(path: str) -> dict:
    """The `batchcls.*` metadata of an ONNX file (prefix removed), {} when it has none."""
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - a file onnx cannot parse has no metadata to report
        return {}
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def calib_list_path(out_path: str) -> str:
    """`OUT.calib.txt` beside `OUT.onnx`: the calibration images, one relative path a line."""
    stem = out_path[:-5] if out_path.endswith(".onnx") else out_path
    return f"{stem}.calib.txt"


def write_calib_list(out_path: str, names: list[str], header: dict) -> str:
    """Write the calibration list beside the model: '# key: value' header lines, then one path a line."""
    path = calib_list_path(out_path)
    text = "".join(f"# {k}: {v}\n" for k, v in header.items()) + "".join(f"{n}\n" for n in names)
    write_bytes(path, text.encode("utf-8"))
    return path


def read_calib_list(path: str) -> list[str]:
    """The image paths of a calibration list (header lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def names_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
