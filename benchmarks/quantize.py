"""int8 and fp16 builds of seeded-random DLAs: calibration time and peak memory, throughput through
`batchcls bench` next to fp32, and agreement with fp32 on held-out generated images.

    python benchmarks/quantize.py build --model dla46_c --images 1000 --variants entropy,percentile,minmax,fp16
    python benchmarks/quantize.py bench --model dla46_c [--seconds 10]
    python benchmarks/quantize.py agree --model dla46_c [--images 300]
    python benchmarks/quantize.py report

Each step holds /tmp/batchcls-heavy.lock while it measures (build: one variant at a time). Results accumulate
in benchmarks/results/quantize.json (one entry per model, step and variant), a dated copy beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PY, REPO, RESULTS, ensure_images, ensure_model, machine, subprocess_env, work, write_json_atomic  # noqa: E402

LOCK = "/tmp/batchcls-heavy.lock"
RESULT = os.path.join(RESULTS, "quantize.json")
CALIB_IMAGES = 1000
HELDOUT_IMAGES = 300
VARIANTS = ("entropy", "percentile", "minmax", "fp16")


@contextlib.contextmanager
def heavy_lock():
    with open(LOCK, "a") as f:
        t = time.time()
        fcntl.flock(f, fcntl.LOCK_EX)
        print(f"[lock acquired after {time.time() - t:.0f} s]", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _job(model: str, images: int) -> str:
    """A job over the generated calibration images with the model's fp32 ONNX (seeded random weights)."""
    import yaml

    root = work(f"images-{images}", "x")[:-2]
    labels = ensure_images(root, images)
    path = work("quant", model, "job.yaml")
    job = {"model": {"name": model, "onnx": ensure_model(model)}, "dataset": {"root": root, "labels": labels},
           "runtime": {"cache_dir": work("quant", "cache", "x")[:-2], "progress": False},
           "output": {"dir": work("quant", model, "run", "x")[:-2]}}
    with open(path, "w") as f:
        yaml.safe_dump(job, f)
    return path


def _built(model: str, variant: str, images: int) -> str:
    return work("quant", model, f"{variant}-{images}.onnx")


def _load() -> dict:
    if os.path.exists(RESULT):
        with open(RESULT) as f:
            return json.load(f)
    return {"entries": {}}


def _save(key: str, value: dict) -> None:
    data = _load()
    data["entries"][key] = {**value, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine()}
    write_json_atomic(RESULT, data)
    write_json_atomic(os.path.join(RESULTS, f"quantize-{time.strftime('%Y%m%d-%H%M%S')}.json"), data)


def _peak_fp32(model_path: str) -> float:
    """Peak RSS (MB) of a process that opens the fp32 model and runs one calibration-sized batch: the floor."""
    code = ("import resource, numpy as np, onnxruntime as ort\n"
            f"s = ort.InferenceSession({model_path!r}, providers=['CPUExecutionProvider'])\n"
            "s.run(None, {s.get_inputs()[0].name: np.zeros((8, 3, 224, 224), np.float32)})\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=REPO, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _prep_warm(job_path: str, images: int) -> dict:
    """Prepare the calibration images once (the shard cache), so builds time calibration, not JPEG decoding."""
    from batchcls import calibrate
    from batchcls.config import load_job
    from batchcls.plan import make_plan

    job = load_job(job_path)
    plan = make_plan(job, job.model.onnx)
    samples = calibrate.calibration_samples(plan, dataclasses.replace(calibrate.settings_of(job), images=images))
    t = time.perf_counter()
    used: list = []
    n = sum(b.shape[0] for b in calibrate.prepared_images(plan, samples, used, []))
    return {"images": n, "seconds": time.perf_counter() - t}


def step_build(args) -> None:
    job = _job(args.model, args.images)
    with heavy_lock():
        prep = _prep_warm(job, args.images)
        floor = _peak_fp32(ensure_model(args.model))
    print(f"{args.model}: {prep['images']} calibration images prepared in {prep['seconds']:.1f} s (cached now); "
          f"fp32 session + one batch of 8: peak {floor:.0f} MB")
    for variant in args.variants.split(","):
        out = _built(args.model, variant, args.images)
        cmd = [PY, "-m", "batchcls.cli", "quantize", job, "-o", out, "--images", str(args.images)]
        cmd += ["--precision", "fp16"] if variant == "fp16" else ["--method", variant]
        with heavy_lock():
            t = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO)
            wall = time.time() - t
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        fields = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line and not line.startswith("calibrating"))
        entry = {"model": args.model, "variant": variant, "images": args.images, "command_s": wall,
                 "calibrate_s": float(fields.get("calibrate_s", 0)), "build_s": float(fields["build_s"]),
                 "thresholds_s": float(fields["thresholds_s"]) if "thresholds_s" in fields else None,
                 "peak_rss_mb": float(fields["peak_rss_mb"]), "fp32_floor_mb": floor, "prep_warm": prep,
                 "images_used": int(fields.get("images", 0)), "size_bytes": os.path.getsize(out)}
        _save(f"build/{args.model}/{variant}/{args.images}", entry)
        print(f"{args.model} {variant:10s} {args.images} images: build {entry['build_s']:.1f} s (calibration "
              f"{entry['calibrate_s']:.1f} s), peak {entry['peak_rss_mb']:.0f} MB (fp32 floor {floor:.0f} MB), "
              f"{entry['size_bytes'] / 1e6:.1f} MB", flush=True)


