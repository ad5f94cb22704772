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


def test_every_zoo_job_is_a_row():
    names = sorted(n[:-5] for n in os.listdir(os.path.join(JOBS, "zoo")))
    assert names == sorted(r.id for r in read_zoo())


def test_main_job_says_what_to_get(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no data/ nor models/ here
    with pytest.raises(JobError) as info:
        load_job(os.path.join(JOBS, "dla34.yaml"))
    msg = str(info.value)
    assert "model.onnx: 'models/dla34.onnx' does not exist" in msg and "Data and models" in msg


def test_demo_job_is_valid():
    job = validate_job(_raw(os.path.join(JOBS, "demo.yaml")))
    assert job.model.weights == "random:0" and job.dataset.generate is not None
