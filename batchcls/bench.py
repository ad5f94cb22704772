"""CLI `batchcls bench MODEL.onnx`: images/s and batch latency of N model instances as Ray actors (a CLI at the pipeline's level, so it imports ray)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Sequence

import numpy as np

from .backends import BACKENDS, create_backend
from .constants import BATCH_SIZE
from .cluster import actor_options, check_capacity, connect, host_units, unwrap_error
from .errors import BatchclsError

EXIT_USER_ERROR = 2
# Dynamic height/width (and channels) get the size every ImageNet classifier here is evaluated at.
DYNAMIC_DIM = {0: 3, 1: 224, 2: 224}
# onnxruntime's first calls plan memory and pick kernels; they are not what a long run sees.
DEFAULT_WARMUP_BATCHES = 2
DEFAULT_SECONDS = 10.0


class BenchInstance:
    """One backend session on one device, fed the same synthetic float32 batch over and over."""

    def __init__(self, model: bytes | str, backend: str, options: dict, batch: int, seed: int):
        if backend == "vacc":  # the dies of this host: its units of the resource the instance asked for
            options = dict(options)
            options["die_count"] = host_units(options.pop("resources", {}))
        self.backend = create_backend(backend, model, **options)
        fixed = self.backend.batch_size
        if fixed is not None and fixed != batch:
            raise BatchclsError(f"--batch: the model has a fixed batch of {fixed}; run with -b {fixed}")
        shape = [DYNAMIC_DIM[i] if d is None else d for i, d in enumerate(self.backend.input_shape)]
        rng = np.random.default_rng(seed)
        if getattr(self.backend, "input_dtype", "float32") == "uint8":  # a backend that normalises itself
            self.batch = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
        else:
            self.batch = rng.standard_normal((batch, *shape), dtype=np.float32)

    def describe(self) -> dict:
        import socket

        return {**self.backend.describe(), "host": socket.gethostname(), "pid": os.getpid(),
                "batch_shape": list(self.batch.shape)}

    def run(self, batches: int | None, seconds: float | None, warmup: int) -> dict:
        """Warm up, then run `batches` batches, or as many as fit in `seconds` (at least one).
        Returns wall-clock start/end (s since the epoch) and each batch's latency in seconds."""
        for _ in range(warmup):
            self.backend.run(self.batch)
        latencies: list[float] = []
        start_wall, start = time.time(), time.perf_counter()
        while True:
            t = time.perf_counter()
            self.backend.run(self.batch)
            now = time.perf_counter()
            latencies.append(now - t)
            if batches is not None and len(latencies) >= batches:
                break
            if seconds is not None and now - start >= seconds:
                break
        return {"start": start_wall, "end": start_wall + (time.perf_counter() - start), "latencies_s": latencies}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, not argparse's usage block
        raise BatchclsError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="batchcls bench",
                description="Throughput (images/s) and per-batch latency of a model: N instances, each one "
                            "session on one device (a Ray actor), on synthetic input of the model's shape.")
    p.add_argument("model", help="ONNX file (input NCHW float32; dynamic dimensions run at 3x224x224), or for "
                                 "--backend vacc the compiled model's prefix (PREFIX.so/.json/.params)")
    p.add_argument("-i", "--instances", type=int, default=1, help="model instances (Ray actors), default 1")
    p.add_argument("-b", "--batch", type=int, default=BATCH_SIZE, help=f"images per call, default {BATCH_SIZE}")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--seconds", type=float, help=f"run each instance this long (default {DEFAULT_SECONDS:g})")
    what.add_argument("--count", type=int, help="images in all, rounded up to whole batches, spread over instances")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP_BATCHES,
                   help=f"untimed batches per instance first, default {DEFAULT_WARMUP_BATCHES}")
    p.add_argument("--resources", default="{CPU: 1}", help="Ray resources per instance (YAML), e.g. '{GPU: 1}'")
    p.add_argument("--providers", default="CPUExecutionProvider",
                   help="onnxruntime execution providers, comma-separated, in order")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads per instance; 0 = one per core")
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS, help="the runtime")
    p.add_argument("--ray-address", default=None, help="join this cluster ('auto', HOST:PORT); default: local")
    p.add_argument("--vdsp-params", help="vacc: the model's vdsp JSON or a shipped name (timm-dla34); the card "
                                         "normalises model-size uint8 input (vamp's -s role)")
    p.add_argument("--devices", help="vacc: die ids the instances may take, comma-separated (default: any die)")
    p.add_argument("--cluster-resources", default=None,
                   help="custom resources of the local cluster (YAML), e.g. '{vacc: 4}' on a host with 4 dies")
    p.add_argument("--json", dest="json_path", help="also write the result as JSON to this file")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parsed and checked arguments; BatchclsError names the option to fix."""
    args = build_parser().parse_args(list(argv))
    for name in ("instances", "batch", "count"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BatchclsError(f"--{name}: must be a positive integer, got {value}")
    if args.seconds is not None and not args.seconds > 0:
        raise BatchclsError(f"--seconds: must be positive, got {args.seconds:g}")
    if args.warmup < 0 or args.threads < 0:
        raise BatchclsError("--warmup and --threads: must be 0 or more")
    if args.count is None and args.seconds is None:
        args.seconds = DEFAULT_SECONDS
    if args.backend == "vacc":
        _vacc_args(args)
    elif not os.path.isfile(args.model):
        raise BatchclsError(f"model: {args.model!r} is not a file")
    args.resources = parse_resources(args.resources)
    args.cluster_resources = parse_resources(args.cluster_resources) if args.cluster_resources else None
    args.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if not args.providers:
        raise BatchclsError("--providers: give at least one, e.g. CPUExecutionProvider")
    return args


def _vacc_args(args: argparse.Namespace) -> None:
    """The compiled model's files, the vdsp JSON and the dies, checked; one vacc unit per instance by default."""
    from .config import vacc_files
    from .transforms.vdsp import resolve_vdsp_params

    missing = [f for f in vacc_files(args.model) if not os.path.isfile(f)]
    if missing:
        raise BatchclsError(f"model: {missing[0]!r} does not exist; give the compiled model's prefix (PREFIX.so, "
                            "PREFIX.json, PREFIX.params)")
    if args.vdsp_params is None:
        raise BatchclsError("--vdsp-params: the vacc backend needs the model's vdsp JSON, e.g. timm-dla34")
    try:
        args.vdsp_params = os.path.abspath(resolve_vdsp_params(args.vdsp_params))
    except ValueError as e:
        raise BatchclsError(f"--vdsp-params: {e}") from None
    try:
        args.devices = [int(d) for d in args.devices.split(",")] if args.devices else None
    except ValueError:
        raise BatchclsError(f"--devices: {args.devices!r} must be die ids, e.g. 0,1") from None
    if args.resources == "{CPU: 1}":
        args.resources = "{vacc: 1}"


