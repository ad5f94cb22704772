"""`batchcls doctor [--json]`: what this host can run (onnxruntime build and providers, GPUs, CUDA and
cuDNN libraries, the VastAI SDK, Ray) and, for each thing missing, what to do."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
from importlib import metadata

from .backends import providers as prov


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect() -> dict:
    """Everything doctor prints, as data."""
    from .synthetic import tiny_classifier_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_classifier_onnx(os.path.join(tmp, "probe.onnx"), input_size=32, num_classes=10)
        with open(path, "rb") as f:
            runtime = prov.runtime_report(f.read())
    return {"python": platform.python_version(), "platform": platform.platform(), "onnxruntime": runtime,
            "gpus": prov.nvidia_smi(), "vaststreamx": importlib.util.find_spec("vaststreamx") is not None,
            "ray": _version("ray"), "onnx": _version("onnx"), "fixes": fixes(runtime)}


def fixes(runtime: dict) -> list[str]:
    """What to do, one line each; empty when every provider the build has works."""
    out = []
    if runtime["error"]:
        out.append(f"{runtime['error']}: pip install -e '.[cpu]' (or '.[gpu]' on a CUDA host)")
    gpu_libs = any(runtime["libs"][k] for k in ("driver", "cudart", "cudnn"))
    for name in prov.GPU_PROVIDERS:
        got = runtime["sessions"].get(name)
        if name in runtime["available"] and got is not None and (isinstance(got, str) or name not in got):
            out += [f"{name}: {r}" for r in prov.diagnose(name, runtime["available"])]
    if not out and len(runtime["distributions"]) > 1:
        out += prov.diagnose(prov.CUDA, runtime["available"])[:1]
    if runtime["libs"]["driver"] and prov.CUDA not in runtime["available"]:
        out.append("this host has an NVIDIA driver but onnxruntime has no CUDA provider: "
                   "pip uninstall -y onnxruntime && pip install -e '.[gpu]'")
    elif gpu_libs and not runtime["libs"]["driver"]:
        out.append("for an NVIDIA GPU: CUDA libraries are here but no NVIDIA driver is loadable: install the "
                   "driver (>= 580 for the CUDA 13 wheels, >= 535 for '.[gpu-cuda12]')")
    return out


def format_report(d: dict) -> str:
    rt = d["onnxruntime"]
    lines = [f"python        {d['python']} ({d['platform']})",
             f"onnxruntime   {rt['version'] or 'not importable'}; packages: "
             + (", ".join(f"{k} {v}" for k, v in rt["distributions"].items()) or "none"),
             f"providers     {', '.join(rt['available']) or '-'} (build)"]
    for name, got in rt["sessions"].items():
        lines.append(f"  {name}: " + (got if isinstance(got, str) else
                                       ("loads" if name in got else "FALLS BACK to ") + ", ".join(got)))
    gpus = d["gpus"]
    lines.append("gpus          " + ("nvidia-smi not found" if gpus is None else
                                     "; ".join(" / ".join(g) for g in gpus) or "none"))
    lines.append("cuda libs     " + ", ".join(f"{k}: {v or 'missing'}" for k, v in rt["libs"].items()))
    lines.append(f"vaststreamx   {'present' if d['vaststreamx'] else 'absent (vacc backend unavailable)'}")
    lines.append(f"ray           {d['ray'] or 'not installed'}; onnx {d['onnx'] or 'not installed'}")
    lines.append("can run       " + ", ".join(["CPUExecutionProvider"] * bool(rt["version"]) + [
        n for n, got in rt["sessions"].items() if not isinstance(got, str) and n in got]) or "nothing")
    lines += ["fix:          " + f for f in d["fixes"]] or ["fix           nothing to fix"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="batchcls doctor", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = p.parse_args(argv)
    d = collect()
    print(json.dumps(d, indent=2) if args.json else format_report(d))
    return 0 if d["onnxruntime"]["version"] else 1


if __name__ == "__main__":
    sys.exit(main())
