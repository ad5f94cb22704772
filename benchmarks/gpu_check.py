"""`python benchmarks/gpu_check.py OUTDIR --mode gpu|cpu` (started by gpu_check.sh): the device check.

Writes OUTDIR/gpu_check.json and prints a table:
1. providers: onnxruntime, the build's providers, what a session gets, nvidia-smi, doctor's findings;
2. model-only img/s (dla34, dla46_c; batch 48 and 256; fp32 TF32 off, fp32 TF32, fp16) with host
   normalisation (the worker's LUT + float32 into the model), graph normalisation (uint8 in), and graph
   with a CUDA graph (IOBinding), through batchcls's own backend;
3. graph vs host logits on the device (same algorithms: cudnn_conv_algo_search DEFAULT), and the
   device's fp32 logits against the CPU's with TF32 off and on;
4. end to end with `python -m batchcls.run`: cold (prep on all but one CPU) and warm from the cache,
   fp32 and fp16, one worker per GPU and two ({GPU: 0.5});
5. TensorRT when it loads: engine build, cached reload, img/s.
Every cell has a time budget; one that fails or runs out records why and the check goes on.
`--mode cpu` runs the same steps on the CPU provider with tiny sizes (a smoke test for CI).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

# budget_s: the whole Python part (the install before it takes ~1-2 min); reserve_s: kept for TensorRT.
GPU = {"models": ("dla34", "dla46_c"), "batches": (48, 256), "precisions": ("fp32", "fp32_tf32", "fp16"),
       "images": 20000, "cell_s": 2.0, "budget_s": 330, "reserve_s": 90, "e2e_fp16": True,
       "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
CPU = {"models": ("dla46_c",), "batches": (4,), "precisions": ("fp32", "fp16"), "images": 96, "cell_s": 0.3,
       "budget_s": 50, "reserve_s": 0, "e2e_fp16": False, "providers": ["CPUExecutionProvider"]}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Check:
    def __init__(self, out: str, cfg: dict, mode: str):
        self.out, self.cfg, self.mode = out, cfg, mode
        self.t0 = time.time()
        self.result: dict = {"mode": mode, "cells": [], "errors": []}

    def left(self) -> float:
        return self.cfg["budget_s"] - (time.time() - self.t0)

    def step(self, name: str, fn, *args):
        """Run one step; its failure is recorded, not fatal."""
        if self.left() <= 0:
            self.result["errors"].append(f"{name}: skipped, time budget spent")
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - the check goes on, the JSON says what failed
            self.result["errors"].append(f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
            return None

    def save(self) -> str:
        self.result["wall_s"] = round(time.time() - self.t0, 1)
        path = os.path.join(self.out, "gpu_check.json")
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.result, f, indent=1, default=str)
        os.replace(tmp, path)
        return path


def environment(c: Check) -> None:
    from batchcls import doctor

    d = doctor.collect()
    c.result["env"] = {"onnxruntime": d["onnxruntime"]["version"], "available": d["onnxruntime"]["available"],
                       "distributions": d["onnxruntime"]["distributions"], "sessions": d["onnxruntime"]["sessions"],
                       "libs": d["onnxruntime"]["libs"], "gpus": d["gpus"], "fixes": d["fixes"],
                       "python": d["python"], "cpus": os.cpu_count()}


def models(c: Check) -> dict:
    """fp32 ONNX by `batchcls export` (random weights), and fp16 with float32 IO (onnxruntime's converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    paths = {}
    for name in c.cfg["models"]:
        fp32 = os.path.join(c.out, "models", f"{name}.onnx")
        if not os.path.exists(fp32):
            subprocess.run([sys.executable, "-m", "batchcls", "export", name, "--weights", "random:0", "-o", fp32],
                           check=True, capture_output=True)
        fp16 = fp32.replace(".onnx", ".fp16.onnx")
        if not os.path.exists(fp16):
            onnx.save(convert_float_to_float16(onnx.load(fp32), keep_io_types=True), fp16)
        paths[name] = {"fp32": fp32, "fp16": fp16}
    return paths


def backend(c: Check, model: str, precision: str, graph: bool, cuda_graph: bool = False, batch: int | None = None,
            providers=None, options=None):
    from batchcls.backends import create_backend
    from batchcls.transforms.normalize import normalization_table

    return create_backend("onnxruntime", model, providers=providers or c.cfg["providers"],
                          tf32=precision == "fp32_tf32", cuda_graph=cuda_graph, batch_size=batch,
                          graph_table=normalization_table(MEAN, STD) if graph else None,
                          cache_dir=os.path.join(c.out, "cache"), provider_options=options or {})


def time_cell(c: Check, b, batch: int, host: bool) -> dict:
    """img/s of the worker's per-batch work (host: LUT + float32 run; else uint8 run); first run apart."""
    from batchcls.transforms.normalize import apply_table, normalization_table

    table = normalization_table(MEAN, STD)
    x = np.random.default_rng(0).integers(0, 256, (batch, 3, 224, 224), dtype=np.uint8)

    def once():
        return b.run(apply_table(x, table) if host else x)

    t = time.perf_counter()
    once()
    first = time.perf_counter() - t
    n, t = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t < c.cfg["cell_s"]:
        once()
        n += 1
    dt = time.perf_counter() - t
    return {"img_s": round(n * batch / dt, 1), "first_run_s": round(first, 3), "runs": n}


def model_only(c: Check, paths: dict) -> None:
    for name, files in paths.items():
        for batch in c.cfg["batches"]:
            for precision in c.cfg["precisions"]:
                model = files["fp16" if precision == "fp16" else "fp32"]
                variants = [("host", False, False), ("graph", True, False)]
                if c.mode == "gpu":
                    variants.append(("graph+cuda_graph", True, True))
                for label, graph, cg in variants:
                    cell = {"model": name, "batch": batch, "precision": precision, "normalize": label}
                    c.result["cells"].append(cell)
                    if c.left() < c.cfg["reserve_s"]:
                        cell["skipped"] = "time budget (kept for TensorRT)"
                        continue

                    def run(cell=cell, model=model, graph=graph, cg=cg, batch=batch, precision=precision):
                        t = time.perf_counter()
                        b = backend(c, model, precision, graph, cg, batch)
                        cell["session_s"] = round(time.perf_counter() - t, 2)
                        cell.update(time_cell(c, b, batch, host=not graph))
                        cell["providers"] = b.describe()["providers"]

                    c.step(f"model {name} b{batch} {precision} {label}", run)


def equality(c: Check, paths: dict) -> None:
    """Graph vs host on the device, and the device against the CPU provider (TF32 off and on)."""
    from batchcls.transforms.normalize import apply_table, normalization_table

    name = c.cfg["models"][-1]
    model = paths[name]["fp32"]
    table = normalization_table(MEAN, STD)
    x = np.random.default_rng(1).integers(0, 256, (8, 3, 224, 224), dtype=np.uint8)
    same = {"CUDAExecutionProvider": {"cudnn_conv_algo_search": "DEFAULT"}} if c.mode == "gpu" else {}
    host = backend(c, model, "fp32", False, options=same).run(apply_table(x, table))
    graph = backend(c, model, "fp32", True, options=same).run(x)
    cpu = backend(c, model, "fp32", False, providers=["CPUExecutionProvider"]).run(apply_table(x, table))
    scale = float(np.abs(cpu).max()) or 1.0
    eq = {"model": name, "graph_equals_host_bitwise": bool(np.array_equal(host.view(np.uint32), graph.view(np.uint32))),
          "graph_vs_host_max_abs": float(np.abs(host - graph).max()),
          "device_vs_cpu_max_rel_tf32_off": float(np.abs(host - cpu).max() / scale)}
    if c.mode == "gpu":
        tf32 = backend(c, model, "fp32_tf32", False).run(apply_table(x, table))
        eq["device_vs_cpu_max_rel_tf32_on"] = float(np.abs(tf32 - cpu).max() / scale)
    c.result["equality"] = eq


def images(c: Check) -> tuple[str, str]:
    """Generated ImageNet-like JPEGs (flat, with val_label.txt), made by all CPUs."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import ensure_images

    root = os.path.join(c.out, "images")
    return root, ensure_images(root, c.cfg["images"])


def end_to_end(c: Check, paths: dict, root: str, labels: str) -> None:
    """`python -m batchcls.run` as a user runs it; metrics.json's timing per run."""
    import yaml

    name = c.cfg["models"][0]
    gpu = c.mode == "gpu"
    cpus = os.cpu_count() or 2
    base = {"model": {"name": name, "onnx": paths[name]["fp32"]},
            "dataset": {"root": root, "labels": labels, "layout": "flat"},
            "inference": {"batch_size": 48, "workers": 1, "providers": c.cfg["providers"],
                          "resources": {"GPU": 1} if gpu else {"CPU": 1}},
            # a GPU worker holds no CPU: prep gets all but one (the driver's)
            "runtime": {"cache_dir": os.path.join(c.out, "e2e-cache"), "num_cpus": max(1, cpus - 1) if gpu else cpus,
                        "progress": False},
            "output": {"dir": os.path.join(c.out, "e2e-run"), "overwrite": True}}
    job = os.path.join(c.out, "e2e.yaml")
    with open(job, "w") as f:
        yaml.safe_dump(base, f)
    runs = [("cold", [], True), ("warm", [], False)]
    if c.cfg["e2e_fp16"]:
        runs.append(("warm fp16", [f"model.onnx={paths[name]['fp16']}"], False))
    if gpu:
        runs.append(("warm 2 workers {GPU: 0.5}", ["inference.workers=2", "inference.resources={GPU: 0.5}"], False))
    c.result["e2e"] = []
    for label, sets, cold in runs:
        def run(label=label, sets=sets, cold=cold):
            # a fresh output folder each time (a finished one would only be reused); cold: no cache either
            for folder in [base["output"]["dir"]] + [base["runtime"]["cache_dir"]] * cold:
                shutil.rmtree(folder, ignore_errors=True)
            cmd = [sys.executable, "-m", "batchcls.run", job, "--no-progress"] + [a for s in sets for a in ("--set", s)]
            t = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, c.left() + 30))
            if p.returncode != 0:
                raise RuntimeError(p.stdout[-300:] + p.stderr[-500:])
            with open(os.path.join(base["output"]["dir"], "metrics.json")) as f:
                m = json.load(f)
            t_ = m["timing"]
            c.result["e2e"].append({"run": label, "images": m["images"], "command_s": round(time.time() - t, 1),
                                    **{k: t_.get(k) for k in ("end_to_end_images_per_s", "infer_images_per_s",
                                                              "prep_images_per_s", "startup_s", "model_run_s")},
                                    "workers": [{k: w.get(k) for k in ("providers", "normalize", "tf32", "warmup_s")}
                                                for w in m["workers"]]})
        c.step(f"e2e {label}", run)


