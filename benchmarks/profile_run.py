"""`python benchmarks/profile_run.py [--images 1000] [--model dla46_c] [--set F=V ...]`: where one batchcls run's time and CPU go, per phase and per process."""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_share, cpu_times, ensure_images, ensure_model, run_part, work  # noqa: E402
from e2e import run_batchcls, write_job  # noqa: E402
from memwatch import MemWatch  # noqa: E402


def phases(r: dict) -> list[tuple[str, float]]:
    """The run's wall time cut at the first and last inference call (from metrics.json)."""
    t = r["timing"]
    tail = t["end_to_end_s"] - t["startup_s"] - t["infer_s"]
    return [("command start -> first inference call (startup)", t["startup_s"]),
            ("inference window (first call start -> last call end)", t["infer_s"]),
            ("  of which the model itself (session.run)", t["model_run_s"]),
            ("  of which host work in calls (normalise, top-k)", t["worker_busy_s"] - t["model_run_s"]),
            ("  of which the worker waiting between calls", t["infer_s"] - t["worker_busy_s"]),
            ("last call end -> metrics written (Ray shutdown, report)", tail),
            ("process wall (interpreter start and exit included)", r["command_s"])]


def profile(job: str, sets: list[str], cold: bool) -> None:
    watch = MemWatch()
    c0 = cpu_times()
    r = run_batchcls(job, sets, cold=cold, monitor=watch)
    share = cpu_share(c0, cpu_times())
    print(f"\n{'cold' if cold else 'warm'} cache, {' '.join(sets)}: {r['timing']['end_to_end_images_per_s']:.1f} img/s "
          f"end to end; machine: {100 * share['busy']:.0f}% busy, {100 * share['steal']:.0f}% stolen")
    for name, s in phases(r):
        print(f"  {name:58s} {s:6.2f} s")
    print("  CPU seconds per process role (sampled every 0.2 s):")
    roles = watch.by_role()
    for role, x in sorted(roles.items(), key=lambda kv: -kv[1]["cpu_s"]):
        print(f"    {role[:48]:48s} {x['processes']:2d} proc {x['cpu_s']:6.2f} s")
    total = sum(x["cpu_s"] for x in roles.values())
    print(f"    {'all':48s}         {total:6.2f} s  (wall {r['command_s']:.1f} s x 2 cores = "
          f"{2 * r['command_s']:.1f} core-s)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--model", default="dla46_c")
    p.add_argument("--set", dest="sets", action="append", default=[])
    args = p.parse_args(argv)
    root = work("images", f"n{args.images}")
    labels = ensure_images(root, args.images)
    onnx = ensure_model(args.model)
    job = write_job("profile", onnx, root, labels)
    m = run_part("model_bound", onnx=onnx, images=args.images)
    print(f"M (model alone, same images count): {m['images_per_s']:.1f} img/s = "
          f"{args.images / m['images_per_s']:.2f} s of session.run for {args.images} images")
    sets = [f"dataset.limit={args.images}"] + args.sets
    profile(job, sets, cold=True)
    profile(job, sets, cold=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
