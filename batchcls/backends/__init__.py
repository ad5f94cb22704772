"""Backends: create_backend(name) opens a model for one device; onnxruntime is the default."""

from __future__ import annotations

from ..errors import BackendUnavailable, BatchclsError
from .base import Backend

BACKENDS = ("onnxruntime", "vacc")


def create_backend(name: str, model: str | bytes, **options) -> Backend:
    """A backend session for `model` (a path, or the model file's bytes); `options` are the backend's own (providers, intra_op_threads).

    A new runtime (an accelerator SDK) is one module with a class following `Backend`, registered here;
    its import stays inside this function so hosts without it still run everything else.
    """
    if name == "onnxruntime":
        try:
            from .onnx import OnnxBackend
        except ImportError as e:
            raise BackendUnavailable(f"inference.backend: onnxruntime cannot be imported ({e}); install a runtime: "
                                     "pip install -e '.[cpu]' (or '.[gpu]' on a CUDA host)") from None

        return OnnxBackend(model, **options)
    if name == "vacc":
        from .vacc import VaccBackend  # imports vaststreamx only when a session is made

        return VaccBackend(model, **options)
    raise BatchclsError(f"inference.backend: {name!r} is not a known backend; allowed: {', '.join(BACKENDS)}")