def tensorrt(c: Check, paths: dict) -> None:
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        c.result["tensorrt"] = {"loaded": False, "why": "not in this onnxruntime build's providers"}
        return
    name = c.cfg["models"][0]
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    rows = []
    for precision, model in (("fp16", paths[name]["fp16"]), ("fp32", paths[name]["fp32"])):
        row = {"model": name, "precision": precision}

        def run(row=row, precision=precision, model=model):
            from batchcls.backends import create_backend
            from batchcls.transforms.normalize import normalization_table

            kw = dict(providers=providers, graph_table=normalization_table(MEAN, STD), batch_size=48,
                      cache_dir=os.path.join(c.out, "cache"), tensorrt_precision=precision)
            for key in ("build_s", "reload_s"):
                t = time.perf_counter()
                b = create_backend("onnxruntime", model, **kw)
                b.run(np.zeros((48, 3, 224, 224), np.uint8))  # the engine is built on the first run
                row[key] = round(time.perf_counter() - t, 2)
            row["providers"] = b.describe()["providers"]
            row.update(time_cell(c, b, 48, host=False))

        c.step(f"tensorrt {precision}", run)
        rows.append(row)
    c.result["tensorrt"] = {"loaded": True, "rows": rows}


def table(r: dict) -> str:
    lines = [f"gpu_check ({r['mode']}): onnxruntime {r.get('env', {}).get('onnxruntime')}, "
             f"sessions {r.get('env', {}).get('sessions')}, gpus {r.get('env', {}).get('gpus')}",
             f"{'model':8} {'batch':>5} {'precision':10} {'normalize':17} {'img/s':>9} {'first run s':>11}"]
    for cell in r["cells"]:
        lines.append(f"{cell['model']:8} {cell['batch']:5} {cell['precision']:10} {cell['normalize']:17} "
                     f"{cell.get('img_s', 'failed'):>9} {cell.get('first_run_s', ''):>11}")
    if "equality" in r:
        lines.append(f"equality: {r['equality']}")
    for e in r.get("e2e", []):
        lines.append(f"e2e {e['run']:28} {e['images']} images: end to end {e['end_to_end_images_per_s'] or 0:.0f} "
                     f"img/s, inference {e['infer_images_per_s'] or 0:.0f} img/s, startup {e['startup_s'] or 0:.1f} s")
    if "tensorrt" in r:
        lines.append(f"tensorrt: {r['tensorrt']}")
    lines += [f"error: {e}" for e in r["errors"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip().splitlines()[0])
    p.add_argument("out")
    p.add_argument("--mode", choices=("gpu", "cpu"), default="gpu")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    c = Check(os.path.abspath(args.out), GPU if args.mode == "gpu" else CPU, args.mode)
    c.step("environment", environment, c)
    paths = c.step("models", models, c)
    if paths:
        c.step("equality", equality, c, paths)
        data = c.step("images", images, c)
        if data:
            end_to_end(c, paths, *data)
        model_only(c, paths)
        if args.mode == "gpu":
            c.step("tensorrt", tensorrt, c, paths)
    path = c.save()
    print(table(c.result))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
