"""One measurement per process: `python benchmarks/parts.py NAME '{json kwargs}'` prints one JSON line."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BATCH, float_normalize, fresh_dir, image_paths, pil_reference  # noqa: E402

# Untimed model calls first: onnxruntime plans memory and picks kernels on the first runs.
WARMUP_BATCHES = 2
# per_core alternates ours and the PIL loop in pieces this size, so both see the same neighbours' load.
INTERLEAVE = 50


def model_bound(onnx: str, images: int, batch: int = BATCH, threads: int = 0, spinning: bool = False) -> dict:
    """M: the model alone on ready float32 batches, every core. `spinning` is onnxruntime's default
    session (threads spin between calls); without it, the session the engine opens (create_backend)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
    if spinning:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(onnx, sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run():
            return sess.run(None, {name: x})
    else:
        from batchcls.backends import create_backend

        backend = create_backend("onnxruntime", onnx, intra_op_threads=threads)

        def run():
            return backend.run(x)
    for _ in range(WARMUP_BATCHES):
        run()
    n = math.ceil(images / batch)
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        run()
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"images": n * batch, "seconds": wall, "images_per_s": n * batch / wall,
            "batch_ms_p50": 1e3 * float(np.median(lat)), "threads": threads, "spinning": spinning}


def per_core(root: str, images: int) -> dict:
    """Our `timm` transform vs the plain PIL loop, one process pinned to one core, on the same files,
    alternating in pieces; also how many crops differ (they must not)."""
    from batchcls.transforms import create_transform

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    paths = image_paths(root, images)
    ours = create_transform("timm")
    ours.load(paths[0]), pil_reference(paths[0])  # imports and tables, untimed
    t_ours = t_pil = 0.0
    differ = 0
    for i in range(0, len(paths), INTERLEAVE):
        piece = paths[i:i + INTERLEAVE]
        t = time.perf_counter()
        a = [ours.load(p) for p in piece]
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        b = [pil_reference(p) for p in piece]
        t_pil += time.perf_counter() - t
        differ += sum(not np.array_equal(x, y) for x, y in zip(a, b))
    n = len(paths)
    from batchcls.transforms.pilresize import compiled_resize_available

    return {"images": n, "ours_images_per_s": n / t_ours, "pil_images_per_s": n / t_pil,
            "ratio": t_pil / t_ours, "crops_differing": differ, "compiled_resampler": compiled_resize_available()}


def prep_bound(root: str, images: int, shard_size: int, cache_dir: str, num_cpus: int | None = None) -> dict:
    """P: the prep stage alone on every core, as the pipeline runs it: Ray tasks of `_prep_task`
    (decode, resize, crop, write the npz shard, return the crops through the object store)."""
    import ray

    from batchcls.pipeline import _prep_task
    from batchcls.stages.prep import transform_spec

    fresh_dir(cache_dir)
    names = [os.path.basename(p) for p in image_paths(root, images)]
    shards = [list(enumerate(names))[i:i + shard_size] for i in range(0, len(names), shard_size)]
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR")
    cpus = int(ray.cluster_resources()["CPU"])
    spec = transform_spec({"profile": "timm"})
    task = ray.remote(_prep_task).options(num_returns=2, num_cpus=1)
    # Start the worker processes and their imports before the clock: the pipeline's prep overlaps them
    # with ray.init and the model's load.
    ray.get([ray.remote(_warm_worker).options(num_cpus=1).remote() for _ in range(cpus)])
    t0 = time.perf_counter()
    refs = [task.remote(root, s, spec, os.path.join(cache_dir, f"{k:05d}.npz")) for k, s in enumerate(shards)]
    metas = ray.get([m for m, _ in refs])
    wall = time.perf_counter() - t0
    ray.shutdown()
    sizes = [os.path.getsize(os.path.join(cache_dir, f)) for f in os.listdir(cache_dir) if f.endswith(".npz")]
    ok = sum(m["ok"] for m in metas)
    return {"images": len(names), "ok": ok, "shards": len(shards), "cpus": cpus, "seconds": wall,
            "images_per_s": len(names) / wall, "npz_bytes_per_image": sum(sizes) / max(ok, 1)}


def _warm_worker() -> None:
    import batchcls.stages.prep  # noqa: F401

    time.sleep(0.5)  # long enough that every CPU gets a worker process of its own


