"""Deployed builds of a job's model: a class-balanced calibration set through the prep stage and its cache,
then models.quantize; built once per content and cached; CLI `batchcls quantize`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from typing import Iterator, Sequence

from .cache import check_writable, probe_writable, shard_cache_path
from .config import Job, load_job
from .data.discover import Sample, select
from .data.shards import make_shards
from .errors import BatchclsError, JobError
from .models import quantize as q
from .plan import Plan, make_plan
from .stages.prep import prep_shard, transform_spec
from .transforms.normalize import normalization_table
from .workload import generate_dataset, resolve_fp32_model

# Images per prep_shard call (one cached npz each): a few batches, so memory holds one shard at a time.
CALIB_SHARD_IMAGES = 64


def settings_of(job: Job) -> q.CalibrationSettings:
    c = job.model.calibration
    return q.CalibrationSettings(c.method, c.images, c.per_channel, c.percentile, c.balance)


def calibration_samples(plan: Plan, settings: q.CalibrationSettings) -> tuple[Sample, ...]:
    """`settings.images` samples of the job's dataset folder (all of it, whatever `dataset.limit`), one per
    class before any class gets a second (`data.discover.select`), the same every time; index order.
    With `balance`, only labelled samples are drawn, and an unlabelled folder is a JobError."""
    samples = plan.dataset.samples
    if settings.balance:
        samples = tuple(s for s in samples if s.label is not None)
        if not samples:
            raise JobError("model.calibration.balance", f"the images of {plan.job.dataset.root!r} have no labels, so "
                           "no class-balanced calibration set can be drawn; give dataset.labels, or set "
                           "model.calibration.balance: false to calibrate on evenly spaced images", path=plan.job.path)
    return select(samples, settings.images)


def calibration_id(plan: Plan, samples: tuple[Sample, ...]) -> str:
    """Digest of the calibration pixels' origin: preprocessing, normalisation, and every file (path, index,
    size, modification time) through the shard cache keys."""
    shards = make_shards(plan.job.dataset.root, samples, CALIB_SHARD_IMAGES, plan.prep_key)
    blob = json.dumps({"prep": plan.prep_key, "mean": plan.mean, "std": plan.std, "rule": plan.scale_rule,
                       "shards": [s.key for s in shards]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepared_images(plan: Plan, samples: tuple[Sample, ...], used: list[str], failed: list[str]) -> Iterator:
    """uint8 [n,3,H,W] crops of `samples` from the prep stage (`prep_shard`, cached like a run's shards);
    the path of each image yielded is appended to `used`, each failure (path: reason) to `failed`."""
    job = plan.job
    spec = transform_spec(plan.transform_params)
    cache_dir = os.path.join(job.runtime.cache_dir, "shards")
    for shard in make_shards(job.dataset.root, samples, CALIB_SHARD_IMAGES, plan.prep_key):
        cache_path = shard_cache_path(cache_dir, plan.prep_key, shard.key)
        prepared = prep_shard(job.dataset.root, [(s.index, s.path) for s in shard.samples], spec, cache_path)
        for s, err in zip(shard.samples, prepared["errors"]):
            if err:
                failed.append(f"{s.path}: {err}")
            else:
                used.append(s.path)
        yield prepared["images"]


def build(plan: Plan, precision: str, settings: q.CalibrationSettings, out_path: str,
          progress: bool = True, log=print) -> dict:
    """Build `plan.model_path` at `precision` into `out_path` (+ `OUT.calib.txt` for int8). Returns a summary."""
    if precision not in ("fp16", "int8"):
        raise BatchclsError(f"--precision: {precision!r} is not a build; allowed: fp16, int8")
    source_sha = q.file_sha256(plan.model_path)
    meta = {"precision": precision, "source_sha256": source_sha, "source": os.path.basename(plan.model_path)}
    t0 = time.perf_counter()
    if precision == "fp16":
        summary = q.convert_fp16(plan.model_path, out_path, meta)
        return {**summary, "precision": precision, "path": out_path, "peak_rss_mb": _peak_rss_mb()}
    samples = calibration_samples(plan, settings)
    calib_id = calibration_id(plan, samples)
    used: list[str] = []
    failed: list[str] = []
    table = normalization_table(plan.mean, plan.std, plan.scale_rule)
    log(f"calibrating on {len(samples)} images of {plan.job.dataset.root} ({_classes(samples)} classes), method "
        f"{settings.method} (vamc calibrate_mode {q.VAMC_CALIBRATE_MODE[settings.method]}), "
        f"{'per-channel' if settings.per_channel else 'per-tensor'} weights")
    calibration = {**settings.as_dict(), "vamc_calibrate_mode": q.VAMC_CALIBRATE_MODE[settings.method],
                   "root": os.path.abspath(plan.job.dataset.root), "preprocess": plan.prep_key}

    def metadata() -> dict:  # the images used are known once they are prepared
        done = {**calibration, "images_used": len(used), "images_sha256": q.names_digest(used),
                "calibration_id": calib_id}
        return {**meta, "calibration": json.dumps(done, sort_keys=True), "calibration_images": "\n".join(used)}

    summary = q.quantize_int8(plan.model_path, out_path, prepared_images(plan, samples, used, failed), table,
                              settings, metadata, total=len(samples), progress=progress)
    listed = q.write_calib_list(out_path, used, {"model": os.path.basename(out_path), "precision": "int8",
                                                 "calibration": json.dumps(calibration, sort_keys=True),
                                                 "images": len(used), "failed": len(failed)})
    for line in failed[:5]:
        log(f"calibration image skipped: {line}")
    used_set = set(used)
    return {**summary, "precision": precision, "path": out_path, "calib_list": listed, "drawn": len(samples),
            "failed": len(failed), "classes": _classes([s for s in samples if s.path in used_set]),
            "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(), "calibration": calibration}


def _classes(samples) -> int:
    return len({s.label for s in samples if s.label is not None})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cached_path(plan: Plan, precision: str, settings: q.CalibrationSettings) -> str:
    """Where the build of this plan's model at `precision` lives under `runtime.cache_dir/deployed`: keyed by
    model content, precision and (int8) calibration settings and images (`models.quantize.build_key`)."""
    calib = calibration_id(plan, calibration_samples(plan, settings)) if precision == "int8" else ""
    key = q.build_key(q.file_sha256(plan.model_path), precision, settings, calib)
    stem = os.path.basename(plan.model_path)
    stem = stem[:-5] if stem.endswith(".onnx") else stem
    return os.path.join(plan.job.runtime.cache_dir, "deployed", f"{stem}-{precision}-{key[:16]}.onnx")


def deployed_model(job: Job, fp32_path: str, log=print) -> str:
    """The model of `job` at `model.precision`: `fp32_path` itself for fp32, else the cached build,
    made on first use (concurrent first uses may both build; the atomic rename keeps one complete file)."""
    precision = job.model.precision
    if precision == "fp32":
        return fp32_path
    plan = make_plan(job, fp32_path)
    settings = settings_of(job)
    path = cached_path(plan, precision, settings)
    if os.path.isfile(path):
        return path
    check_writable(os.path.dirname(path), "runtime.cache_dir")
    log(f"building the {precision} model of {fp32_path} (cached as {path})")
    summary = build(plan, precision, settings, path, progress=job.runtime.progress, log=log)
    log(f"built in {summary['build_s']:.1f} s" + (f" on {summary['images']} calibration images" if summary["images"] else ""))
    return path


def describe_model(model_path: str, evaluated: Sequence[Sample]) -> dict:
    """What the report says about the model run: precision and calibration (from its metadata), and how many
    of the `evaluated` samples were calibration images (matched by path relative to the dataset root)."""
    meta = q.read_metadata(model_path)
    out = {"precision": meta.get("precision", "fp32"), "path": model_path}
    if "calibration" in meta:
        out["calibration"] = json.loads(meta["calibration"])
        names = set(filter(None, meta.get("calibration_images", "").split("\n")))
        out["evaluated_calibration_images"] = sum(1 for s in evaluated if s.path in names)
    return out


def check_output(out: str) -> None:
    """BatchclsError (one line) when `out` cannot be written, before any work is done."""
    try:
        probe_writable(os.path.dirname(os.path.abspath(out)))
    except OSError as e:
        raise BatchclsError(f"--output: cannot write {out!r} ({e.strerror or e}); choose a writable path") from None
    if os.path.isdir(out):
        raise BatchclsError(f"--output: {out!r} is a folder; give a file name such as {os.path.join(out, 'model.int8.onnx')}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise BatchclsError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="batchcls quantize", description="Build a job's model as int8 (QDQ, calibrated on the job's "
                "dataset with its own preprocessing) or fp16, for onnxruntime and TensorRT.")
    p.add_argument("job", help="job YAML (its model, dataset, preprocess and runtime.cache_dir apply)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write; OUT.calib.txt lists the images")
    p.add_argument("--precision", choices=("int8", "fp16"), help="default: the job's model.precision, else int8")
    p.add_argument("--method", choices=q.METHODS, help="calibration: entropy (KL, vamc kl_divergence; default), "
                   "percentile (vamc percentile), minmax (vamc max)")
    p.add_argument("--percentile", type=float, help="percentile method's cut, default 99.999")
    p.add_argument("--images", type=int, help="calibration images, default 1000 (model.calibration.images)")
    p.add_argument("--per-channel", dest="per_channel", action="store_true", default=None, help="per-channel weights (default)")
    p.add_argument("--per-tensor", dest="per_channel", action="store_false", help="one scale per weight tensor")
    p.add_argument("--no-balance", dest="balance", action="store_false", default=None,
                   help="allow an unlabelled dataset (evenly spaced images instead of one per class)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a job field, e.g. --set dataset.root=/data/val")
    return p


def _job_with_flags(args) -> Job:
    overrides = list(args.overrides)
    for flag, field in (("method", "method"), ("percentile", "percentile"), ("images", "images"),
                        ("per_channel", "per_channel"), ("balance", "balance")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"model.calibration.{field}={json.dumps(value)}")
    return load_job(args.job, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """`batchcls quantize JOB -o OUT.onnx [...]`: build, print a summary; exit 2 with one line on a user error."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        job = _job_with_flags(args)
        out = args.output
        check_output(out)
        generate_dataset(job, print)
        plan = make_plan(job, resolve_fp32_model(job))
        precision = args.precision or (job.model.precision if job.model.precision != "fp32" else "int8")
        summary = build(plan, precision, settings_of(job), out, progress=job.runtime.progress)
    except BatchclsError as e:
        print(f"batchcls quantize: error: {e}", file=sys.stderr)
        return 2
    for key in ("precision", "path", "calib_list", "images", "failed", "classes", "calibrate_s", "thresholds_s",
                "build_s", "peak_rss_mb"):
        if key in summary:
            value = summary[key]
            print(f"{key:14s} {value:.1f}" if isinstance(value, float) else f"{key:14s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
