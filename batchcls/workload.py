"""What a job's workers run: the fp32 model file (given, or built from weights), the options each backend
opens it with, and the generated images of demo jobs."""

from __future__ import annotations

import os

from .backends.providers import GPU_PROVIDERS
from .config import Job
from .constants import CPU_NORMALIZE
from .errors import BatchclsError, JobError
from .plan import Plan
from .synthetic import generate_imagenet_folder
from .transforms.normalize import normalization_table


def resolve_fp32_model(job: Job) -> str:
    """The fp32 ONNX file: `model.onnx`, or the graph built (and cached) from `model.weights`."""
    if job.model.onnx is not None:
        return job.model.onnx
    try:
        from .models.export import cached_onnx
    except ImportError:
        raise BatchclsError("model.weights: building ONNX from weights is not available in this install; "
                            "export the model yourself and set model.onnx") from None
    try:
        from .models.arch import get_arch

        get_arch(job.model.name)
    except BatchclsError as e:
        raise JobError("model.name", f"{e}; model.weights builds these architectures only", path=job.path) from None
    return str(cached_onnx(job.model.name, job.model.weights, os.path.join(job.runtime.cache_dir, "onnx")))


def generate_dataset(job: Job, log) -> bool:
    """For demo jobs: fill `dataset.root` with generated ImageNet-like JPEGs when it holds none."""
    gen = job.dataset.generate
    root = job.dataset.root
    if gen is None or (os.path.isdir(root) and any(n.endswith(".JPEG") for n in os.listdir(root))):
        return False
    log(f"generating {gen.count} ImageNet-like JPEGs in {root} (dataset.generate)")
    generate_imagenet_folder(root, gen.count, gen.classes, gen.seed)
    return True


def read_model_bytes(path: str) -> bytes:
    """The model file's bytes, sent to the workers through the object store."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BatchclsError(f"model.onnx: cannot read {path!r}: {e.strerror}") from None


def backend_options(plan: Plan) -> dict:
    """The keyword arguments of `create_backend` for this job's workers (each backend's own options)."""
    job = plan.job
    inf = job.inference
    if inf.backend == "vacc":
        return {**plan.vacc, "outputs": job.model.outputs, "batch_size": inf.batch_size,
                "devices": inf.devices, "die_count": None, "resources": dict(inf.resources)}
    # uint8 into the graph by default on a GPU (4x fewer bytes, no host normalise); CPU: constants.py.
    normalize = inf.normalize or ("graph" if inf.providers[0] in GPU_PROVIDERS else CPU_NORMALIZE)
    table = normalization_table(plan.mean, plan.std, plan.scale_rule) if normalize == "graph" else None
    return {"providers": list(job.inference.providers), "intra_op_threads": job.inference.intra_op_threads,
            "source": plan.model_path, "graph_table": table, "cache_dir": os.path.abspath(job.runtime.cache_dir),
            "provider_options": inf.provider_options, "tf32": inf.tf32, "cuda_graph": inf.cuda_graph,
            "tensorrt_precision": inf.tensorrt_precision, "batch_size": inf.batch_size,
            "gpu_fraction": inf.resources.get("GPU", 1.0)}
