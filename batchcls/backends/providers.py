"""onnxruntime execution providers done right: options (TF32 off, CUDA graphs, TensorRT precision and
caches), the check that what was asked for is what loaded, and why it did not (for errors and doctor)."""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from importlib import metadata

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (CUDA, TENSORRT)
TRT_PRECISIONS = ("fp32", "fp16", "int8")
# onnxruntime packages that each install the `onnxruntime` module: two of them side by side overwrite
# each other's files, and the CPU one usually wins (the CUDA provider disappears).
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                         "onnxruntime-qnn", "onnxruntime-training")
# Shared libraries the CUDA and TensorRT providers load, newest major first.
CUDA_LIBS = {"driver": ("libcuda.so.1",), "cudart": ("libcudart.so.13", "libcudart.so.12"),
             "cublas": ("libcublas.so.13", "libcublas.so.12"), "cudnn": ("libcudnn.so.9",),
             "tensorrt": ("libnvinfer.so.10", "libnvinfer.so.11")}
# Share of a GPU's memory a worker holding a fraction f of it may use: f times this (the rest is
# cuDNN workspaces and CUDA contexts, outside onnxruntime's arena).
GPU_MEM_SHARE = 0.85
NVIDIA_SMI_TIMEOUT_S = 10


def gpu_requested(providers) -> bool:
    return any(p in GPU_PROVIDERS for p in providers)


def _str(value) -> str:
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def provider_list(providers, provider_options: dict | None = None, *, tf32: bool = False, cuda_graph: bool = False,
                  trt_precision: str = "fp32", trt_cache_dir: str | None = None, gpu_mem_limit: int | None = None,
                  trt_profile: str | None = None) -> list:
    """The `providers` argument of InferenceSession: (name, options) pairs, values as strings.

    batchcls's own settings come first and the job's `provider_options` override them:
    CUDA gets `use_tf32=0` unless `tf32` (fp32 convs as TF32 drift ~1e-3 from the reference),
    `enable_cuda_graph=1` with `cuda_graph`, and `gpu_mem_limit` when several workers share a GPU;
    TensorRT gets its precision, engine and timing caches under `trt_cache_dir`, and one profile.
    """
    user = provider_options or {}
    out = []
    for name in providers:
        opts: dict = {}
        if name == CUDA:
            opts["use_tf32"] = tf32
            if cuda_graph:
                opts["enable_cuda_graph"] = True
            if gpu_mem_limit:
                opts["gpu_mem_limit"] = int(gpu_mem_limit)
        elif name == TENSORRT:
            opts["trt_fp16_enable"] = trt_precision == "fp16"
            opts["trt_int8_enable"] = trt_precision == "int8"
            if trt_cache_dir:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=trt_cache_dir,
                            trt_timing_cache_enable=True, trt_timing_cache_path=trt_cache_dir)
            if cuda_graph:
                opts["trt_cuda_graph_enable"] = True
            if trt_profile:
                opts.update(trt_profile_min_shapes=trt_profile, trt_profile_opt_shapes=trt_profile,
                            trt_profile_max_shapes=trt_profile)
        opts.update(user.get(name, {}))
        out.append((name, {k: _str(v) for k, v in opts.items()}) if opts else name)
    return out


def worker_env(providers, tf32: bool) -> dict:
    """Environment of a worker process: TensorRT (and cuBLAS/cuDNN under it) with TF32 off unless allowed;
    onnxruntime's TensorRT provider has no option for it."""
    return {"NVIDIA_TF32_OVERRIDE": "0"} if TENSORRT in providers and not tf32 else {}


def preload(providers) -> None:
    """Load the CUDA/cuDNN libraries of the nvidia-* wheels before the session (onnxruntime >= 1.21)."""
    if not gpu_requested(providers):
        return
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - missing libraries are diagnosed after the session, by name
            pass


def check_loaded(requested, loaded, available) -> None:
    """BackendUnavailable naming why, when a requested GPU provider is not among the session's
    providers (onnxruntime falls back to the CPU with only a warning)."""
    from ..errors import BackendUnavailable

    missing = [p for p in requested if p in GPU_PROVIDERS and p not in loaded]
    if missing:
        raise BackendUnavailable(
            f"inference.providers: {', '.join(missing)} did not load (the session runs on {', '.join(loaded)}): "
            f"{'; '.join(diagnose(missing[0], available))}. `python -m batchcls doctor` shows this host")


