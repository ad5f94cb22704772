"""The shipped job files: one per row of the zoo table, each valid, with its source's preprocessing."""

from __future__ import annotations

import os

import pytest
import yaml

from batchcls.config import load_job, validate_job
from batchcls.errors import JobError
from batchcls.plan import resolve_preprocess
from batchcls.transforms import create_transform
from batchcls.zoo import find_zoo_row, read_zoo

JOBS = os.path.join(os.path.dirname(__file__), "..", "jobs")


def _raw(path):
    with open(path) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("row", read_zoo(), ids=lambda r: r.id)
def test_zoo_job(row):
    path = os.path.join(JOBS, "zoo", f"{row.id}.yaml")
    job = validate_job(_raw(path), path)
    assert (job.model.name, job.model.source) == (row.model, row.source)
    assert find_zoo_row(job.model.name, job.model.source) == row
    params = resolve_preprocess(job, row)
    assert params["profile"] == ("ppcls" if row.source == "ppcls" else "timm")
    assert create_transform(**params).out_shape == (3, 224, 224)
    # The vendor's pipeline is one override away, with the JSON the comment names.
    override = [line.split("--set ", 1)[1] for line in open(path) if "--set preprocess.vdsp_params=" in line][0]
    raw = _raw(path)
    raw.setdefault("preprocess", {})["vdsp_params"] = override.split("=", 1)[1].strip()
    vdsp = resolve_preprocess(validate_job(raw, path), row)
    assert vdsp["profile"] == "vdsp" and create_transform(**vdsp).out_shape == (3, 224, 224)


DEPLOY_SUFFIXES = (".int8", ".fp16")


def test_every_zoo_job_is_a_row():
    names = sorted(n[:-5] for n in os.listdir(os.path.join(JOBS, "zoo")) if not n[:-5].endswith(DEPLOY_SUFFIXES))
    assert names == sorted(r.id for r in read_zoo())


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(JOBS, "zoo"))
                                        if n[:-5].endswith(DEPLOY_SUFFIXES)))
def test_zoo_deploy_job(name):
    """`<row>.int8.yaml` / `<row>.fp16.yaml`: the row's job with model.precision set, and nothing else changed
    but the output folder (int8: the vendor's calibration, KL divergence per channel on 1000 images)."""
    row_id, precision = name[:-5].rsplit(".", 1)
    path = os.path.join(JOBS, "zoo", name)
    job = validate_job(_raw(path), path)
    base = validate_job(_raw(os.path.join(JOBS, "zoo", f"{row_id}.yaml")))
    assert job.model.precision == precision and job.output.dir == f"{base.output.dir}.{precision}"
    assert job.model.model_dump(exclude={"precision"}) == base.model.model_dump(exclude={"precision"})
    assert job.model_dump(exclude={"model", "output", "path"}) == base.model_dump(exclude={"model", "output", "path"})
    c = job.model.calibration
    assert (c.method, c.images, c.per_channel, c.balance) == ("entropy", 1000, True, True)


def test_seed_deploy_columns_have_jobs():
    names = set(os.listdir(os.path.join(JOBS, "zoo")))
    for source in ("timm", "ppcls", "ucbdrive"):
        assert {f"dla34.{source}.int8.yaml", f"dla34.{source}.fp16.yaml"} <= names


def test_main_job_says_what_to_get(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no data/ nor models/ here
    with pytest.raises(JobError) as info:
        load_job(os.path.join(JOBS, "dla34.yaml"))
    msg = str(info.value)
    assert "model.onnx: 'models/dla34.onnx' does not exist" in msg and "Data and models" in msg


def test_demo_job_is_valid():
    job = validate_job(_raw(os.path.join(JOBS, "demo.yaml")))
    assert job.model.weights == "random:0" and job.dataset.generate is not None
