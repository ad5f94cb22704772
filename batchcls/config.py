"""YAML job file -> validated, frozen Job; the only job reader, and all job validation."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import constants
from .errors import JobError

PROFILES = ("timm", "vdsp", "ppcls")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CalibrationCfg(_Section):
    method: Literal["entropy", "percentile", "minmax"] = "entropy"
    images: int = Field(default=1000, gt=0, le=100_000)
    per_channel: bool = True
    percentile: float = Field(default=99.999, gt=0, le=100)
    balance: bool = True


class ModelCfg(_Section):
    name: str = Field(min_length=1)
    source: str = "custom"
    onnx: Optional[str] = None
    weights: Optional[str] = None
    # A VastAI compiled model: the prefix of its three files PREFIX.so, PREFIX.json, PREFIX.params.
    vacc: Optional[str] = None
    # What the model returns: logits, or probabilities (compiled with the vendor's extra_ops softmax);
    # auto decides from the first batch (rows >= 0 summing to 1) and says which it assumed.
    outputs: Literal["auto", "logits", "probs"] = "auto"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    calibration: CalibrationCfg = CalibrationCfg()


class GenerateCfg(_Section):
    count: int = Field(default=256, gt=0)
    classes: int = Field(default=8, gt=0, le=constants.NUM_CLASSES)
    seed: int = 0


class DatasetCfg(_Section):
    root: str = Field(min_length=1)
    labels: Optional[str] = None
    layout: Literal["auto", "flat", "folders"] = "auto"
    limit: Optional[int] = Field(default=None, gt=0)
    generate: Optional[GenerateCfg] = None
    real_labels: Optional[str] = None
    class_subset: Optional[str] = None

    @field_validator("labels", "real_labels")
    @classmethod
    def _none_turns_off(cls, v):
        return "none" if isinstance(v, str) and v.strip().lower() == "none" else v


class PreprocessCfg(_Section):
    profile: Optional[Literal["timm", "vdsp", "ppcls"]] = None
    vdsp_params: Optional[str] = None
    input_size: Optional[int] = Field(default=None, gt=0, le=4096)
    resize_size: Optional[int] = Field(default=None, gt=0, le=8192)
    crop_pct: Optional[float] = Field(default=None, gt=0, le=1)
    interpolation: Optional[Literal["bilinear", "bicubic"]] = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    # vacc backend: the card's vdsp op resizes, crops and normalises full-resolution images (true, its
    # default), or the profile crops on the host and the card only normalises (false).
    on_device: Optional[bool] = None

    @field_validator("mean", "std")
    @classmethod
    def _three_channels(cls, v, info):
        if v is not None and len(v) != 3:
            raise ValueError(f"must be three numbers (R, G, B), got {v}")
        if v is not None and info.field_name == "std" and min(v) <= 0:
            raise ValueError(f"must be three positive numbers, got {v}")
        return v


class InferenceCfg(_Section):
    backend: Literal["onnxruntime", "vacc"] = "onnxruntime"
    batch_size: int = Field(default=constants.BATCH_SIZE, gt=0, le=4096)
    workers: Union[int, str] = Field(default=1, union_mode="left_to_right")
    resources: dict[str, float] = Field(default_factory=lambda: {"CPU": 1})
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = Field(default=0, ge=0)
    # vacc: the die ids workers may take on each host (default: any die of the host, first free).
    devices: Optional[list[int]] = None
    # host: the worker normalises uint8 crops to float32; graph: the model is wrapped to take uint8
    # and normalise with the same table (bit-identical). None: graph on CUDA/TensorRT, else CPU_NORMALIZE.
    normalize: Optional[Literal["host", "graph"]] = None
    provider_options: dict[str, dict[str, Union[bool, int, float, str]]] = Field(default_factory=dict)
    tf32: bool = False
    cuda_graph: bool = False
    tensorrt_precision: Literal["fp32", "fp16", "int8"] = "fp32"

    @field_validator("devices")
    @classmethod
    def _devices_valid(cls, v):
        if v is not None and (not v or min(v) < 0 or len(set(v)) != len(v)):
            raise ValueError(f"must be a non-empty list of distinct die ids >= 0, e.g. [0, 1], got {v!r}")
        return v

    @field_validator("provider_options")
    @classmethod
    def _options_of_known_providers(cls, v, info):
        providers = info.data.get("providers") or []
        for name in v:
            if name not in providers:
                raise ValueError(f"{name}: not in inference.providers ({', '.join(providers)}); options apply to "
                                 "a provider the job uses, e.g. {CUDAExecutionProvider: {use_tf32: 0}}")
        return v

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_positive(cls, v):
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            return v
        raise ValueError(f"must be a positive integer or 'auto' (one worker per unit of inference.resources), got {v!r}")

    @field_validator("resources")
    @classmethod
    def _resources_nonneg(cls, v):
        for k, amount in v.items():
            if amount < 0:
                raise ValueError(f"{k}: must be >= 0, got {amount}")
        return v

    @field_validator("providers")
    @classmethod
    def _providers_nonempty(cls, v):
        if not v:
            raise ValueError("must name at least one provider, e.g. [CPUExecutionProvider]")
        return v


class RuntimeCfg(_Section):
    ray_address: Optional[str] = None
    num_cpus: Optional[int] = Field(default=None, gt=0)
    shard_size: int = Field(default=constants.SHARD_IMAGES, gt=0, le=100_000)
    prep_on: Literal["any", "driver"] = "any"
    cache_dir: str = ".batchcls-cache"
    progress: bool = True
    # Custom resources of the local cluster a run starts (e.g. {vacc: 4} on a host with 4 dies).
    resources: dict[str, float] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _local_resources(cls, v):
        for k, amount in v.items():
            if k in ("CPU", "GPU", "memory") or amount < 0:
                raise ValueError(f"{k}: custom resources only (not CPU/GPU/memory, which Ray counts), >= 0, "
                                 f"e.g. {{vacc: 4}}; got {amount}")
        return v


class OutputCfg(_Section):
    dir: str = Field(min_length=1)
    topk: int = Field(default=constants.TOPK, gt=0, le=constants.NUM_CLASSES)
    save_logits: bool = False
    overwrite: bool = False


class Job(_Section):
    model: ModelCfg
    dataset: DatasetCfg
    preprocess: PreprocessCfg = PreprocessCfg()
    inference: InferenceCfg = InferenceCfg()
    runtime: RuntimeCfg = RuntimeCfg()
    output: OutputCfg
    path: str = Field(default="<job>", exclude=True)

    def to_dict(self) -> dict:
        """The job as resolved (defaults filled in), JSON-serialisable."""
        return self.model_dump(mode="json", exclude={"path"})


def load_job(path: str | os.PathLike, overrides: list[str] = ()) -> Job:
    """Read, override (`--set a.b=value`, value parsed as YAML) and validate a job file.

    Raises JobError naming the file, the dotted field and what is allowed; checks that the
    files the job names exist before any work starts.
    """
    path = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise JobError("job", "file not found; pass the path of a job YAML such as jobs/demo.yaml", path=path) from None
    except (OSError, yaml.YAMLError) as e:
        raise JobError("job", f"cannot be read as YAML: {_one_line(e)}", path=path) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise JobError("job", f"must be a mapping of sections, got {type(raw).__name__}", path=path)
    for item in overrides:
        apply_override(raw, item, path)
    job = validate_job(raw, path)
    check_files(job)
    check_backend_fields(job)
    return job


def apply_override(raw: dict, item: str, path: str) -> None:
    """Set `section.field=value` in the raw job mapping; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise JobError("--set", f"expects FIELD=VALUE such as inference.workers=2, got {item!r}", path=path)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise JobError(".".join(parts), f"cannot set a field inside {part!r}, which is not a section", path=path)
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise JobError(key, f"value {value!r} is not valid YAML: {_one_line(e)}", path=path) from None