def parse_resources(text: str) -> dict[str, float]:
    """`{CPU: 1}`-style YAML -> {name: amount >= 0}."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BatchclsError(f"--resources: {text!r} is not YAML ({' '.join(str(e).split())[:120]}); "
                            "write e.g. '{GPU: 1}'") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in value.items()):
        raise BatchclsError(f"--resources: {text!r} must map resource names to amounts >= 0, e.g. '{{GPU: 1}}'")
    return {k: float(v) for k, v in value.items()}


def split_batches(total: int, instances: int) -> list[int]:
    """`total` batches spread over instances as evenly as possible (the first ones get the extra)."""
    return [total // instances + (1 if i < total % instances else 0) for i in range(instances)]


def run_instances(ray, args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Start the instances, wait until every one holds its session, then run them all at once."""
    if args.backend == "vacc":  # the SDK loads the compiled model from its files on each host
        model_ref = args.model
        options = {"vdsp_params": args.vdsp_params, "on_device": False, "outputs": "logits",
                   "batch_size": args.batch, "devices": args.devices, "resources": args.resources}
    else:
        with open(args.model, "rb") as f:
            model_ref = ray.put(f.read())  # through the object store: hosts need no copy of the model
        options = {"providers": args.providers, "intra_op_threads": args.threads, "source": args.model}
    check_capacity(args.resources, args.instances, "--resources", "lower --instances or change --resources")
    cls = ray.remote(BenchInstance).options(**actor_options(args.resources))
    actors = [cls.remote(model_ref, args.backend, options, args.batch, i) for i in range(args.instances)]
    try:
        infos = ray.get([a.describe.remote() for a in actors])
        if args.count is not None:
            plan = split_batches(math.ceil(args.count / args.batch), args.instances)
            runs = [a.run.remote(b, None, args.warmup) for a, b in zip(actors, plan) if b > 0]
        else:
            runs = [a.run.remote(None, args.seconds, args.warmup) for a in actors]
        results = ray.get(runs)
    except Exception as e:  # noqa: BLE001 - a backend's own message, or Ray's error as it is
        raise unwrap_error(e) from None
    finally:
        for a in actors:
            ray.kill(a)
    return infos, results


