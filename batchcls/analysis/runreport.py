"""What the HTML report of one run shows, gathered from its metrics.json and Parquet dump (numpy/pyarrow only)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.compute as pc

from ..errors import BatchclsError
from ..schema import read_predictions
from .compare import class_name
from .files import write_atomic
from .stats import confusions, reliability

REPORT_HTML = "report.html"
# Classes listed as worst / best, and confusions listed.
LISTED_CLASSES = 10
LISTED_CONFUSIONS = 20
# Throughput is drawn in about this many time bins.
RATE_BINS = 50


def read_metrics(run_dir: str) -> dict:
    path = os.path.join(run_dir, "metrics.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise BatchclsError(f"{run_dir!r} has no metrics.json: give a run's output.dir (run the job first)") from None
    except (OSError, ValueError) as e:
        raise BatchclsError(f"{path}: cannot read it ({e}); run the job again to rewrite it") from None


def _labelled_predictions(run_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, top-1 ids, top-1 probabilities) of the labelled rows that have a prediction."""
    table = read_predictions(run_dir, columns=["label", "topk_ids", "topk_probs", "error"])
    table = table.filter(pc.and_(pc.is_null(table["error"]), pc.is_valid(table["label"])))
    table = table.filter(pc.is_valid(table["topk_ids"]))
    if table.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    labels = table["label"].to_numpy().astype(np.int64)
    top1 = pc.list_element(table["topk_ids"], 0).to_numpy().astype(np.int64)
    prob = pc.list_element(table["topk_probs"], 0).to_numpy().astype(np.float64)
    return labels, top1, prob


def rate_series(intervals: list, t0: float, bins: int = RATE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Images/s over time from per-shard [start, end, images] (epoch seconds): each shard's images spread
    evenly over its interval, summed per time bin. Returns (bin start in s since t0, images/s)."""
    if not intervals:
        return np.zeros(0), np.zeros(0)
    iv = np.asarray(intervals, dtype=np.float64)
    lo, hi = iv[:, 0].min() - t0, iv[:, 1].max() - t0
    width = max((hi - lo) / bins, 1e-3)
    edges = lo + width * np.arange(bins + 1)
    counts = np.zeros(bins)
    for start, end, n in iv:
        s, e = start - t0, max(end - t0, start - t0 + 1e-6)
        overlap = np.clip(np.minimum(edges[1:], e) - np.maximum(edges[:-1], s), 0, None)
        counts += n * overlap / (e - s)
    return edges[:-1], counts / width


def done_series(intervals: list, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Images finished against time: (shard end in s since t0, cumulative images), in time order."""
    if not intervals:
        return np.zeros(0), np.zeros(0)
    iv = np.asarray(intervals, dtype=np.float64)
    order = np.argsort(iv[:, 1], kind="stable")
    return iv[order, 1] - t0, np.cumsum(iv[order, 2])


def _class_rows(per_class: dict) -> list[dict]:
    rows = [{"class": int(c), "name": class_name(int(c)), "count": v["count"], "top1": v["top1"],
             "top5": v.get("top5")} for c, v in per_class.items()]
    return sorted(rows, key=lambda r: (r["top1"], r["class"]))


def run_report_data(run_dir: str) -> dict:
    """metrics.json as written, plus what the report draws: classes ranked by top-1, the most frequent
    confusions, reliability bins with ECE, and images/s over time."""
    metrics = read_metrics(run_dir)
    labels, top1, prob = _labelled_predictions(run_dir)
    classes = _class_rows(metrics.get("per_class") or {})
    timeline = metrics.get("timeline") or {}
    t0 = timeline.get("t0")
    throughput = None
    if t0 is not None and (timeline.get("prep") or timeline.get("infer")):
        throughput = {name: rate_series(timeline.get(name) or [], t0) for name in ("prep", "infer")}
        throughput.update({f"{name}_done": done_series(timeline.get(name) or [], t0) for name in ("prep", "infer")})
    return {
        "run_dir": run_dir, "metrics": metrics, "classes": classes,
        "worst": classes[:LISTED_CLASSES], "best": classes[::-1][:LISTED_CLASSES],
        "confusions": [{"true": t, "true_name": class_name(t), "pred": p, "pred_name": class_name(p), "count": n}
                       for t, p, n in confusions(labels, top1, LISTED_CONFUSIONS)],
        "calibration": reliability(prob, top1 == labels) if labels.size else None,
        "throughput": throughput,
    }


def write_run_report(run_dir: str, out: str | None = None) -> str:
    """Render `run_dir`'s report.html (or `out`); returns the path written."""
    from .html import render_run_report

    return write_atomic(out or os.path.join(run_dir, REPORT_HTML), render_run_report(run_report_data(run_dir)))


def write_run_report_safely(run_dir: str, log) -> str | None:
    """The end of a run: the report, or one line saying why not; the run's results are already on disk."""
    try:
        return write_run_report(run_dir)
    except Exception as e:  # noqa: BLE001 - a report that does not render must not fail a finished run
        log(f"warning: report.html not written ({type(e).__name__}: {' '.join(str(e).split())[:200]}); the "
            f"results are in {run_dir}; retry with: batchcls report {run_dir}")
        return None
