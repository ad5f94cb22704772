"""`python benchmarks/scale.py [--images 50000]`: one machine, 50,000 small JPEGs: exactly one row each, and flat peak memory (driver, each Ray worker) from 5,000 to 50,000."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ensure_images, ensure_model, machine, work, write_results  # noqa: E402
from e2e import run_batchcls, write_job  # noqa: E402
from memwatch import MemWatch  # noqa: E402

# "Flat": the peak at the large run within this fraction of the peak at the small one.
FLAT = 0.20
# The processes the target is about; Ray's own daemons are reported for information.
WATCHED = ("driver", "ray::_RemoteWorker", "ray::_prep_task")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--small-run", type=int, default=5_000, help="the first size compared (default 5000)")
    p.add_argument("--model", default="tiny", help="'tiny' (default) or a DLA architecture")
    p.add_argument("--set", dest="sets", action="append", default=[], help="job settings for both runs")
    p.add_argument("--keep-cache", action="store_true", help="keep the shard cache (~150 KB per image)")
    return p.parse_args(argv)


def count_rows(out_dir: str) -> dict:
    """Rows of the Parquet dump, and how many distinct image indices they hold."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(os.path.join(out_dir, "predictions"), columns=["index", "error"])
    return {"rows": table.num_rows, "distinct_indices": len(pc.unique(table["index"])),
            "errors": table.num_rows - table["error"].null_count}


def one_run(job: str, n: int, sets: list[str]) -> dict:
    watch = MemWatch()
    t = time.time()
    result = run_batchcls(job, [f"dataset.limit={n}"] + sets, cold=True, monitor=watch)
    out = work("runs", "scale")
    return {"images": n, "wall_s": time.time() - t, "timing": result["timing"], "shards": result["shards"],
            "parquet": count_rows(out), "processes": watch.peaks(), "by_role": watch.by_role(),
            "samples": watch.samples}


def compare(small: dict, large: dict) -> dict:
    """Per watched role: peaks at both sizes and their ratios. Flat is judged on `private` (resident
    memory less the shared object store: that store is one fixed-size pool for the whole host, and its
    pages count in the RSS of whichever process touched them); raw RSS is reported beside it."""
    out = {}
    for role in WATCHED:
        a, b = small["by_role"].get(role), large["by_role"].get(role)
        if not a or not b:
            continue
        out[role] = {k: [a[k], b[k]] for k in ("rss", "private", "anon", "shmem")}
        out[role].update({f"{k}_ratio": b[k] / a[k] if a[k] else None for k in ("rss", "private", "anon")})
        out[role]["flat"] = b["private"] <= a["private"] * (1 + FLAT)
    return out


def _mb(x: int) -> str:
    return f"{x / 2**20:.0f} MB"


def format_report(rep: dict) -> str:
    lines = [f"scale: {rep['large']['images']} images ({rep['model']}), machine {rep['machine']['cpu']} x "
             f"{rep['machine']['cores']}"]
    for key in ("small", "large"):
        r = rep[key]
        p, t = r["parquet"], r["timing"]
        lines.append(f"  {r['images']:6d} images: {p['rows']} rows, {p['distinct_indices']} distinct, "
                     f"{p['errors']} errors; {t['end_to_end_s']:.0f} s, {t['end_to_end_images_per_s']:.0f} img/s; "
                     f"{r['shards']['total']} shards; {r['samples']} memory samples")
    sizes = f"peak {rep['small']['images']} -> {rep['large']['images']}"
    lines.append(f"  {sizes:22s} {'RSS':>20s} {'private (RSS - shm)':>24s} {'heap (RssAnon)':>22s}  "
                 f"flat (private <= +20%)")
    for role, c in rep["compare"].items():
        cells = [f"{_mb(c[k][0])} -> {_mb(c[k][1])} {c[k + '_ratio']:.2f}" for k in ("rss", "private", "anon")]
        lines.append(f"  {role:22s} {cells[0]:>20s} {cells[1]:>24s} {cells[2]:>22s}  {'yes' if c['flat'] else 'NO'}")
    lines.append("  every process at the large run (peak RSS / private / heap / shared object store):")
    for p in rep["large"]["processes"]:
        lines.append(f"    {p['pid']:7d} {p['role'][:34]:34s} {_mb(p['rss']):>7s} / {_mb(p['private']):>7s} / "
                     f"{_mb(p['anon']):>7s} / {_mb(p['shmem']):>7s}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = work("images", f"small{args.images}")
    labels = ensure_images(root, args.images, small=True)
    job = write_job("scale", ensure_model(args.model), root, labels)
    small = one_run(job, args.small_run, args.sets)
    large = one_run(job, args.images, args.sets)
    if not args.keep_cache:
        shutil.rmtree(work("cache", "scale"), ignore_errors=True)
    rep = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "model": args.model,
           "sets": args.sets, "small": small, "large": large, "compare": compare(small, large)}
    rep["exact_rows"] = large["parquet"]["rows"] == args.images == large["parquet"]["distinct_indices"]
    rep["flat"] = all(c["flat"] for c in rep["compare"].values())
    print(format_report(rep))
    print(f"exactly {args.images} rows: {rep['exact_rows']}; memory flat: {rep['flat']}")
    write_results("scale", rep)
    return 0 if rep["exact_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
