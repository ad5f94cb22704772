"""The command line as a user runs it: a driver killed mid-run continues where it stopped, two runs on one
folder are refused, an unwritable or full output folder gives a clear message and keeps what was written."""

from __future__ import annotations

import errno
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from batchcls.config import load_job
from batchcls.errors import BatchclsError
from batchcls.pipeline import run_job
from batchcls.schema import read_predictions
from batchcls.synthetic import generate_imagenet_folder, tiny_classifier_onnx

from conftest import write_job


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    root = str(tmp / "val")
    labels = generate_imagenet_folder(root, 192, classes=4, seed=4, small=True)
    slow = tiny_classifier_onnx(str(tmp / "slow.onnx"), seed=2, width=64, stride=1)
    return tmp, root, labels, slow


def _job_file(data, out, name="job.yaml"):
    tmp, root, labels, model = data
    sub = tmp / name.replace(".yaml", "")
    sub.mkdir(exist_ok=True)
    return write_job(sub, model={"name": "slow", "onnx": model}, dataset={"root": root, "labels": labels},
                     inference={"intra_op_threads": 1},
                     runtime={"shard_size": 48, "cache_dir": str(tmp / "cache"), "progress": False},
                     output={"dir": str(tmp / out)})


def _cli(job, *extra):
    return subprocess.Popen([sys.executable, "-m", "batchcls.run", job, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_parts(out_dir, n, proc, timeout=180):
    d = os.path.join(out_dir, "predictions")
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(d) and len([p for p in os.listdir(d) if p.endswith(".parquet")]) >= n:
            return True
        time.sleep(0.05)
    return False


def test_driver_killed_then_resumed(data):
    tmp = data[0]
    reference = _cli(_job_file(data, "reference", "ref.yaml"))
    assert reference.wait(300) == 0, reference.stderr.read()
    with open(tmp / "reference" / "metrics.json") as f:
        timing = json.load(f)["timing"]
    # Written before the local cluster stops, then completed with how long stopping it took.
    assert timing["end_to_end_s"] > 0 and timing["ray_shutdown_s"] >= 0
    job = _job_file(data, "killed")
    proc = _cli(job)
    assert _wait_parts(str(tmp / "killed"), 1, proc), proc.stderr.read() if proc.poll() is not None else "timeout"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    written = len(os.listdir(tmp / "killed" / "predictions"))
    assert 1 <= written < 4
    again = _cli(job)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "reusing" in out and "finished shards" in out
    assert read_predictions(str(tmp / "killed")).equals(read_predictions(str(tmp / "reference")))


def test_second_run_on_same_folder_is_refused(data):
    job = _job_file(data, "busy", "busy.yaml")
    first = _cli(job)
    try:
        assert _wait_parts(str(data[0] / "busy"), 0, first) or first.poll() is None
        time.sleep(1.0)
        assert first.poll() is None, "the first run ended before the second started"
        second = _cli(job)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2 and "is in use by another run" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert first.poll() is None  # refused while the first was still writing, not after
    finally:
        first.wait(300)


def test_unwritable_output_folder(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    job = load_job(_job_file(data, "unused", "unwritable.yaml"), [f"output.dir={blocker}/out"])
    with pytest.raises(BatchclsError, match="output.dir: cannot write to .*choose a writable folder"):
        run_job(job, log=lambda m: None)


def test_disk_full_keeps_written_parts(data, monkeypatch, ray_local):
    import batchcls.schema as schema

    real = schema.pq.write_table
    calls = {"n": 0}

    def filling_disk(table, where, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(table, where, **kw)

    monkeypatch.setattr(schema.pq, "write_table", filling_disk)
    job = load_job(_job_file(data, "full", "full.yaml"))
    with pytest.raises(BatchclsError, match="No space left on device.*parts already written are kept"):
        run_job(job, log=lambda m: None)
    parts = sorted(os.listdir(os.path.join(job.output.dir, "predictions")))
    # The two parts written before the disk filled (which two depends on the order shards finish), no
    # temp file left, both readable.
    assert len(parts) == 2 and all(p.startswith("part-") and p.endswith(".parquet") for p in parts), parts
    assert read_predictions(job.output.dir).num_rows == 96
    monkeypatch.setattr(schema.pq, "write_table", real)
    metrics = run_job(job, log=lambda m: None)
    assert metrics["shards"]["reused_parts"] == 2 and metrics["images"] == 192


def test_unreachable_cluster_is_one_clear_line(data):
    proc = _cli(_job_file(data, "noray", "noray.yaml"), "--set", "runtime.ray_address=127.0.0.1:1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "runtime.ray_address: cannot join Ray at '127.0.0.1:1'" in err and "Traceback" not in err


def test_cluster_asking_for_a_token_is_one_clear_line(data):
    """`ray start` (Ray 2.5x+) turns on token authentication; a driver without the token gets what to do."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    temp = tempfile.mkdtemp(prefix="rt")  # Ray's socket paths must stay under 108 bytes
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false", f"--temp-dir={temp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert head.poll() is None, head.stderr.read()
        job = _job_file(data, "token", "token.yaml")
        proc = subprocess.Popen([sys.executable, "-m", "batchcls.run", job, "--set",
                                 f"runtime.ray_address=127.0.0.1:{port}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        out, err = proc.communicate(timeout=180)
        if proc.returncode == 0:
            pytest.skip("this Ray's `ray start` does not turn on token authentication")
        assert proc.returncode == 2
        assert "asks for its authentication token" in err and "RAY_AUTH_MODE=token" in err, err
        assert "Traceback" not in err
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_model_that_does_not_load_is_one_line_without_the_actors_traceback(data, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    proc = _cli(_job_file(data, "badmodel", "badmodel.yaml"), "--set", f"model.onnx={bad}")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == err.strip().splitlines()[-1]  # one line
    assert err.startswith(f"error: model.onnx: cannot load {str(bad)!r}") and "creation task" not in err
