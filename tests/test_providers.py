"""GPU session settings on the CPU: provider options and TF32 policy, TensorRT caches, the job's
fields to the session, and a GPU provider that does not load is a named error, not a CPU run."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from batchcls.backends import create_backend
from batchcls.backends import providers as prov
from batchcls.config import load_job
from batchcls.errors import BackendUnavailable, JobError
from batchcls.workload import backend_options
from batchcls.plan import make_plan
from batchcls.synthetic import generate_imagenet_folder

from conftest import write_job


def test_cuda_options_tf32_off_by_default_and_job_overrides():
    (name, opts), cpu = prov.provider_list([prov.CUDA, "CPUExecutionProvider"])
    assert name == prov.CUDA and opts == {"use_tf32": "0"} and cpu == "CPUExecutionProvider"
    _, opts = prov.provider_list([prov.CUDA], tf32=True, cuda_graph=True, gpu_mem_limit=1 << 30)[0]
    assert opts == {"use_tf32": "1", "enable_cuda_graph": "1", "gpu_mem_limit": str(1 << 30)}
    user = {prov.CUDA: {"use_tf32": 1, "prefer_nhwc": True, "cudnn_conv_algo_search": "HEURISTIC"}}
    _, opts = prov.provider_list([prov.CUDA], user)[0]
    assert opts == {"use_tf32": "1", "prefer_nhwc": "1", "cudnn_conv_algo_search": "HEURISTIC"}


def test_tensorrt_precision_caches_profile_and_tf32_env(tmp_path):
    cache = prov.tensorrt_cache_dir(str(tmp_path), "ab" * 32, "fp16", "1.2.3")
    _, opts = prov.provider_list([prov.TENSORRT], trt_precision="fp16", trt_cache_dir=cache,
                                 trt_profile="input_uint8:48x3x224x224")[0]
    assert opts["trt_fp16_enable"] == "1" and opts["trt_int8_enable"] == "0"
    assert opts["trt_engine_cache_enable"] == opts["trt_timing_cache_enable"] == "1"
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == cache
    assert opts["trt_profile_min_shapes"] == opts["trt_profile_max_shapes"] == "input_uint8:48x3x224x224"
    # the key: model content, versions, GPU and precision; each change is a new folder
    assert cache.startswith(os.path.join(str(tmp_path), "tensorrt"))
    others = {prov.tensorrt_cache_dir(str(tmp_path), "cd" * 32, "fp16", "1.2.3"),
              prov.tensorrt_cache_dir(str(tmp_path), "ab" * 32, "fp32", "1.2.3"),
              prov.tensorrt_cache_dir(str(tmp_path), "ab" * 32, "fp16", "1.2.4")}
    assert cache not in others and len(others) == 3
    assert cache == prov.tensorrt_cache_dir(str(tmp_path), "ab" * 32, "fp16", "1.2.3")
    assert prov.worker_env([prov.TENSORRT, prov.CUDA], tf32=False) == {"NVIDIA_TF32_OVERRIDE": "0"}
    assert prov.worker_env([prov.TENSORRT], tf32=True) == {} == prov.worker_env([prov.CUDA], tf32=False)


def test_silent_cpu_fallback_is_a_named_error(tiny_onnx):
    """onnxruntime itself only warns and runs on the CPU; batchcls refuses, saying why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = ort.InferenceSession(tiny_onnx, providers=[prov.CUDA, "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]  # the fallback, as it happens
    with pytest.raises(BackendUnavailable) as e:
        prov.check_loaded([prov.CUDA, "CPUExecutionProvider"], session.get_providers(), ort.get_available_providers())
    msg = str(e.value)
    assert "CUDAExecutionProvider did not load" in msg and "has no CUDAExecutionProvider" in msg
    assert "pip install -e '.[gpu]'" in msg and "doctor" in msg
    with pytest.raises(BackendUnavailable, match="TensorrtExecutionProvider not available.*has no Tensorrt"):
        create_backend("onnxruntime", tiny_onnx, providers=[prov.TENSORRT, "CPUExecutionProvider"])
    prov.check_loaded(["CPUExecutionProvider"], ["CPUExecutionProvider"], ["CPUExecutionProvider"])  # fine


def test_both_runtime_packages_installed_is_named(monkeypatch, tmp_path):
    """Two onnxruntime distributions side by side (a dist-info of onnxruntime-gpu next to the real one)."""
    info = tmp_path / "onnxruntime_gpu-1.23.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.23.2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert set(prov.runtime_distributions()) == {"onnxruntime", "onnxruntime-gpu"}
    reasons = prov.diagnose(prov.CUDA, ["CPUExecutionProvider"])
    assert reasons[0].startswith("several onnxruntime packages are installed (onnxruntime, onnxruntime-gpu)")


def test_job_fields_reach_the_session(tmp_path, tiny_onnx):
    root = str(tmp_path / "img")
    labels = generate_imagenet_folder(root, 4, classes=2, seed=0)
    job = load_job(write_job(tmp_path, model={"name": "tiny", "onnx": tiny_onnx},
                             dataset={"root": root, "labels": labels},
                             inference={"provider_options": {"CPUExecutionProvider": {"use_arena": 0}},
                                        "normalize": "graph"},
                             runtime={"cache_dir": str(tmp_path / "cache")}, output={"dir": str(tmp_path / "o")}))
    opts = backend_options(make_plan(job, tiny_onnx))
    assert opts["graph_table"].shape == (3, 256) and opts["tf32"] is False
    backend = create_backend("onnxruntime", tiny_onnx, **opts)
    d = backend.describe()
    assert d["requested_providers"] == [["CPUExecutionProvider", {"use_arena": "0"}]]
    assert d["normalize"] == "graph" and d["tf32"] is None and os.listdir(tmp_path / "cache" / "onnx-uint8")
    with pytest.raises(JobError, match="inference.provider_options: CUDAExecutionProvider: not in inference.providers"):
        load_job(write_job(tmp_path, model={"name": "tiny", "onnx": tiny_onnx}, dataset={"root": root},
                           inference={"provider_options": {"CUDAExecutionProvider": {"use_tf32": 0}}},
                           output={"dir": str(tmp_path / "o")}))


def test_io_binding_path_gives_the_same_logits(tiny_onnx):
    """The IOBinding runner (bound once per shape, updated in place) on the CPU device."""
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    plain = create_backend("onnxruntime", tiny_onnx, intra_op_threads=1)
    bound = create_backend("onnxruntime", tiny_onnx, intra_op_threads=1, io_binding=True)
    assert bound.describe()["io_binding"] is True
    for scale in (1.0, 0.5, 2.0):  # the same bound buffers, new contents
        assert np.array_equal(plain.run(x * scale), bound.run(x * scale))
    assert np.array_equal(plain.run(x[:3]), bound.run(x[:3]))  # another shape: its own binding
    assert len(bound._runner._bound) == 2


def test_report_says_how_it_ran():
    from batchcls.stages.report import format_report

    metrics = {"images": 1, "succeeded": 1, "failed": 0, "labelled": 0, "top1": None, "top5": None,
               "workers": [{"providers": [prov.CUDA, "CPUExecutionProvider"], "normalize": "graph", "tf32": False}]}
    assert "ran on: CUDAExecutionProvider, normalize graph, TF32 off" in format_report(metrics, None, "x")
    metrics["workers"] = [{"providers": ["CPUExecutionProvider"], "normalize": "host", "tf32": None}]
    assert "ran on: CPUExecutionProvider, normalize host" in format_report(metrics, None, "x").splitlines()
