"""Job file validation: every error kind gives one line naming the file, the field and what is allowed."""

from __future__ import annotations

import pytest

from batchcls.config import load_job, validate_job
from batchcls.errors import JobError

from conftest import write_job


@pytest.fixture
def base(tmp_path, tiny_onnx):
    root = tmp_path / "val"
    root.mkdir()
    return {"model": {"name": "dla34", "source": "timm", "onnx": tiny_onnx},
            "dataset": {"root": str(root)}, "output": {"dir": str(tmp_path / "out")}}


def _error(tmp_path, raw, overrides=()):
    path = write_job(tmp_path, **raw)
    with pytest.raises(JobError) as info:
        load_job(path, list(overrides))
    msg = str(info.value)
    assert msg.startswith(path + ": "), msg
    assert "\n" not in msg
    return msg


def test_valid_job_gets_defaults(tmp_path, base):
    job = load_job(write_job(tmp_path, **base))
    assert job.inference.batch_size == 48
    assert job.inference.providers == ["CPUExecutionProvider"]
    assert job.runtime.shard_size == 1000 and job.output.topk == 5 and job.output.save_logits is False
    assert job.to_dict()["inference"]["workers"] == 1


@pytest.mark.parametrize("section,field,value,expect", [
    ("inference", "batch_size", "abc", "inference.batch_size: must be a positive integer, got 'abc'"),
    ("inference", "batch_size", 0, "inference.batch_size: must be a positive integer, got 0"),
    ("inference", "workers", "many", "inference.workers: must be a positive integer or 'auto'"),
    ("inference", "resources", {"GPU": "one"}, "inference.resources.GPU: must be a number"),
    ("inference", "providers", [], "inference.providers: must name at least one provider"),
    ("preprocess", "profile", "timn", "preprocess.profile: 'timn' is not allowed; allowed: timm, vdsp, ppcls "
                                      "(did you mean 'timm'?)"),
    ("preprocess", "mean", [0.5, 0.5], "preprocess.mean: must be three numbers"),
    ("preprocess", "std", [0.5, 0, 0.5], "preprocess.std: must be three positive numbers"),
    ("preprocess", "crop_pct", 1.5, "preprocess.crop_pct: must be <= 1"),
    ("output", "topk", 1001, "output.topk: must be <= 1000"),
    ("output", "save_logits", "yes", "output.save_logits: must be true or false, got 'yes'"),
    ("dataset", "limit", -3, "dataset.limit: must be a positive integer, got -3"),
    ("runtime", "shard_size", 2.5, "runtime.shard_size: must be a positive integer, got 2.5"),
    ("dataset", "layout", "tree", "dataset.layout: 'tree' is not allowed; allowed: auto, flat, folders"),
])
def test_bad_values(tmp_path, base, section, field, value, expect):
    base.setdefault(section, {})[field] = value
    assert expect in _error(tmp_path, base)


def test_unknown_field_suggests(tmp_path, base):
    base["inference"] = {"batchsize": 32}
    msg = _error(tmp_path, base)
    assert "inference.batchsize: unknown field; allowed: backend, batch_size" in msg
    assert "(did you mean 'batch_size'?)" in msg


def test_unknown_section(tmp_path, base):
    base["infer"] = {}
    assert "infer: unknown field; allowed: model, dataset, preprocess, inference, runtime, output" in _error(tmp_path, base)


def test_missing_section_and_field(tmp_path, base):
    del base["output"]
    assert "output: is required but missing" in _error(tmp_path, base)
    base["output"] = {}
    assert "output.dir: is required but missing" in _error(tmp_path, base)


@pytest.mark.parametrize("section,field,value", [
    ("model", "onnx", "nowhere/model.onnx"),
    ("dataset", "root", "nowhere/val"),
    ("dataset", "labels", "nowhere/val_label.txt"),
])
def test_missing_files_say_what_to_get(tmp_path, base, section, field, value):
    base[section][field] = value
    msg = _error(tmp_path, base)
    assert f"{section}.{field}: '{value}'" in msg and "Data and models" in msg


def test_vdsp_needs_params(tmp_path, base):
    base["preprocess"] = {"profile": "vdsp"}
    assert "preprocess.vdsp_params: is required with profile 'vdsp'" in _error(tmp_path, base)


def test_model_needs_onnx_or_weights(tmp_path, base):
    del base["model"]["onnx"]
    assert "model.onnx: is required (or model.weights)" in _error(tmp_path, base)


def test_bad_yaml_and_not_a_mapping(tmp_path, base):
    p = tmp_path / "broken.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(JobError, match="job: cannot be read as YAML"):
        load_job(str(p))
    p.write_text("- just\n- a list\n")
    with pytest.raises(JobError, match="job: must be a mapping of sections"):
        load_job(str(p))
    with pytest.raises(JobError, match="job: file not found"):
        load_job(str(tmp_path / "nope.yaml"))


def test_overrides(tmp_path, base):
    path = write_job(tmp_path, **base)
    job = load_job(path, ["inference.workers=2", "inference.resources={GPU: 1}", "dataset.limit=10",
                          "preprocess.mean=[0.5, 0.5, 0.5]", "output.save_logits=true"])
    assert job.inference.workers == 2 and job.inference.resources == {"GPU": 1.0}
    assert job.dataset.limit == 10 and job.preprocess.mean == [0.5, 0.5, 0.5] and job.output.save_logits
    with pytest.raises(JobError, match="inference.batch_size: must be a positive integer, got 'x'"):
        load_job(path, ["inference.batch_size=x"])
    with pytest.raises(JobError, match="--set: expects FIELD=VALUE"):
        load_job(path, ["inference.workers"])
    with pytest.raises(JobError, match=r"inference.wrkers: unknown field.*did you mean 'workers'"):
        load_job(path, ["inference.wrkers=2"])


def test_validate_job_is_strict_about_types():
    with pytest.raises(JobError, match="model: must be a mapping"):
        validate_job({"model": 3, "dataset": {"root": "x"}, "output": {"dir": "o"}}, "j.yaml")
