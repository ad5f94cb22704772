"""`batchcls vamp export` (Ray tasks, 2 CPUs) against the vendor's image2npz loop (one process) on the same
images, plus the size of full-resolution shards (preprocess.on_device) against 224 crop shards.

    python benchmarks/vamp_export.py [--images 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, ensure_images, fresh_dir, image_paths, machine, work, write_json_atomic  # noqa: E402
from parts import vendor_npz  # noqa: E402


def shard_sizes(root: str, images: int) -> dict:
    """Bytes per image of a full-resolution shard (flat buffer + shapes) and of a 224 crop shard, and the
    cost of preparing each, on the same images."""
    from batchcls.stages.prep import prep_shard, transform_spec

    samples = [(i, os.path.basename(p)) for i, p in enumerate(image_paths(root, images))]
    out = {}
    for name, params in (("fullres", {"profile": "fullres"}),
                         ("vdsp_crop", {"profile": "vdsp", "vdsp_params": "timm-dla34"})):
        path = work("vamp_export", f"{name}.npz")
        if os.path.exists(path):
            os.unlink(path)
        t = time.perf_counter()
        prep_shard(root, samples, transform_spec(params), path)
        out[name] = {"bytes_per_image": os.path.getsize(path) / len(samples),
                     "images_per_s": len(samples) / (time.perf_counter() - t)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    args = ap.parse_args()
    root = work("vamp_export", "val")
    labels = ensure_images(root, args.images)
    vendor = vendor_npz(root, args.images, work("vamp_export", "vendor_out"))

    import ray

    from batchcls.cluster import connect
    from batchcls.config import validate_job
    from batchcls.vampcli import export

    t = time.perf_counter()
    connect(None, num_cpus=2)
    ray_up_s = time.perf_counter() - t
    job = validate_job({"model": {"name": "dla34", "source": "timm", "onnx": "unused.onnx"},
                        "dataset": {"root": root, "labels": labels, "limit": args.images},
                        "runtime": {"progress": False}, "output": {"dir": work("vamp_export", "run")}})
    out = fresh_dir(work("vamp_export", "batchcls_out"))
    t = time.perf_counter()
    counts = export(job, out, progress=False)
    wall = time.perf_counter() - t
    ray.shutdown()
    first = open(os.path.join(out, "datalist.txt")).readline().strip()
    with np.load(first) as z:
        shape = z["input_0"].shape
    fresh_dir(out)
    shards = shard_sizes(root, min(args.images, 240))
    result = {"images": counts["written"], "vendor_image2npz": vendor,
              "batchcls_export": {"seconds": wall, "images_per_s": counts["written"] / wall, "ray_init_s": ray_up_s},
              "ratio_batchcls_to_vendor": (counts["written"] / wall) / vendor["images_per_s"],
              "first_npz_shape": list(shape), "shards": shards, "machine": machine()}
    print(f"vendor image2npz (1 process): {vendor['images_per_s']:.0f} img/s, {vendor['bytes_per_image'] / 1e6:.2f} MB/img")
    print(f"batchcls vamp export (Ray, 2 CPUs): {result['batchcls_export']['images_per_s']:.0f} img/s "
          f"(x{result['ratio_batchcls_to_vendor']:.2f}; Ray start {ray_up_s:.1f} s not included)")
    for name, s in shards.items():
        print(f"shard {name}: {s['bytes_per_image'] / 1e3:.0f} KB/img, prep {s['images_per_s']:.0f} img/s (1 process)")
    write_json_atomic(os.path.join(RESULTS, "vamp_export.json"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}))


if __name__ == "__main__":
    main()
