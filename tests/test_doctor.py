"""`python -m batchcls doctor`: what it reports agrees with onnxruntime and Ray themselves, and two
runtime packages side by side are named with the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import onnxruntime as ort
import ray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _doctor(*args, extra_path: str | None = None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (extra_path, ROOT) if p))
    return subprocess.run([sys.executable, "-m", "batchcls", "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_doctor_json_matches_this_host():
    r = _doctor("--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    rt = d["onnxruntime"]
    assert rt["version"] == ort.__version__ and rt["available"] == ort.get_available_providers()
    assert rt["distributions"] == {"onnxruntime": ort.__version__} and d["ray"] == ray.__version__
    assert set(rt["libs"]) == {"driver", "cudart", "cublas", "cudnn", "tensorrt"}
    assert d["vaststreamx"] is False and rt["sessions"] == {}  # this build has no GPU provider to probe


def test_doctor_text_names_two_runtime_packages(tmp_path):
    info = tmp_path / "onnxruntime_gpu-1.23.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.23.2\n")
    r = _doctor(extra_path=str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"onnxruntime   {ort.__version__}; packages: onnxruntime {ort.__version__}, onnxruntime-gpu 1.23.2" in out
    assert "can run       CPUExecutionProvider" in out
    assert "several onnxruntime packages are installed (onnxruntime, onnxruntime-gpu)" in out
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in out