def runtime_distributions() -> dict[str, str]:
    """The onnxruntime packages installed, name -> version."""
    found = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def diagnose(provider: str, available) -> list[str]:
    """Why `provider` cannot run here, most likely first, each with its fix."""
    reasons = []
    dists = runtime_distributions()
    if len(dists) > 1:
        reasons.append(f"several onnxruntime packages are installed ({', '.join(dists)}), and their files overwrite "
                       f"each other: pip uninstall -y {' '.join(dists)} && pip install -e '.[gpu]'")
    if provider not in available:
        reasons.append(f"this onnxruntime build has no {provider} (it has {', '.join(available)}): "
                       "pip uninstall -y onnxruntime && pip install -e '.[gpu]'")
    libs = find_libs()
    if libs["driver"] is None:
        reasons.append("no NVIDIA driver (libcuda.so.1) is loadable: install the driver (>= 580 for CUDA 13 wheels)")
    need = ("cudart", "cublas", "cudnn") + (("tensorrt",) if provider == TENSORRT else ())
    absent = [k for k in need if libs[k] is None]
    if absent:
        reasons.append(f"CUDA libraries not found: {', '.join(absent)}: pip install -e '.[gpu]' installs them "
                       "(nvidia-* wheels), or put the toolkit's lib folder on LD_LIBRARY_PATH")
    if not reasons:
        reasons.append("the libraries are there but the provider failed to initialise: a driver older than the "
                       "CUDA the wheel was built for (nvidia-smi shows both), or no GPU visible to this process "
                       "(CUDA_VISIBLE_DEVICES, inference.resources {GPU: 1})")
    return reasons


def find_libs() -> dict[str, str | None]:
    """Each of CUDA_LIBS -> where it loads from (a path, or the loader's name for it), or None."""
    roots = [os.path.join(p, "nvidia") for p in sys.path if p and os.path.isdir(os.path.join(p, "nvidia"))]
    roots += [os.path.join(p, "tensorrt_libs") for p in sys.path if p and os.path.isdir(os.path.join(p, "tensorrt_libs"))]
    out: dict[str, str | None] = {}
    for key, names in CUDA_LIBS.items():
        out[key] = None
        for name in names:
            hits = [h for r in roots for h in glob.glob(os.path.join(r, "**", name), recursive=True)]
            if hits:
                out[key] = hits[0]
                break
            try:
                ctypes.CDLL(name)
                out[key] = name
                break
            except OSError:
                continue
    return out


def nvidia_smi(fields: str = "name,driver_version,memory.total", device: str | None = None) -> list[list[str]] | None:
    """Rows of `nvidia-smi --query-gpu=FIELDS`, or None without nvidia-smi (or when it fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"] + (["-i", device] if device else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]


def visible_gpu() -> str | None:
    """The first GPU this process may use, as nvidia-smi's -i takes it (index or UUID), or None for 0."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return cvd or None


def gpu_mem_limit(fraction: float) -> int | None:
    """Bytes of onnxruntime's CUDA arena for a worker holding `fraction` (< 1) of a GPU, or None."""
    if not 0 < fraction < 1:
        return None
    rows = nvidia_smi("memory.total", visible_gpu())
    try:
        return int(float(rows[0][0]) * 2**20 * fraction * GPU_MEM_SHARE) if rows else None
    except (ValueError, IndexError):
        return None


def tensorrt_version() -> str:
    """The TensorRT wheel's version (tensorrt, tensorrt-cu12/13 or their -libs), or 'unknown'."""
    for name in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def tensorrt_cache_dir(cache_root: str, model_key: str, precision: str, ort_version: str) -> str:
    """`<cache_root>/tensorrt/<key>`: engines are valid for one model content, onnxruntime and TensorRT
    version, GPU model and precision; any change gives a new folder (a new build), never a stale engine."""
    rows = nvidia_smi("name", visible_gpu()) or [["unknown-gpu"]]
    text = f"{model_key}|ort={ort_version}|trt={tensorrt_version()}|gpu={rows[0][0]}|{precision}"
    return os.path.join(cache_root, "tensorrt", hashlib.sha256(text.encode()).hexdigest()[:24])


def runtime_report(probe_model: bytes | None = None) -> dict:
    """What this host's onnxruntime can run: version, build providers, packages, libraries, and for each
    GPU provider the build has, which providers a session on `probe_model` actually got."""
    report: dict = {"distributions": runtime_distributions(), "libs": find_libs(), "version": None,
                    "available": [], "sessions": {}, "error": None, "preload_dlls": None}
    try:
        import onnxruntime as ort
    except ImportError as e:
        report["error"] = f"onnxruntime cannot be imported: {e}"
        return report
    report["version"], report["available"] = ort.__version__, ort.get_available_providers()
    report["preload_dlls"] = hasattr(ort, "preload_dlls")
    gpu = [p for p in GPU_PROVIDERS if p in report["available"]]
    preload(gpu)
    for name in gpu if probe_model is not None else ():
        try:
            session = ort.InferenceSession(probe_model, providers=provider_list([name, "CPUExecutionProvider"]))
            inp = session.get_inputs()[0]
            import numpy as np

            session.run(None, {inp.name: np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)})
            report["sessions"][name] = session.get_providers()
        except Exception as e:  # noqa: BLE001 - reported, with the provider's own words
            report["sessions"][name] = f"failed: {' '.join(str(e).split())[:200]}"
    return report
