"""Shared by the benchmarks: work folders, generated images and models, the PIL reference, the machine, result files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")
RESULTS = os.path.join(HERE, "results")
PY = sys.executable
# The batch the vendor's vamp and the published figures use.
BATCH = 48
# Each generator process writes this many images before it is handed the next piece.
GEN_CHUNK = 250
# A benchmark subprocess (one measurement) that runs longer than this is stuck, not slow.
PART_TIMEOUT_S = 1800


def work(*parts: str) -> str:
    path = os.path.join(WORK, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _gen_chunk(args) -> list[str]:
    from batchcls.synthetic import generate_imagenet_folder

    tmp, offset, count, classes, seed, small = args
    labels = generate_imagenet_folder(tmp, count, classes, seed, layout="flat", small=small)
    lines = []
    with open(labels) as f:
        for line in f:
            name, cls = line.split()
            number = int(name.split("_")[-1].split(".")[0]) + offset
            lines.append((name, f"ILSVRC2012_val_{number:08d}.JPEG", cls))
    return [f"{tmp}\t{old}\t{new}\t{cls}" for old, new, cls in lines]


def ensure_images(root: str, count: int, small: bool = False, seed: int = 0, procs: int | None = None) -> str:
    """`count` generated ImageNet-like JPEGs in `root` with `val_label.txt`, made once, by several
    processes (each generates a piece under its own seed, then the files are renamed into one numbering)."""
    marker = os.path.join(root, f".complete-{count}-{int(small)}-{seed}")
    labels = os.path.join(root, "val_label.txt")
    if os.path.exists(marker):
        return labels
    fresh_dir(root)
    procs = procs or os.cpu_count() or 1
    jobs = [(os.path.join(root, f".gen{i}"), off, min(GEN_CHUNK, count - off), 10, seed * 100003 + i, small)
            for i, off in enumerate(range(0, count, GEN_CHUNK))]
    t = time.time()
    out = []
    with ProcessPoolExecutor(procs) as pool:
        for rows in pool.map(_gen_chunk, jobs):
            out.extend(rows)
    label_lines = []
    for row in out:
        tmp, old, new, cls = row.split("\t")
        os.replace(os.path.join(tmp, old), os.path.join(root, new))
        label_lines.append(f"{new} {cls}")
    for job in jobs:
        shutil.rmtree(job[0], ignore_errors=True)
    with open(labels, "w") as f:
        f.write("\n".join(sorted(label_lines)) + "\n")
    open(marker, "w").close()
    print(f"generated {count} JPEGs in {root} in {time.time() - t:.0f} s", file=sys.stderr)
    return labels


def image_paths(root: str, limit: int | None = None) -> list[str]:
    names = sorted(n for n in os.listdir(root) if n.endswith(".JPEG"))
    return [os.path.join(root, n) for n in names[:limit]]


def ensure_model(name: str) -> str:
    """An ONNX file for `name`: a DLA architecture with seeded random weights, or 'tiny'."""
    if name == "tiny":
        from batchcls.synthetic import tiny_classifier_onnx

        path = work("onnx", "tiny.onnx")
        return path if os.path.exists(path) else tiny_classifier_onnx(path, seed=0)
    from batchcls.models.export import cached_onnx

    return str(cached_onnx(name, "random:0", os.path.dirname(work("onnx", name))))


def pil_reference(path: str, size: int = 256, crop: int = 224) -> np.ndarray:
    """The plain PIL loop a user writes: open, RGB, shorter side to `size` bilinear (long side truncated),
    center crop `crop` with torchvision's rounding, uint8 CHW."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)))
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def float_normalize(batch: np.ndarray, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> np.ndarray:
    """ToTensor + Normalize as a user writes it in numpy: uint8 [N,3,H,W] -> float32."""
    m = np.array(mean, np.float32)[:, None, None]
    s = np.array(std, np.float32)[:, None, None]
    return (batch.astype(np.float32) / np.float32(255) - m) / s


def cpu_times() -> list[int]:
    """The machine's CPU jiffies from /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def cpu_share(before: list[int], after: list[int]) -> dict:
    """Between two cpu_times(): the fraction of CPU time that was busy (anyone's), idle, and stolen by
    the hypervisor (other virtual machines): a run with much steal measured a slower machine."""
    d = [b - a for a, b in zip(before, after)]
    total = sum(d) or 1
    return {"busy": sum(d[:3] + d[5:7]) / total, "idle": (d[3] + d[4]) / total, "steal": d[7] / total}


def machine() -> dict:
    """What the figures were measured on: CPU, cores, memory, load, library versions, the commit."""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    versions = {}
    for mod in ("numpy", "PIL", "onnxruntime", "ray", "pyarrow", "simplejpeg", "cv2", "pandas"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a library that is missing is reported as such
            versions[mod] = None
    flags = open("/proc/cpuinfo").read()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1),
            "avx2": " avx2" in flags, "avx512": " avx512f" in flags, "vnni": "vnni" in flags,
            "loadavg_at_start": os.getloadavg(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "commit": _commit()}


def _commit() -> str | None:
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_part(name: str, timeout: float = PART_TIMEOUT_S, **kwargs) -> dict:
    """Run one measurement of `parts.py` in a fresh Python process (no threads, imports or Ray state
    carried from another measurement); returns its JSON result plus `command_s`, the process's wall time."""
    cmd = [PY, os.path.join(HERE, "parts.py"), name, json.dumps(kwargs)]
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env(), cwd=REPO)
    wall = time.time() - t
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark part {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["command_s"] = wall
    return result


def subprocess_env() -> dict:
    env = dict(os.environ)
    # A cluster of our own for every run: never one that `ray start` (another user's tests) left running.
    env["RAY_ADDRESS"] = "local"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def write_json_atomic(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)


def write_results(name: str, data: dict) -> list[str]:
    """`results/<name>.json` (the latest) and a dated copy beside it; returns both paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = [os.path.join(RESULTS, f"{name}.json"), os.path.join(RESULTS, f"{name}-{stamp}.json")]
    for p in paths:
        write_json_atomic(p, data)
    return paths