def validate_job(raw: dict, path: str = "<job>") -> Job:
    """The raw mapping as a Job, or JobError for the first problem found."""
    try:
        return Job.model_validate({**raw, "path": path})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "job"
        raise JobError(field, _explain(err, raw), path=path) from None


def _explain(err: dict, raw: dict) -> str:
    kind, value = err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    loc = err["loc"]
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        return f"unknown field; allowed: {', '.join(allowed)}{_did_you_mean(str(loc[-1]), allowed)}"
    if kind == "missing":
        return "is required but missing"
    if kind == "literal_error":
        allowed = [a.strip(" '") for a in ctx.get("expected", "").replace(" or ", ",").split(",")]
        allowed = [a for a in allowed if a]
        return f"{value!r} is not allowed; allowed: {', '.join(allowed)}{_did_you_mean(str(value), allowed)}"
    if kind == "greater_than" and ctx.get("gt") == 0 and isinstance(value, int):
        return f"must be a positive integer, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        bound = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
                 "less_than_equal": "<= {le}", "less_than": "< {lt}"}[kind].format(**ctx)
        return f"must be {bound}, got {value!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be {_int_kind(loc)}, got {value!r}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {value!r}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {value!r}"
    if kind in ("string_type",):
        return f"must be a string, got {value!r}"
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping, got {value!r}"
    if kind in ("tuple_type", "list_type", "too_short", "too_long"):
        return f"must be a list ({err['msg']}), got {value!r}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg']}, got {value!r}"


def _field(loc: tuple):
    """(section model, field info) at a pydantic error location, or (None, None)."""
    model: Any = Job
    field = None
    for part in loc:
        if model is None:
            return None, None
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model, field


def _allowed_fields(loc: tuple) -> list[str]:
    model, _ = _field(loc)
    return [n for n in model.model_fields if n != "path"] if model else []


def _int_kind(loc: tuple) -> str:
    _, field = _field(loc)
    positive = any(getattr(m, "gt", None) == 0 for m in getattr(field, "metadata", ()))
    return "a positive integer" if positive else "an integer"


