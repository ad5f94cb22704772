"""batchcls end to end as a user runs it: `python -m batchcls.run JOB --set ...` in a subprocess, cold or warm cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import yaml

from common import BATCH, PART_TIMEOUT_S, PY, REPO, fresh_dir, subprocess_env, work

# A setting written "ENV:NAME=VALUE" is an environment variable of the run, not a job field.
ENV_PREFIX = "ENV:"
# How often a running command is polled (and its memory sampled).
SAMPLE_S = 0.2


def write_job(tag: str, onnx: str, root: str, labels: str) -> str:
    """A job file as in jobs/: the model, the image folder, the timm profile, one worker, batch 48;
    everything else the engine's defaults (cache and output under benchmarks/work/<tag>)."""
    job = {"model": {"name": os.path.basename(onnx).split("-")[0], "source": "custom", "onnx": onnx},
           "dataset": {"root": root, "labels": labels},
           "preprocess": {"profile": "timm"},
           "inference": {"batch_size": BATCH, "workers": 1},
           "runtime": {"cache_dir": work("cache", tag)},
           "output": {"dir": work("runs", tag), "overwrite": True}}
    path = work("jobs", f"{tag}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(job, f, sort_keys=False)
    return path


def run_batchcls(job: str, sets: list[str], cold: bool, monitor=None) -> dict:
    """One run (`sets` are --set FIELD=VALUE, or ENV:NAME=VALUE): cold empties the shard cache first; either way the output folder starts empty (a run
    into a finished folder would only reuse its parts). Returns metrics.json's timing, shards and
    workers, the command's wall time, and the cache's bytes per prepared image. `monitor.sample(pid)`
    is called every SAMPLE_S while the command runs."""
    with open(job) as f:
        spec = yaml.safe_load(f)
    cache, out = spec["runtime"]["cache_dir"], spec["output"]["dir"]
    for s in sets:  # --set may move them
        key, _, value = s.partition("=")
        cache = value if key == "runtime.cache_dir" else cache
        out = value if key == "output.dir" else out
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    fresh_dir(out)
    env = subprocess_env()
    env.update(s[len(ENV_PREFIX):].split("=", 1) for s in sets if s.startswith(ENV_PREFIX))
    sets_ = [s for s in sets if not s.startswith(ENV_PREFIX)]
    cmd = [PY, "-m", "batchcls.run", job, "--no-progress"] + [a for s in sets_ for a in ("--set", s)]
    t = time.time()
    _run(cmd, env, monitor)
    wall = time.time() - t
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    timing = metrics["timing"]
    result = {"cold": cold, "sets": sets, "command_s": wall, "images": metrics["images"],
              "failed": metrics["failed"], "timing": timing, "shards": metrics["shards"],
              "workers": metrics["workers"], "command_images_per_s": metrics["images"] / wall,
              "cache": cache_size(cache)}
    # Everything in the inference window that is not the model: normalising, top-k, waiting for shards.
    if timing.get("model_run_s"):
        result["device_idle_fraction"] = (timing["infer_s"] - timing["model_run_s"]) / timing["model_run_s"]
    return result


def _run(cmd: list[str], env: dict, monitor) -> None:
    log = work("logs", "batchcls-run.log")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.time() + PART_TIMEOUT_S
        while True:
            if monitor is not None:
                monitor.sample(proc.pid)
            try:
                proc.wait(timeout=SAMPLE_S)  # returns the moment it ends: the wall time stays exact
                break
            except subprocess.TimeoutExpired:
                if time.time() > deadline:
                    proc.kill()
    if proc.returncode != 0:
        with open(log) as f:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{f.read()[-3000:]}")


def cache_size(cache_dir: str) -> dict:
    """The npz shard files under the cache folder: count, bytes, and bytes per cached image."""
    files, total, images = 0, 0, 0
    for dirpath, _, names in os.walk(os.path.join(cache_dir, "shards")):
        for n in names:
            if n.endswith(".npz"):
                path = os.path.join(dirpath, n)
                files += 1
                total += os.path.getsize(path)
                images += _npz_rows(path, "images")
    return {"files": files, "bytes": total, "images": images, "bytes_per_image": total / images if images else None}


def _npz_rows(path: str, member: str) -> int:
    """Rows of one array in an npz, from its header alone (the crops themselves are not read)."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as zf, zf.open(f"{member}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(f)[0][0]

