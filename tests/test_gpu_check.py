"""benchmarks/gpu_check.sh --cpu: the device check as a CPU smoke test; every step runs and the JSON
holds what the GPU run will fill in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_cpu_smoke(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=ROOT)
    p = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), str(tmp_path), "--cpu"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r["mode"] == "cpu" and r["errors"] == [], r["errors"]
    assert r["env"]["available"] and "CPUExecutionProvider" in r["env"]["available"]
    cells = {(c["precision"], c["normalize"]): c for c in r["cells"]}
    assert set(cells) == {("fp32", "host"), ("fp32", "graph"), ("fp16", "host"), ("fp16", "graph")}
    assert all(c["img_s"] > 0 and c["providers"] == ["CPUExecutionProvider"] for c in cells.values())
    assert r["equality"]["graph_equals_host_bitwise"] is True and r["equality"]["graph_vs_host_max_abs"] == 0.0
    runs = {e["run"]: e for e in r["e2e"]}
    assert set(runs) == {"cold", "warm"} and all(e["images"] == 96 for e in runs.values())
    assert runs["warm"]["workers"][0]["normalize"] == "host" and runs["warm"]["workers"][0]["tf32"] is None
    assert "dla46_c" in p.stdout and "equality" in p.stdout
    assert r["wall_s"] < 60
