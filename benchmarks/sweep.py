"""`python benchmarks/sweep.py [--images 1000] [--model dla46_c]`: batchcls cold and warm under job settings (--set), against M, to pick defaults."""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ensure_images, ensure_model, machine, run_part, work, write_results  # noqa: E402
from e2e import run_batchcls, write_job  # noqa: E402
from report import _f, harmonic, projected  # noqa: E402

# Each entry: the --set overrides of one configuration (the empty one is the engine's defaults).
GRID = {
    "defaults": [],
    "shard 240": ["runtime.shard_size=240"],
    "worker CPU 0": ["inference.resources={CPU: 0}"],
    "1 thread": ["inference.intra_op_threads=1"],
    "num_cpus 3": ["runtime.num_cpus=3"],
    "2 workers x CPU 0.5, 1 thread": ["inference.workers=2", "inference.resources={CPU: 0.5}",
                                      "inference.intra_op_threads=1"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--model", default="dla46_c")
    p.add_argument("--only", action="append", help="run only these grid entries (by name)")
    p.add_argument("--warm-only", action="store_true", help="skip the cold runs")
    p.add_argument("--repeat", type=int, default=2, help="passes; each row keeps its best (default 2)")
    return p.parse_args(argv)


def _e2e(r: dict) -> float:
    return r["timing"]["end_to_end_images_per_s"]


def run_grid(args, job: str, onnx: str) -> tuple[dict, list[float]]:
    """Every configuration cold then warm, `repeat` passes (interleaved, so drift hits all alike), the
    model ceiling between passes; each (configuration, cache) keeps its best pass."""
    m_runs, rows = [], {}
    for k in range(args.repeat):
        m_runs.append(run_part("model_bound", onnx=onnx, images=args.images)["images_per_s"])
        for name, sets in GRID.items():
            if args.only and name not in args.only:
                continue
            sets = [f"dataset.limit={args.images}"] + sets
            for kind in ("warm",) if args.warm_only else ("cold", "warm"):
                r = run_batchcls(job, sets, cold=(kind == "cold"))
                runs = rows.setdefault(name, {}).setdefault(kind, [])
                runs.append(r)
                print(f"  pass {k + 1} {name:28s} {kind} {_e2e(r):6.1f} img/s", file=sys.stderr)
    m_runs.append(run_part("model_bound", onnx=onnx, images=args.images)["images_per_s"])
    best = {name: {kind: dict(max(rs, key=_e2e), all_runs=[_e2e(r) for r in rs]) for kind, rs in kinds.items()}
            for name, kinds in rows.items()}
    return best, m_runs


def print_table(rows: dict, m: float, p: float) -> None:
    print(f"{'settings':28s} {'run':5s} {'e2e':>6s} {'xM':>5s} {'xPM':>5s} {'start':>6s} {'steady':>7s} "
          f"{'xM':>5s} {'@50k xM':>8s} {'gaps%':>6s}  passes")
    for name, runs in rows.items():
        for kind, r in runs.items():
            t = r["timing"]
            e2e = _e2e(r)
            gaps = (t["host_gap_fraction"] or 0) + t["worker_idle_between_shards_s"] / max(t["model_run_s"], 1e-9)
            print(f"{name:28s} {kind:5s} {e2e:6.1f} {e2e / m:5.2f} {e2e / harmonic(p, m):5.2f} {t['startup_s']:6.1f} "
                  f"{t['infer_images_per_s']:7.1f} {t['infer_images_per_s'] / m:5.2f} "
                  f"{_f(None if projected(r) is None else projected(r) / m):>8s} "
                  f"{100 * gaps:6.1f}  {', '.join(f'{x:.1f}' for x in r['all_runs'])}")


def main(argv=None) -> int:
    args = parse_args(argv)
    root = work("images", f"n{args.images}")
    labels = ensure_images(root, args.images)
    onnx = ensure_model(args.model)
    job = write_job("sweep", onnx, root, labels)
    p = run_part("prep_bound", root=root, images=args.images, shard_size=96, cache_dir=work("cache", "P"))["images_per_s"]
    rows, m_runs = run_grid(args, job, onnx)
    m = max(m_runs)
    print(f"M {m:.1f} img/s (best of {', '.join(f'{x:.1f}' for x in m_runs)}), P {p:.1f}, "
          f"1/(1/P+1/M) {harmonic(p, m):.1f}; {args.model}, {args.images} images, best of {args.repeat} passes")
    print_table(rows, m, p)
    write_results(f"sweep-{args.model}", {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                                          "M": m, "M_runs": m_runs, "P": p, "images": args.images, "rows": rows,
                                          "grid": GRID, "repeat": args.repeat})
    return 0


if __name__ == "__main__":
    sys.exit(main())