def summarize(args: argparse.Namespace, infos: list[dict], results: list[dict]) -> dict:
    """Throughput over the wall time all instances ran together; latency percentiles over every batch."""
    lat_ms = np.array([x * 1e3 for r in results for x in r["latencies_s"]])
    batches = int(lat_ms.size)
    start, end = min(r["start"] for r in results), max(r["end"] for r in results)
    wall = max(end - start, 1e-9)
    per_instance = [{"batches": len(r["latencies_s"]), "images": len(r["latencies_s"]) * args.batch,
                     "seconds": r["end"] - r["start"],
                     "images_per_s": len(r["latencies_s"]) * args.batch / max(r["end"] - r["start"], 1e-9)}
                    for r in results]
    p50, p90, p99 = (float(np.percentile(lat_ms, q)) for q in (50, 90, 99))
    return {"model": args.model, "instances": args.instances, "batch": args.batch, "batches": batches,
            "images": batches * args.batch, "seconds": wall, "images_per_s": batches * args.batch / wall,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": float(lat_ms.mean()),
                           "min": float(lat_ms.min()), "max": float(lat_ms.max())},
            "resources": args.resources, "providers": args.providers, "threads": args.threads,
            "warmup_batches": args.warmup, "per_instance": per_instance, "workers": infos}


def format_summary(s: dict) -> str:
    w = s["workers"][0] if s["workers"] else {}
    lat = s["latency_ms"]
    lines = [f"model       {s['model']}  input {'x'.join(map(str, w.get('batch_shape', [])))}  "
             f"{w.get('backend', '')} {w.get('version', '')}  {','.join(w.get('providers', []))}  "
             f"threads {s['threads'] or 'auto'}",
             f"instances   {s['instances']} x {s['resources']}",
             f"throughput  {s['images_per_s']:.1f} images/s  ({s['images']} images = {s['batches']} batches "
             f"x {s['batch']} in {s['seconds']:.2f} s)",
             f"latency     per batch: p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f} ms  p99 {lat['p99']:.1f} ms  "
             f"(min {lat['min']:.1f}, max {lat['max']:.1f})"]
    for i, p in enumerate(s["per_instance"]):
        die = s["workers"][i].get("die") if i < len(s["workers"]) else None
        lines.append(f"  instance {i}: {p['batches']} batches, {p['images_per_s']:.1f} images/s"
                     + (f" (vacc die {die})" if die is not None else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`batchcls bench MODEL [-i N] [-b 48] [--seconds S | --count N] ...`: print the figures, then one
    JSON line; exit 2 with one line on stderr for an error the user can fix."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        import ray

        started = connect(args.ray_address, field="--ray-address", resources=args.cluster_resources)
        try:
            infos, results = run_instances(ray, args)
        finally:
            if started:
                ray.shutdown()
    except BatchclsError as e:
        print(f"batchcls bench: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    summary = summarize(args, infos, results)
    print(format_summary(summary))
    line = json.dumps(summary)
    print(line, flush=True)
    if args.json_path:
        tmp = f"{args.json_path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(line + "\n")
        os.replace(tmp, args.json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
