"""Predictions made elsewhere (vamp's outputs, a vendor result.txt) -> the usual Parquet dump, metrics.json and report."""

from __future__ import annotations

import numpy as np

from ..constants import SHARD_IMAGES
from ..rundir import RunDir
from ..schema import build_table, part_path, read_predictions, write_part
from ..stages.report import compute_metrics, format_report
from .vamp import write_result_txt


def write_dump(out_dir: str, rows: list[dict], *, fingerprint: str, job: dict, overwrite: bool, title: str,
               zoo_row=None, extra: dict | None = None, log=print) -> dict:
    """Write `rows` (dicts: index, path, label, topk_ids, topk_probs, error; index order) as Parquet
    parts of SHARD_IMAGES rows, then metrics.json; prints the report and returns the metrics."""
    with RunDir(out_dir) as rundir:
        rundir.prepare(fingerprint, overwrite, job)
        for sid, start in enumerate(range(0, len(rows), SHARD_IMAGES)):
            chunk = rows[start:start + SHARD_IMAGES]
            ok = [r for r in chunk if not r["error"]]
            k = len(ok[0]["topk_ids"]) if ok else 0
            table = build_table(
                indices=[r["index"] for r in chunk], paths=[r["path"] for r in chunk],
                labels=[r["label"] for r in chunk], errors=[r["error"] or "" for r in chunk],
                topk_ids=np.array([r["topk_ids"] for r in ok], dtype=np.int16).reshape(len(ok), k),
                topk_probs=np.array([r["topk_probs"] for r in ok], dtype=np.float32).reshape(len(ok), k))
            write_part(part_path(out_dir, sid), table)
        metrics = compute_metrics(out_dir)
        metrics.update(extra or {})
        metrics["job"] = job
        rundir.write_json("metrics.json", metrics)
    log(format_report(metrics, zoo_row, title))
    return metrics


def write_run_result_txt(out_dir: str, root: str, path: str, log=print) -> None:
    """result.txt (eval_topk.py's input) from a finished dump."""
    rows = read_predictions(out_dir, columns=["path", "label", "topk_ids", "topk_probs", "error"]).to_pylist()
    written, failed = write_result_txt(path, root, rows)
    log(f"result.txt: {written} images written to {path}" +
        (f"; {failed} failed images left out (eval_topk.py cannot count them)" if failed else ""))
