"""onnxruntime backend: one InferenceSession with the job's execution providers, their options and threads."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnxruntime as ort

from ..errors import BackendUnavailable, BatchclsError
from . import providers as prov


class OnnxBackend:
    """An onnxruntime session from a file path or the model's bytes; `intra_op_threads` 0 lets
    onnxruntime pick (one per physical core); `source` names the file the bytes came from, in errors.

    `graph_table` (the (3, 256) normalisation table) wraps the model with the uint8 prefix
    (graphprep.py), cached by content under `cache_dir`: the backend then takes uint8 crops.
    `provider_options`, `tf32`, `cuda_graph`, `tensorrt_precision`, `gpu_fraction` are the job's GPU
    settings (providers.py); `batch_size` is the batch a CUDA graph or TensorRT profile is fixed to
    (short batches are padded to it). `io_binding` None binds I/O on GPU providers only.
    """

    name = "onnxruntime"

    def __init__(self, model: str | bytes, providers: list[str] | tuple[str, ...] = ("CPUExecutionProvider",),
                 intra_op_threads: int = 0, source: str | None = None, *, graph_table=None,
                 cache_dir: str | None = None, provider_options: dict | None = None, tf32: bool = False,
                 cuda_graph: bool = False, tensorrt_precision: str = "fp32", batch_size: int | None = None,
                 gpu_fraction: float = 1.0, io_binding: bool | None = None):
        providers = list(providers)
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailable(
                f"inference.providers: {', '.join(missing)} not available in this onnxruntime "
                f"({ort.__version__}); available: {', '.join(available)}: "
                f"{'; '.join(prov.diagnose(missing[0], available))}")
        self.source = source or (model if isinstance(model, str) else None)
        model_bytes = self._read(model) if graph_table is not None or prov.TENSORRT in providers else model
        self.graph_key = None
        if graph_table is not None:
            from .graphprep import cached_uint8_model

            wrap_dir = os.path.join(cache_dir, "onnx-uint8") if cache_dir else None
            try:
                model_bytes, self.graph_key, _ = cached_uint8_model(model_bytes, np.asarray(graph_table), wrap_dir)
            except Exception as e:  # noqa: BLE001 - onnx raises its own errors for a bad file
                raise BatchclsError(f"inference.normalize: graph: cannot wrap {self._what(model)} with the "
                                    f"uint8 prefix: {' '.join(str(e).split())[:300]}; use inference.normalize: "
                                    "host") from None
        self.tf32 = tf32 if prov.gpu_requested(providers) else None
        self.cuda_graph = cuda_graph
        self.intra_op_threads = intra_op_threads
        self._fixed_batch = batch_size if (cuda_graph or prov.TENSORRT in providers) else None
        self.session = self._open(model_bytes, providers, provider_options, tensorrt_precision, cache_dir,
                                  gpu_fraction)
        self.providers = self.session.get_providers()
        prov.check_loaded(providers, self.providers, available)
        self._describe_io()
        on_gpu = self.providers[0] in prov.GPU_PROVIDERS
        self.io_binding = on_gpu if io_binding is None else io_binding
        # One run before the first shard pays cuDNN's algorithm search and graph capture on a GPU; on
        # the CPU there is nothing to pay in advance, and it would only delay the first shard.
        self.wants_warmup = on_gpu
        self._runner = None
        if self.io_binding or cuda_graph:
            from .binding import BoundRunner

            device_id = int((provider_options or {}).get(self.providers[0], {}).get("device_id", 0))
            self._runner = BoundRunner(self.session, self.input_name, self.output_name,
                                       "cuda" if on_gpu else "cpu", device_id)

    def _open(self, model, providers, provider_options, precision, cache_dir, gpu_fraction):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        # Prep tasks share the cores: spinning threads would steal them and then wait on stragglers (FINDINGS).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        trt_dir = None
        if prov.TENSORRT in providers and cache_dir:
            key = hashlib.sha256(model).hexdigest()
            trt_dir = prov.tensorrt_cache_dir(cache_dir, key, precision, ort.__version__)
            os.makedirs(trt_dir, exist_ok=True)
        os.environ.update(prov.worker_env(providers, bool(self.tf32)))
        prov.preload(providers)
        plist = prov.provider_list(providers, provider_options, tf32=bool(self.tf32), cuda_graph=self.cuda_graph,
                                   trt_precision=precision, trt_cache_dir=trt_dir,
                                   gpu_mem_limit=prov.gpu_mem_limit(gpu_fraction) if prov.CUDA in providers else None,
                                   trt_profile=self._trt_profile(model) if prov.TENSORRT in providers else None)
        self.trt_cache_dir = trt_dir
        self.requested = plist  # what the session was asked for; get_provider_options() says what it took
        try:
            return ort.InferenceSession(model, sess_options=opts, providers=plist)
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            raise BatchclsError(f"model.onnx: cannot load {self._what(model)}: "
                                f"{' '.join(str(e).split())[:300]}") from None

    def _trt_profile(self, model: bytes) -> str | None:
        """One TensorRT optimisation profile, `name:BxCxHxW` at the fixed batch (one engine), or None when
        the model's image size is dynamic (TensorRT then builds for the shapes it sees)."""
        import onnx

        graph = onnx.load_from_string(model).graph
        inits = {i.name for i in graph.initializer}
        inp = next(i for i in graph.input if i.name not in inits)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        dims[0] = dims[0] or self._fixed_batch
        return None if None in dims else f"{inp.name}:{'x'.join(map(str, dims))}"

    def _describe_io(self) -> None:
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        if len(dims) != 4:
            raise BatchclsError(f"model.onnx: expected an NCHW image input, got {inp.name} with shape {inp.shape}")
        # A dynamic batch is fixed to the job's batch where a CUDA graph or a TensorRT profile needs one shape.
        self.batch_size = dims[0] if dims[0] is not None else self._fixed_batch
        self.input_shape = tuple(dims[1:])
        # uint8: the prefix's input, or a model that takes uint8 crops and normalises itself.
        self.input_dtype = "uint8" if inp.type == "tensor(uint8)" else "float32"

    def _what(self, model) -> str:
        return repr(model) if isinstance(model, str) else repr(self.source) if self.source else \
            f"the model ({len(model)} bytes)"

    def _read(self, model: str | bytes) -> bytes:
        if not isinstance(model, str):
            return model
        try:
            with open(model, "rb") as f:
                return f.read()
        except OSError as e:
            raise BatchclsError(f"model.onnx: cannot read {model!r}: {e.strerror}") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._runner is not None:
            out = self._runner.run(batch)
        else:
            out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return out.reshape(out.shape[0], -1).astype(np.float32, copy=False)

    def describe(self) -> dict:
        return {"backend": self.name, "version": ort.__version__, "providers": self.providers,
                "intra_op_threads": self.intra_op_threads, "input": self.input_name,
                "fixed_batch": self.batch_size, "input_shape": list(self.input_shape),
                "normalize": "graph" if self.input_dtype == "uint8" else "host", "tf32": self.tf32,
                "io_binding": self.io_binding, "cuda_graph": self.cuda_graph,
                "requested_providers": [list(p) if isinstance(p, tuple) else p for p in self.requested],
                "provider_options": {k: v for k, v in self.session.get_provider_options().items()
                                     if k in prov.GPU_PROVIDERS},
                "tensorrt_cache": self.trt_cache_dir}