def naive(root: str, images: int, onnx: str, out: str, batch: int = BATCH) -> dict:
    """What a user writes without us: one process; per batch, PIL-decode and preprocess, normalise in
    numpy, run onnxruntime's default session; top-5 to Parquet at the end."""
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    t_start = time.perf_counter()
    sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    paths = image_paths(root, images)
    t0 = time.perf_counter()
    rows_path, rows_top = [], []
    t_model = 0.0
    for i in range(0, len(paths), batch):
        piece = paths[i:i + batch]
        x = float_normalize(np.stack([pil_reference(p) for p in piece]))
        t = time.perf_counter()
        logits = sess.run(None, {name: x})[0]
        t_model += time.perf_counter() - t
        rows_path += [os.path.basename(p) for p in piece]
        rows_top += np.argsort(-logits, axis=1)[:, :5].tolist()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    pq.write_table(pa.table({"path": rows_path, "topk_ids": rows_top}), out)
    wall = time.perf_counter() - t0
    return {"images": len(paths), "seconds": wall, "images_per_s": len(paths) / wall,
            "with_session_s": time.perf_counter() - t_start, "model_s": t_model}


def vendor_npz(root: str, images: int, out_dir: str) -> dict:
    """The vendor's data flow (image2npz): one `.npz` per image at full resolution, CHW uint8 RGB,
    written by one process, plus the datalist; bytes per image and images/s."""
    import cv2

    fresh_dir(out_dir)
    paths = image_paths(root, images)
    listing = []
    t0 = time.perf_counter()
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        chw = np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
        target = os.path.join(out_dir, os.path.basename(p).rsplit(".", 1)[0] + ".npz")
        np.savez(target, data=chw)
        listing.append(target)
    with open(os.path.join(out_dir, "npz_datalist.txt"), "w") as f:
        f.write("\n".join(listing) + "\n")
    wall = time.perf_counter() - t0
    npz_bytes = sum(os.path.getsize(t) for t in listing)
    jpeg_bytes = sum(os.path.getsize(p) for p in paths)
    fresh_dir(out_dir)  # ~0.6 MB per image: not worth keeping
    return {"images": len(paths), "seconds": wall, "images_per_s": len(paths) / wall,
            "bytes_per_image": npz_bytes / len(paths), "jpeg_bytes_per_image": jpeg_bytes / len(paths)}


def bench_actor(onnx: str, images: int, batch: int = BATCH) -> dict:
    """M inside Ray: `batchcls bench` (one Ray actor, one session, synthetic batches), so the table
    separates what Ray's environment costs the model from what the pipeline adds."""
    import contextlib
    import io

    from batchcls.bench import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([onnx, "-i", "1", "-b", str(batch), "--count", str(images)])
    if rc != 0:
        raise RuntimeError(f"batchcls bench failed ({rc})")
    s = json.loads(out.getvalue().strip().splitlines()[-1])
    return {"images": s["images"], "seconds": s["seconds"], "images_per_s": s["images_per_s"],
            "latency_ms": s["latency_ms"]}


def ray_up(job: str, sets: list[str]) -> dict:
    """batchcls in a process where Ray is already up (a notebook, a service that evaluates again and
    again): ray.init first, untimed, then run_job cold then warm, each timed from its call as the CLI
    times itself. Returns {'cold': ..., 'warm': ...} shaped like e2e.run_batchcls's results."""
    import shutil

    import ray

    from batchcls.config import load_job
    from batchcls.pipeline import run_job
    from e2e import cache_size

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    out = {}
    for kind in ("cold", "warm"):
        spec = load_job(job, list(sets))
        if kind == "cold":
            shutil.rmtree(spec.runtime.cache_dir, ignore_errors=True)
        fresh_dir(spec.output.dir)
        t = time.time()
        metrics = run_job(spec, t_command=t, log=lambda _m: None)
        wall = time.time() - t
        out[kind] = {"cold": kind == "cold", "sets": sets, "command_s": wall, "images": metrics["images"],
                     "failed": metrics["failed"], "timing": metrics["timing"], "shards": metrics["shards"],
                     "workers": metrics["workers"], "cache": cache_size(spec.runtime.cache_dir)}
    ray.shutdown()
    return out


def raydata(**kwargs) -> dict:
    from raydata_pipeline import run

    return run(**kwargs)


PARTS = {f.__name__: f for f in (model_bound, per_core, prep_bound, naive, vendor_npz, bench_actor, ray_up,
                                  raydata)}

if __name__ == "__main__":
    result = PARTS[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result), flush=True)
