"""`batchcls bench`: structure and consistency of its output on a tiny model, and its one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from batchcls.bench import main, parse_resources, split_batches
from batchcls.errors import BatchclsError
from batchcls.synthetic import tiny_classifier_onnx


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray cluster of 2 CPUs of this module's own ("local": never one that `ray start` left running)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _check_summary(s: dict, instances: int, batch: int):
    assert s["instances"] == instances and s["batch"] == batch
    assert s["images"] == s["batches"] * batch
    assert sum(p["batches"] for p in s["per_instance"]) == s["batches"]
    assert sum(p["images"] for p in s["per_instance"]) == s["images"]
    lat = s["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert s["seconds"] > 0 and s["images_per_s"] == pytest.approx(s["images"] / s["seconds"])
    assert len(s["workers"]) == instances
    assert all(w["batch_shape"] == [batch, 3, 224, 224] for w in s["workers"])


@pytest.mark.parametrize("instances,batch,count,batches", [(1, 8, 40, 5), (2, 4, 30, 8)])
def test_count_run(ray_local, tiny_onnx, tmp_path, capsys, instances, batch, count, batches):
    path = tmp_path / "bench.json"
    rc, out, err = _run(capsys, [tiny_onnx, "-i", str(instances), "-b", str(batch), "--count", str(count),
                                 "--warmup", "1", "--json", str(path)])
    assert rc == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line == json.loads(path.read_text())
    _check_summary(line, instances, batch)
    assert line["batches"] == batches  # count rounded up to whole batches
    assert [p["batches"] for p in line["per_instance"]] == split_batches(batches, instances)
    assert "images/s" in out and "p50" in out and "p99" in out


def test_seconds_run_and_fixed_batch(ray_local, tmp_path, capsys):
    fixed = tiny_classifier_onnx(str(tmp_path / "fixed.onnx"), fixed_batch=2, input_size=64)
    rc, out, err = _run(capsys, [fixed, "-b", "2", "--seconds", "0.3", "--threads", "1"])
    assert rc == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["batches"] >= 1 and s["images"] == 2 * s["batches"]
    assert s["workers"][0]["batch_shape"] == [2, 3, 64, 64] and s["threads"] == 1
    rc, _, err = _run(capsys, [fixed, "-b", "4", "--count", "4"])
    assert rc == 2 and "fixed batch of 2" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["missing.onnx", "--count", "4"], "is not a file"),
    (["MODEL", "--resources", "{GPU: 1", "--count", "4"], "--resources"),
    (["MODEL", "--resources", "[1, 2]", "--count", "4"], "--resources"),
    (["MODEL", "--resources", "{GPU: 1}", "--count", "4"], "cluster has GPU 0"),
    (["MODEL", "-i", "9", "--count", "4"], "cluster has CPU 2"),
    (["MODEL", "--count", "0"], "--count"),
    (["MODEL", "--count", "4", "--seconds", "1"], "not allowed with"),
    (["MODEL", "--providers", "NoSuchExecutionProvider", "--count", "4"], "NoSuchExecutionProvider"),
])
def test_user_errors_are_one_line_exit_2(ray_local, tiny_onnx, capsys, argv, message):
    rc, out, err = _run(capsys, [tiny_onnx if a == "MODEL" else a for a in argv])
    assert rc == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_unreachable_cluster_is_a_user_error(tiny_onnx):
    # Its own process: this module's cluster is already up in this one, and bench then uses it.
    proc = subprocess.run([sys.executable, "-m", "batchcls.cli", "bench", tiny_onnx, "--ray-address",
                           "127.0.0.1:9", "--count", "4"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "--ray-address" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unloadable_model_is_a_user_error(ray_local, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    rc, _, err = _run(capsys, [str(bad), "--count", "4"])
    assert rc == 2 and f"cannot load {str(bad)!r}" in err and len(err.strip().splitlines()) == 1


def test_parse_resources_and_split():
    assert parse_resources("{GPU: 1, vacc: 0.5}") == {"GPU": 1.0, "vacc": 0.5}
    with pytest.raises(BatchclsError, match="amounts >= 0"):
        parse_resources("{GPU: -1}")
    assert split_batches(7, 3) == [3, 2, 2] and split_batches(1, 2) == [1, 0]