def _bench(path: str, seconds: float) -> dict:
    cmd = [PY, "-m", "batchcls.cli", "bench", path, "--seconds", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_bench(args) -> None:
    models = {"fp32": ensure_model(args.model)}
    for variant in args.variants.split(","):
        path = _built(args.model, variant, args.images)
        if os.path.exists(path):
            models[variant if variant == "fp16" else f"int8-{variant}"] = path
    rows: dict = {}
    with heavy_lock():
        # Passes in alternating order, each variant keeping its best: other users' load is not charged to one.
        for p in range(args.repeat):
            for name, path in (list(models.items()) if p % 2 == 0 else list(models.items())[::-1]):
                s = _bench(path, args.seconds)
                print(f"{args.model} pass {p + 1} {name:16s} {s['images_per_s']:7.1f} img/s  p50 "
                      f"{s['latency_ms']['p50']:.0f} ms/batch", flush=True)
                if name not in rows or s["images_per_s"] > rows[name]["images_per_s"]:
                    rows[name] = {"images_per_s": s["images_per_s"], "p50_ms": s["latency_ms"]["p50"],
                                  "batches": s["batches"]}
                rows[name].setdefault("passes", []).append(s["images_per_s"])
    base = rows["fp32"]["images_per_s"]
    for name, row in rows.items():
        row["ratio_vs_fp32"] = row["images_per_s"] / base
        print(f"  {name:16s} x{row['ratio_vs_fp32']:.2f} of fp32")
    _save(f"bench/{args.model}/{args.variants}", {"model": args.model, "seconds": args.seconds, "rows": rows})


def _probs(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from batchcls.metrics import softmax

    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = [s.run(None, {name: x[i:i + 48]})[0] for i in range(0, len(x), 48)]
    return softmax(np.concatenate(out).astype(np.float32))


def agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """Top-1 agreement, top-5 set agreement (the same five classes, any order), max and mean |Δ prob|."""
    top5_ref = np.sort(np.argsort(-ref, axis=1)[:, :5], axis=1)
    top5_got = np.sort(np.argsort(-got, axis=1)[:, :5], axis=1)
    diff = np.abs(ref - got)
    return {"top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "top5_set_agreement": float(np.mean(np.all(top5_ref == top5_got, axis=1))),
            "max_abs_dprob": float(diff.max()), "mean_abs_dprob_top1": float(np.mean(
                np.abs(ref.max(1) - got[np.arange(len(got)), ref.argmax(1)])))}


def step_agree(args) -> None:
    from batchcls.stages.prep import prep_shard
    from batchcls.transforms import create_transform
    from batchcls.transforms.normalize import normalize

    root = work(f"images-heldout-{args.heldout}", "x")[:-2]
    ensure_images(root, args.heldout, seed=7)
    names = sorted(n for n in os.listdir(root) if n.endswith(".JPEG"))
    spec = tuple(sorted({"profile": "timm"}.items()))
    crops = prep_shard(root, list(enumerate(names)), spec, None)["images"]
    t = create_transform(profile="timm")
    x = normalize(crops, t.mean, t.std)
    with heavy_lock():
        ref = _probs(ensure_model(args.model), x)
        rows = {}
        for variant in args.variants.split(","):
            path = _built(args.model, variant, args.images)
            if os.path.exists(path):
                rows[variant if variant == "fp16" else f"int8-{variant}"] = agreement(ref, _probs(path, x))
    margin = np.sort(ref, axis=1)
    context = {"fp32_top1_prob_median": float(np.median(margin[:, -1])),
               "fp32_top1_top2_margin_median": float(np.median(margin[:, -1] - margin[:, -2]))}
    print(f"{args.model} on {len(x)} held-out images (not calibration images); fp32 median top-1 prob "
          f"{context['fp32_top1_prob_median']:.4f}, median top-1/top-2 margin {context['fp32_top1_top2_margin_median']:.4f}")
    for name, row in rows.items():
        print(f"  {name:16s} top-1 agree {100 * row['top1_agreement']:5.1f}%  top-5 set {100 * row['top5_set_agreement']:5.1f}%"
              f"  max|dp| {row['max_abs_dprob']:.4f}  mean|dp(top1)| {row['mean_abs_dprob_top1']:.5f}")
    _save(f"agree/{args.model}/{args.images}/{args.variants}",
          {"model": args.model, "heldout_images": len(x), "calibration_images": args.images, "rows": rows, **context})


def step_report(args) -> None:
    for key, entry in sorted(_load()["entries"].items()):
        print(key, json.dumps({k: v for k, v in entry.items() if k != "machine"}, default=str))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=("build", "bench", "agree", "report"))
    p.add_argument("--model", default="dla46_c")
    p.add_argument("--images", type=int, default=CALIB_IMAGES, help="calibration images")
    p.add_argument("--heldout", type=int, default=HELDOUT_IMAGES, help="agree: generated images not calibrated on")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=2, help="bench: passes, in alternating order")
    args = p.parse_args()
    {"build": step_build, "bench": step_bench, "agree": step_agree, "report": step_report}[args.step](args)


if __name__ == "__main__":
    main()
