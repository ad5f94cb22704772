"""Plan: the job resolved into samples, shards, a transform and a model file, before any Ray work."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from .config import Job, vacc_files
from .constants import FULLRES_SHARD_IMAGES
from .data.discover import Dataset, discover, select
from .data.labels import NOT_GROUND_TRUTH, check_label_range, load_class_subset, resolve_real_labels
from .data.shards import Shard, effective_shard_size, make_shards, preprocess_key
from .errors import BatchclsError, JobError
from .transforms import create_transform
from .zoo import SOURCE_PROFILE, ZooRow, find_zoo_row


@dataclass
class Plan:
    job: Job
    dataset: Dataset
    samples: tuple  # the selected samples, index order
    shards: list[Shard]
    transform_params: dict  # create_transform keyword arguments
    resolved_preprocess: dict  # every pixel-changing parameter, as the transform resolved it
    mean: tuple
    std: tuple
    scale_rule: str
    crop_shape: tuple
    prep_key: str
    model_path: str
    zoo_row: ZooRow | None
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)
    class_subset: tuple | None = None  # sorted class indices the outputs are restricted to
    real_labels: tuple | None = None  # ReaL sets by val image number - 1
    label_info: dict = field(default_factory=dict)  # label source, ReaL source, checks: for the report
    # vacc backend: {"vdsp_params": path of the card's JSON, "on_device": bool}; None for other backends.
    vacc: dict | None = None


def resolve_preprocess(job: Job, row: ZooRow | None) -> dict:
    """create_transform arguments, by one precedence: job field > zoo row > profile default."""
    pre = job.preprocess
    if on_device(job):  # the card resizes, crops and normalises: the host decodes only
        return {"profile": "fullres"}
    # A vdsp_params file alone selects the vendor's pipeline: the one-line override of any job.
    profile = pre.profile or ("vdsp" if pre.vdsp_params else None) or \
        (row.profile if row else SOURCE_PROFILE.get(job.model.source, "timm"))
    params: dict = {"profile": profile}
    if profile == "vdsp":
        # The vendor JSON fixes every number; job fields given explicitly are passed on for the transform to judge.
        params["vdsp_params"] = pre.vdsp_params
        input_size = pre.input_size
    else:
        input_size = pre.input_size or (row.input_size if row else None)
    for name, value in (("input_size", input_size), ("resize_size", pre.resize_size), ("crop_pct", pre.crop_pct),
                        ("interpolation", pre.interpolation), ("mean", pre.mean), ("std", pre.std)):
        if value is not None:
            params[name] = list(value) if isinstance(value, (list, tuple)) else value
    return params


def make_plan(job: Job, model_path: str) -> Plan:
    """Discover and select the samples, resolve preprocessing, cut shards; JobError for what the job got wrong."""
    row = find_zoo_row(job.model.name, job.model.source)
    vacc = resolve_vacc(job)
    params = resolve_preprocess(job, row)
    if vacc is not None and vacc["on_device"]:
        params.update(vacc["mean_std"])
    try:
        transform = create_transform(**params)
    except ValueError as e:
        raise JobError("preprocess", str(e), path=job.path) from None
    try:
        subset = load_class_subset(job.dataset.class_subset) if job.dataset.class_subset else None
        ds = discover(job.dataset.root, job.dataset.labels, job.dataset.layout, subset)
    except JobError as e:
        raise (e if e.path else e.with_path(job.path)) from None
    if not ds.samples:
        raise JobError("dataset.root", f"{job.dataset.root!r} holds no images (.JPEG, .jpg, .png, ...) directly "
                       "or in class folders; see README 'Data and models'", path=job.path)
    samples = select(ds.samples, job.dataset.limit)
    resolved = transform.resolved()
    pkey = preprocess_key(resolved)
    size = effective_shard_size(shard_images(job), job.inference.batch_size)
    shards = make_shards(job.dataset.root, samples, size, pkey, first=job.inference.batch_size)
    plan = Plan(job, ds, samples, shards, params, resolved, tuple(transform.mean), tuple(transform.std),
                transform.scale_rule, tuple(transform.out_shape), pkey, model_path, row)
    if vacc is not None:
        plan.vacc = {"vdsp_params": vacc["vdsp_params"], "on_device": vacc["on_device"]}
        plan.notes.append(f"vacc: the card's vdsp op from {vacc['vdsp_params']} "
                          + ("resizes, crops and normalises full-resolution images (preprocess.on_device)"
                             if vacc["on_device"] else f"normalises the host's {profile_name(params)} crops only"))
    if size != shard_images(job):
        plan.notes.append(f"shard size {shard_images(job)} rounded up to {size} (whole batches of "
                          f"{job.inference.batch_size})")
    plan.class_subset = subset
    try:
        plan.real_labels, real_source = resolve_real_labels(job.dataset.real_labels, [s.path for s in samples])
        outputs = model_outputs(model_path) if ds.labelled else None
        if outputs:
            check_label_range(samples, outputs, ds.class_source, ds.label_lines)
    except JobError as e:
        raise e.with_path(job.path) from None
    plan.label_info = label_info(ds, samples, subset, real_source)
    if job.dataset.generate is not None:  # generated images carry val names but not val's classes
        plan.label_info["notes"] = [n for n in plan.label_info["notes"] if not n.startswith(NOT_GROUND_TRUTH)]
    plan.fingerprint = run_fingerprint(plan)
    return plan


def label_info(ds: Dataset, samples: tuple, subset: tuple | None, real_source: str) -> dict:
    """Where the labels came from and what the report must warn about, over the selected samples."""
    disagree = [s.path for s in samples if s.path in ds.disagree]
    notes = list(ds.notes)
    if disagree:
        notes.append(f"WARNING: {len(disagree)} images lie in a class folder other than their built-in "
                     f"ILSVRC2012 ground truth (first: {disagree[0]}): the class folders were built wrongly")
    return {"source": ds.class_source, "real_source": real_source, "disagree_builtin": len(disagree),
            "class_subset": None if subset is None else len(subset), "notes": notes}


def model_outputs(path: str) -> int | None:
    """The number of classes an ONNX model outputs (its first output per image, flattened as the backend
    does), None when not fixed."""
    import onnx

    try:
        graph = onnx.load(path, load_external_data=False).graph
    except Exception:  # noqa: BLE001 - an unreadable model is reported, with its reason, by the workers
        return None
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim[1:]] if graph.output else []
    return int(np.prod(dims)) if dims and all(d > 0 for d in dims) else None


def on_device(job: Job) -> bool:
    """A vacc run whose card does the geometry (preprocess.on_device, true by default for vacc)."""
    return job.inference.backend == "vacc" and job.preprocess.on_device is not False


def profile_name(params: dict) -> str:
    return params.get("profile", "?")


def shard_images(job: Job) -> int:
    """runtime.shard_size, or a smaller default for full-resolution shards (they are ~4x larger a image)."""
    if on_device(job) and "shard_size" not in job.runtime.model_fields_set:
        return FULLRES_SHARD_IMAGES
    return job.runtime.shard_size


def resolve_vacc(job: Job) -> dict | None:
    """The vacc card's vdsp JSON (preprocess.vdsp_params, or the shipped `<source>-<name>` one) and mode."""
    if job.inference.backend != "vacc":
        return None
    from .transforms.vdsp import load_vdsp_params, resolve_vdsp_params

    pre = job.preprocess
    if on_device(job) and pre.profile is not None:
        raise JobError("preprocess.profile", f"{pre.profile!r} is host preprocessing, but with preprocess.on_device "
                       "true the card does it; remove the profile, or set preprocess.on_device: false", path=job.path)
    name = pre.vdsp_params or f"{job.model.source}-{job.model.name}"
    try:
        path = resolve_vdsp_params(name)
        config = load_vdsp_params(path)["OpConfig"]
    except ValueError as e:
        what = "" if pre.vdsp_params else f" (none given; no shipped JSON is named {name!r})"
        raise JobError("preprocess.vdsp_params", f"the vacc card needs its vdsp JSON{what}: {e}", path=job.path) from None
    return {"vdsp_params": os.path.abspath(path), "on_device": on_device(job),
            "mean_std": {"mean": list(config["Mean"]), "std": list(config["Std"])}}


