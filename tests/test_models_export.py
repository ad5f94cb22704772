"""ONNX export: summary, atomic file, build cache and the export CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pytest
from safetensors.numpy import save_file

from batchcls.models import cache_key, cached_onnx, export_onnx, random_weights
from batchcls.models import export as export_mod

ARCH = "dla46_c"


def test_export_writes_checked_model_and_summary(tmp_path):
    out = tmp_path / "sub" / "dla46_c.onnx"
    summary = export_onnx(ARCH, "random:0", out)
    assert out.is_file() and os.listdir(out.parent) == ["dla46_c.onnx"]  # no temp file left
    onnx.checker.check_model(str(out))
    assert summary["size_bytes"] == out.stat().st_size
    assert (summary["params"], summary["macs"], summary["ignored_tensors"]) == (1301400, 574269440, 0)
    assert summary["seconds"] > 0 and summary["opset"] == 17
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["arch"] == ARCH


def test_cached_onnx_builds_once_per_weights(tmp_path, monkeypatch):
    first = cached_onnx(ARCH, "random:0", tmp_path)
    mtime = first.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(export_mod, "export_onnx", no_export)
    assert cached_onnx(ARCH, "random:0", tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    monkeypatch.undo()
    assert cached_onnx(ARCH, "random:1", tmp_path) != first


def test_cache_key_follows_file_content(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(random_weights(ARCH, 0), str(path))
    key0 = cache_key(ARCH, path)
    assert cache_key(ARCH, path) == key0 != cache_key("dla34", path)
    save_file(random_weights(ARCH, 1), str(path))
    assert cache_key(ARCH, path) != key0
    assert cache_key(ARCH, "random:0") != cache_key(ARCH, "random:0", opset=18)


def test_cli_exports(tmp_path, capsys):
    out = tmp_path / "models" / "dla46_c.onnx"
    assert export_mod.main([ARCH, "--weights", "random:0", "-o", str(out)]) == 0
    assert out.is_file()
    printed = capsys.readouterr().out
    assert "params           1301400" in printed and str(out) in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dla35", "--weights", "random:0"], "did you mean 'dla34'"),
        ([ARCH, "--weights", "missing.safetensors"], "weights file not found"),
        ([ARCH], "required: --weights"),
        ([ARCH, "--weights", "random:0", "--opset", "x"], "invalid int value"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert export_mod.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("batchcls export: error: ") and message in err
    assert os.listdir(tmp_path) == []


def test_module_entry_point_end_to_end(tmp_path):
    out = tmp_path / "m.onnx"
    cmd = [sys.executable, "-m", "batchcls.models", "export", ARCH, "--weights", "random:2", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    bad = subprocess.run(cmd[:4] + ["nope", "--weights", "random:0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