def _did_you_mean(word: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(word, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def check_files(job: Job) -> None:
    """Every file the job names exists, or JobError saying what to get and where to put it."""
    p = job.path
    if job.inference.backend == "vacc" or job.model.vacc is not None:
        check_vacc(job)
    elif job.model.onnx is None and job.model.weights is None:
        raise JobError("model.onnx", "is required (or model.weights); see README 'Data and models'", path=p)
    if job.model.onnx is not None and job.model.weights is not None:
        raise JobError("model.weights", "give model.onnx or model.weights, not both", path=p)
    if job.model.onnx is not None and not Path(job.model.onnx).is_file():
        raise JobError("model.onnx", f"{job.model.onnx!r} does not exist; export the model to ONNX and put it there "
                       "(see README 'Data and models'), or pass --set model.onnx=PATH", path=p)
    weights = job.model.weights
    if weights is not None and not weights.startswith("random:") and not Path(weights).is_file():
        raise JobError("model.weights", f"{weights!r} does not exist; download the checkpoint there "
                       "(see README 'Data and models'), or use random:SEED", path=p)
    if job.dataset.generate is None and not Path(job.dataset.root).is_dir():
        raise JobError("dataset.root", f"{job.dataset.root!r} is not a folder; put the ILSVRC2012 validation images there "
                       "(see README 'Data and models'), or pass --set dataset.root=PATH", path=p)
    labels = job.dataset.labels
    if labels not in (None, "none") and job.dataset.generate is None and not Path(labels).is_file():
        raise JobError("dataset.labels", f"{labels!r} does not exist; it holds '<filename> <class index>' lines "
                       "(see README 'Data and models' and 'Labels'), or set it to none for an unlabelled run", path=p)
    for name, value in (("real_labels", job.dataset.real_labels), ("class_subset", job.dataset.class_subset)):
        if value not in (None, "none") and not Path(value).is_file():
            raise JobError(f"dataset.{name}", f"{value!r} does not exist (see README 'Labels')"
                           + (", or set it to none" if name == "real_labels" else ""), path=p)
    vdsp = job.preprocess.vdsp_params
    if vdsp is not None and (job.preprocess.profile or "vdsp") != "vdsp" and job.inference.backend != "vacc":
        raise JobError("preprocess.vdsp_params", f"only applies to profile 'vdsp', not {job.preprocess.profile!r}", path=p)
    if job.preprocess.profile == "vdsp" and vdsp is None:
        raise JobError("preprocess.vdsp_params", "is required with profile 'vdsp': a vendor JSON such as "
                       "timm-dla34-vdsp_params.json, or a shipped name such as timm-dla34", path=p)


VACC_SUFFIXES = (".so", ".json", ".params")


def vacc_files(prefix: str) -> list[str]:
    """The three files of a VastAI compiled model prefix (the vendor's 'three-piece set')."""
    return [prefix + s for s in VACC_SUFFIXES]


def check_vacc(job: Job) -> None:
    """The fields of a run on VastAI cards agree, and the compiled model's three files exist."""
    p = job.path
    if job.inference.backend != "vacc":
        raise JobError("model.vacc", "is the compiled model of the vacc backend; set inference.backend: vacc, "
                       "or give model.onnx for onnxruntime", path=p)
    if job.model.vacc is None:
        raise JobError("model.vacc", "is required with inference.backend vacc: the compiled model's prefix "
                       "PATH/PREFIX (files PREFIX.so, PREFIX.json, PREFIX.params, as vamc writes them)", path=p)
    for field, value in (("model.onnx", job.model.onnx), ("model.weights", job.model.weights)):
        if value is not None:
            raise JobError(field, "is not used by the vacc backend, which runs the compiled model.vacc; remove it",
                           path=p)
    if job.model.precision != "fp32":
        raise JobError("model.precision", f"{job.model.precision!r} builds an ONNX model; a vacc model's precision "
                       "is fixed when vamc compiles it (its build YAML's quantize section): remove model.precision",
                       path=p)
    for f in vacc_files(job.model.vacc):
        if not Path(f).is_file():
            raise JobError("model.vacc", f"{f!r} does not exist: a compiled model is PREFIX.so, PREFIX.json and "
                           "PREFIX.params side by side (vamc's output folder); give its prefix", path=p)


def check_backend_fields(job: Job) -> None:
    """Fields that belong to the vacc backend are not given to another; local resources only locally."""
    if job.runtime.resources and job.runtime.ray_address:
        raise JobError("runtime.resources", "declares the resources of a local cluster only; on a cluster, "
                       "declare them where the host joins: ray start --resources='{\"vacc\": 4}'", path=job.path)
    if job.inference.backend != "vacc":
        for field, value in (("inference.devices", job.inference.devices),
                             ("preprocess.on_device", job.preprocess.on_device)):
            if value is not None:
                raise JobError(field, "applies to inference.backend vacc only; remove it", path=job.path)
