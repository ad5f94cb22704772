"""`python benchmarks/worker_gap.py [--model dla46_c]`: where an inference worker's host-side time goes, and what a faster normalise would save (A/B, interleaved)."""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BATCH, ensure_model  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def apply_table_cv2(batch: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The proposed transforms.normalize.apply_table: the same (3, 256) float32 table, applied with
    cv2.LUT one plane at a time (a vectorised gather; bit-identical, as it only looks values up)."""
    import cv2

    images = batch if batch.ndim == 4 else batch[None]
    out = np.empty(images.shape, np.float32)
    for n in range(images.shape[0]):
        for c in range(3):
            out[n, c] = cv2.LUT(images[n, c], table[c])
    return out if batch.ndim == 4 else out[0]


def ab(worker, shard: dict, rounds: int) -> dict:
    """host_gap_fraction of the worker as it is and with the proposed apply_table, alternating calls."""
    import batchcls.stages.infer as infer

    current = infer.apply_table
    stats = {"current": [0.0, 0.0], "cv2_lut": [0.0, 0.0]}
    for _ in range(rounds):
        for name, fn in (("current", current), ("cv2_lut", apply_table_cv2)):
            infer.apply_table = fn
            r = worker(shard)
            stats[name][0] += r["call_s"] - r["run_s"]
            stats[name][1] += r["run_s"]
    infer.apply_table = current
    return {k: {"host_s": h, "model_s": m, "host_gap_fraction": h / m} for k, (h, m) in stats.items()}


def per_image_ms(fn, batch: np.ndarray, table: np.ndarray) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        fn(batch, table)
        best = min(best, time.perf_counter() - t)
    return best / batch.shape[0] * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--model", default="dla46_c")
    p.add_argument("--shard", type=int, default=96, help="images per worker call (a shard)")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    from batchcls.stages.infer import InferWorker
    from batchcls.transforms.normalize import apply_table, normalization_table

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.shard, 3, 224, 224), dtype=np.uint8)
    shard = {"images": images, "indices": np.arange(args.shard, dtype=np.int32), "errors": [""] * args.shard}
    table = normalization_table(MEAN, STD)
    assert np.array_equal(apply_table(images[:4], table), apply_table_cv2(images[:4], table))
    worker = InferWorker(ensure_model(args.model), "onnxruntime", {}, MEAN, STD, BATCH, 5, False)
    worker(shard)
    prof = cProfile.Profile()
    prof.enable()
    res = ab(worker, shard, args.rounds)
    prof.disable()
    per_img = {name: per_image_ms(fn, images[:BATCH], table)
               for name, fn in (("current", apply_table), ("cv2_lut", apply_table_cv2))}
    for name, r in res.items():
        print(f"{name:8s} host-side {r['host_s']:.2f} s / model {r['model_s']:.2f} s = "
              f"{100 * r['host_gap_fraction']:.1f}%   normalise alone {per_img[name]:.3f} ms/img")
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(8)
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