def model_digest(plan: "Plan") -> str:
    """The model's content: the ONNX file, or the three files of a vacc compiled model."""
    if plan.job.inference.backend != "vacc":
        return file_digest(plan.model_path)
    return hashlib.sha256("".join(file_digest(f) for f in vacc_files(plan.model_path)).encode()).hexdigest()


def file_digest(path: str) -> str:
    """sha256 of a file's content (model files: a few to a few hundred MB, read once per run)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise BatchclsError(f"model.onnx: cannot read {path!r}: {e.strerror}") from None
    return h.hexdigest()


def run_fingerprint(plan: Plan) -> str:
    """What must match for finished Parquet parts to be reused: model content, pixels, shards, outputs."""
    job = plan.job
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_digest(plan), "prep": plan.prep_key, "vacc": plan.vacc,
                         "outputs": job.model.outputs,
                         "mean": plan.mean, "std": plan.std, "rule": plan.scale_rule, "topk": job.output.topk,
                         "logits": job.output.save_logits, "root": os.path.abspath(job.dataset.root),
                         "labels": [s.label for s in plan.samples],
                         "shard_keys": [s.key for s in plan.shards],
                         **({"class_subset": list(plan.class_subset)} if plan.class_subset else {})},
                        sort_keys=True).encode())
    return h.hexdigest()[:24]
