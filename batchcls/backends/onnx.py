"""onnxruntime backend: one InferenceSession with the job's execution providers and threads."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..errors import BackendUnavailable, BatchclsError


class OnnxBackend:
    """An onnxruntime session from a file path or the model's bytes; `intra_op_threads` 0 lets
    onnxruntime pick (one per physical core); `source` names the file the bytes came from, in errors."""

    name = "onnxruntime"
    input_dtype = "float32"

    def __init__(self, model: str | bytes, providers: list[str] | tuple[str, ...] = ("CPUExecutionProvider",),
                 intra_op_threads: int = 0, source: str | None = None):
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailable(
                f"inference.providers: {', '.join(missing)} not available in this onnxruntime "
                f"({ort.__version__}); available: {', '.join(available)}. For CUDA install onnxruntime-gpu.")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        # Prep tasks share the cores: spinning threads would steal them and then wait on stragglers (FINDINGS).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            what = repr(model) if isinstance(model, str) else repr(source) if source else f"the model ({len(model)} bytes)"
            raise BatchclsError(f"model.onnx: cannot load {what}: {' '.join(str(e).split())[:300]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        if len(dims) != 4:
            raise BatchclsError(f"model.onnx: expected an NCHW image input, got {inp.name} with shape {inp.shape}")
        self.batch_size = dims[0]
        self.input_shape = tuple(dims[1:])
        self.providers = self.session.get_providers()
        self.intra_op_threads = intra_op_threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return out.reshape(out.shape[0], -1)

    def describe(self) -> dict:
        return {"backend": self.name, "version": ort.__version__, "providers": self.providers,
                "intra_op_threads": self.intra_op_threads, "input": self.input_name,
                "fixed_batch": self.batch_size, "input_shape": list(self.input_shape)}
