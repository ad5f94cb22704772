"""The HTML report of a run: its numbers equal metrics.json and independent counts from the Parquet dump,
every figure is embedded, nothing is fetched; `batchcls report` and `--table`; a real run writes report.html."""

from __future__ import annotations

import base64
import html as htmllib
import json
import os
import re
from collections import Counter

import numpy as np
import pytest

from batchcls.analysis.runreport import rate_series, write_run_report, write_run_report_safely
from batchcls.data.discover import imagenet_class_names
from batchcls.report import main as report_main
from batchcls.schema import read_predictions
from batchcls.stages.report import compute_metrics

from test_compare import N, synthetic_logits, write_run

FIGURES = ("fig-per-class", "fig-calibration", "fig-throughput")


def cells(page: str, table_id: str) -> list[list[str]]:
    """The text of each cell of the table with `table_id`, row by row."""
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert m, f"no table {table_id}"
    return [[htmllib.unescape(re.sub("<[^>]+>", "", c)) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)]


def figure_png(page: str, fig_id: str) -> bytes:
    m = re.search(rf'<img id="{fig_id}-img" alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert m, f"no figure {fig_id}"
    return base64.b64decode(m.group(2))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as a run leaves it: parts, and metrics.json from the report stage plus what a run adds."""
    out = str(tmp_path_factory.mktemp("rep") / "run")
    la, _, labels = synthetic_logits()
    errors = [""] * N
    errors[5] = "x.JPEG: cannot decode: truncated file"
    errors[6] = "y.JPEG: cannot decode: empty file (0 bytes)"
    errors[7] = "z.JPEG: not an image: unknown format"
    write_run(out, la, [int(x) for x in labels], errors)
    m = compute_metrics(out)
    t0 = 1000.0
    m.update({"reference": {"id": "dla34.timm", "top1": 74.62, "top5": 92.072},
              "preprocess": {"profile": "timm", "input_size": 224, "resize_size": 256},
              "job": {"model": {"name": "dla34", "source": "timm"}},
              "timing": {"startup_s": 4.0, "end_to_end_s": 20.0, "ray_shutdown_s": 1.5},
              "timeline": {"t0": t0, "prep": [[t0 + 2 + i, t0 + 3 + i, 100] for i in range(12)],
                           "infer": [[t0 + 4 + i, t0 + 5.2 + i, 100] for i in range(12)]}})
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(m, f)
    return out


def test_report_numbers_equal_metrics_json(run_dir):
    page = open(write_run_report(run_dir), encoding="utf-8").read()
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert cells(page, "counts")[1] == [str(m["images"]), str(m["succeeded"]), str(m["failed"]), str(m["labelled"])]
    acc = {row[0].split(" (")[0]: row[1:] for row in cells(page, "accuracy")[1:]}
    assert acc["measured"][:3] == [f"{m['top1']:.3f}", f"{m['top5']:.3f}", str(m["labelled"])]
    assert acc["measured, failures as misses"][:3] == [f"{m['top1_all']:.3f}", f"{m['top5_all']:.3f}",
                                                        str(m["labelled_all"])]
    assert acc["seed table"][:2] == ["74.620", "92.072"]
    assert acc["difference"][:2] == [f"{m['top1'] - 74.62:+.3f}", f"{m['top5'] - 92.072:+.3f}"]
    assert {r[0]: int(r[1]) for r in cells(page, "failures")[1:]} == m["failed_by_reason"] == \
        {"cannot decode": 2, "not an image": 1}
    names = imagenet_class_names()
    ranked = sorted(m["per_class"].items(), key=lambda kv: (kv[1]["top1"], int(kv[0])))
    worst = cells(page, "worst-classes")[1:]
    assert [(int(r[0]), r[1], r[3]) for r in worst] == \
        [(int(c), names[int(c)].split(",")[0], f"{v['top1']:.1f}") for c, v in ranked[:10]]
    assert int(cells(page, "best-classes")[1][0]) == int(ranked[-1][0])
    assert dict(cells(page, "preprocess")) == {"profile": "timm", "input_size": "224", "resize_size": "256"}


def test_confusions_and_calibration_equal_independent_counts(run_dir):
    page = open(write_run_report(run_dir), encoding="utf-8").read()
    rows = [r for r in read_predictions(run_dir).to_pylist() if r["error"] is None and r["label"] is not None]
    mistakes = Counter((r["label"], r["topk_ids"][0]) for r in rows if r["topk_ids"][0] != r["label"])
    top = sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    got = [(int(t.split()[0]), int(p.split()[0]), int(n)) for t, p, n in cells(page, "confusions")[1:]]
    assert got == [(t, p, n) for (t, p), n in top]
    conf = np.array([r["topk_probs"][0] for r in rows], np.float64)
    hit = np.array([r["topk_ids"][0] == r["label"] for r in rows])
    ece = 0.0
    for i in range(15):
        sel = (conf > i / 15) & (conf <= (i + 1) / 15)
        if sel.any():
            ece += sel.sum() / conf.size * abs(hit[sel].mean() - conf[sel].mean())
    assert re.search(r'<b id="ece">([0-9.]+)%</b>', page).group(1) == f"{100 * ece:.3f}"


def test_every_figure_is_embedded_and_nothing_is_fetched(run_dir):
    page = open(write_run_report(run_dir), encoding="utf-8").read()
    for fig in FIGURES:
        png = figure_png(page, fig)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page and "<link" not in page


def test_fields_added_by_newer_runs_are_shown(run_dir, tmp_path):
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    m.update({"top1_all": 12.5, "top5_all": 30.25, "real": {"top1": 13.0, "top5": 31.0, "scored": 900},
              "deploy": {"precision": "int8", "path": "m.int8.onnx", "evaluated_calibration_images": 40,
                         "calibration": {"method": "entropy", "per_channel": True, "images_used": 50}}})
    other = tmp_path / "run"
    other.mkdir()
    os.symlink(os.path.join(run_dir, "predictions"), other / "predictions")
    (other / "metrics.json").write_text(json.dumps(m))
    page = open(write_run_report(str(other)), encoding="utf-8").read()
    acc = {r[0]: r[1:] for r in cells(page, "accuracy")}
    assert acc["measured, failures as misses (all labelled images)"][:2] == ["12.500", "30.250"]
    assert acc["ReaL labels"] == ["13.000", "31.000", "900"]
    assert dict(cells(page, "precision")) == {"precision": "int8", "calibration method": "entropy",
                                              "calibration per channel": "True", "calibration images used": "50",
                                              "evaluated images used for calibration": "40"}


def test_rate_series_keeps_every_image():
    iv = [[10.0, 12.0, 100], [11.0, 15.0, 400], [15.0, 15.5, 50]]
    t, rate = rate_series(iv, t0=10.0, bins=50)
    width = t[1] - t[0]
    assert t[0] == 0.0 and rate.sum() * width == pytest.approx(550)
    assert rate[0] == pytest.approx(50.0)  # only the first shard in the first 0.11 s: 100 images / 2 s


def test_report_command(run_dir, tmp_path, capsys):
    out = str(tmp_path / "r.html")
    assert report_main([run_dir, "-o", out]) == 0
    assert "fig-calibration" in open(out, encoding="utf-8").read()
    assert report_main([str(tmp_path / "missing")]) == 2
    assert "metrics.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        report_main([])
    assert e.value.code == 2


def test_runs_table(run_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "dla34.timm").mkdir(parents=True)
    (runs / "mine").mkdir()
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    (runs / "dla34.timm" / "metrics.json").write_text(json.dumps(m))
    m2 = {**m, "job": {"model": {"name": "mynet", "source": "custom"}}, "top1": 50.0}
    (runs / "mine" / "metrics.json").write_text(json.dumps(m2))
    assert report_main(["--table", str(runs)]) == 0
    md = capsys.readouterr().out.splitlines()
    assert len(md) == 2 + 31 + 1  # header, rule, every row of the seed table, and the run it does not have
    row = next(line for line in md if line.startswith("| dla34 | timm |"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[2:8] == ["74.620", "92.072", f"{m['top1']:.3f}", f"{m['top5']:.3f}", f"{m['top1'] - 74.62:+.3f}",
                         f"{m['top5'] - 92.072:+.3f}"] and cols[-1] == "dla34.timm"
    unmeasured = next(line for line in md if line.startswith("| dla34 | ucbdrive |"))
    assert [c.strip() for c in unmeasured.strip("|").split("|")][4:] == ["—"] * 7
    assert md[-1].startswith("| mynet | custom | — | — | 50.000 |")
    page = open(runs / "table.html", encoding="utf-8").read()
    assert len(cells(page, "runs-table")) == 1 + 31 + 1


def test_a_report_that_does_not_render_only_warns(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    logs = []
    assert write_run_report_safely(str(tmp_path), logs.append) is None
    assert len(logs) == 1 and logs[0].startswith("warning: report.html not written") and "batchcls report" in logs[0]


@pytest.mark.usefixtures("ray_local")
def test_a_run_writes_its_report(tmp_path, imagenet_flat, tiny_onnx):
    from batchcls.config import load_job
    from batchcls.pipeline import run_job

    from conftest import write_job

    root, labels = imagenet_flat
    job = load_job(write_job(tmp_path, model={"name": "tiny", "onnx": tiny_onnx},
                             dataset={"root": root, "labels": labels},
                             runtime={"shard_size": 96, "cache_dir": str(tmp_path / "cache"), "progress": False},
                             output={"dir": str(tmp_path / "out")}))
    metrics = run_job(job, log=lambda m: None)
    tl = metrics["timeline"]
    assert sum(n for _, _, n in tl["infer"]) == metrics["images"] == 304
    assert sum(n for _, _, n in tl["prep"]) == 304 and all(s <= e for s, e, _ in tl["prep"] + tl["infer"])
    assert min(s for s, _, _ in tl["infer"]) - tl["t0"] == pytest.approx(metrics["timing"]["startup_s"])
    page = open(os.path.join(job.output.dir, "report.html"), encoding="utf-8").read()
    for fig in FIGURES:
        assert figure_png(page, fig)[:4] == b"\x89PNG"
    assert cells(page, "counts")[1] == ["304", "300", "4", "300"]
    assert json.load(open(os.path.join(job.output.dir, "metrics.json")))["timeline"] == tl
