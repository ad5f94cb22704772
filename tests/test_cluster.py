"""Cluster mode on a multi-node Ray cluster on one machine: placement by resources, and runs that lose a
worker, a node or a prep process mid-run still hold every input exactly once with undisturbed predictions."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from batchcls.config import load_job
from batchcls.pipeline import run_job
from batchcls.schema import read_predictions
from batchcls.synthetic import generate_imagenet_folder, tiny_classifier_onnx

from conftest import write_job


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    vacc = [c.add_node(num_cpus=1, resources={"vacc": 1}) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR")
    yield c, vacc
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    root = str(tmp / "val")
    labels = generate_imagenet_folder(root, 144, classes=6, seed=3, small=True)
    slow = tiny_classifier_onnx(str(tmp / "slow.onnx"), seed=1, width=64, stride=1)  # ~30 ms/img
    return tmp, root, labels, slow


def _job(data, out, **runtime):
    tmp, root, labels, model = data
    return load_job(write_job(
        tmp, model={"name": "slow", "onnx": model}, dataset={"root": root, "labels": labels},
        # Small shards: a run is 9 shards, so the disturbance lands while both workers still have work.
        inference={"workers": "auto", "resources": {"vacc": 1}, "intra_op_threads": 1, "batch_size": 16},
        runtime={"shard_size": 16, "cache_dir": str(tmp / "cache"), "progress": False, **runtime},
        output={"dir": str(tmp / out)}))


def _pids(title: str) -> list[int]:
    """Processes whose Ray title starts with `title` (e.g. 'ray::_RemoteWorker')."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if pid.isdigit() and cmd.startswith(title):
            found.append(int(pid))
    return found


def _wait_gone(title: str, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while _pids(title) and time.time() < deadline:
        time.sleep(0.05)


def _run_and_disturb(job, disturb, wait_for_parts=1):
    """Run `job` in a thread; once `wait_for_parts` parts exist call `disturb()`; return (metrics, logs, result)."""
    out, logs = {}, []
    _wait_gone("ray::_RemoteWorker")  # workers of an earlier run are killed asynchronously
    thread = threading.Thread(target=lambda: out.setdefault("m", run_job(job, log=logs.append)), daemon=True)
    thread.start()
    parts_dir = os.path.join(job.output.dir, "predictions")
    deadline = time.time() + 120
    while time.time() < deadline and thread.is_alive():
        if os.path.isdir(parts_dir) and len([p for p in os.listdir(parts_dir) if p.endswith(".parquet")]) >= wait_for_parts:
            break
        time.sleep(0.02)
    disturbed = disturb()
    thread.join(300)
    assert not thread.is_alive()
    return out.get("m"), logs, disturbed


@pytest.fixture(scope="module")
def undisturbed(cluster, data):
    job = _job(data, "undisturbed")
    metrics = run_job(job, log=lambda m: None)
    return job, metrics, read_predictions(job.output.dir)


def test_workers_only_on_nodes_with_the_resource(cluster, undisturbed):
    c, vacc = cluster
    job, metrics, table = undisturbed
    vacc_ids = {n.node_id for n in vacc}
    assert len(metrics["workers"]) == 2  # workers: auto = one per vacc in the cluster
    assert {w["node_id"] for w in metrics["workers"]} == vacc_ids
    assert table.num_rows == 144 and sorted(table["index"].to_pylist()) == list(range(144))


def test_killed_worker(cluster, data, undisturbed):
    job = _job(data, "killed_worker")

    def kill():
        pids = _pids("ray::_RemoteWorker")
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    metrics, logs, killed = _run_and_disturb(job, kill)
    assert killed in {w["pid"] for w in metrics["workers"]}  # one of this run's workers, not a leftover
    assert any("died" in line for line in logs), logs
    assert read_predictions(job.output.dir).equals(undisturbed[2])


def test_crashed_prep_task(cluster, data, undisturbed):
    job = _job(data, "crashed_prep", shard_size=64)

    def kill():
        deadline = time.time() + 30
        while time.time() < deadline:
            pids = _pids("ray::_prep_task")
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                return pids[0]
            time.sleep(0.005)
        return None

    # A fresh cache folder, so prep really runs (and can be killed) instead of reading shards.
    job = load_job(job.path, [f"runtime.cache_dir={data[0] / 'cache_prep_crash'}"])
    metrics, logs, killed = _run_and_disturb(job, kill, wait_for_parts=0)
    assert killed, "no prep task was seen running"
    assert read_predictions(job.output.dir).equals(undisturbed[2])


def test_removed_node(cluster, data, undisturbed):
    c, vacc = cluster
    job = _job(data, "removed_node")

    def remove():
        c.remove_node(vacc[1])
        return True

    metrics, logs, _ = _run_and_disturb(job, remove)
    assert any("died" in line for line in logs), logs
    assert read_predictions(job.output.dir).equals(undisturbed[2])
    vacc[1] = c.add_node(num_cpus=1, resources={"vacc": 1})
    c.wait_for_nodes()
