"""Report stage: metrics from the Parquet dump vs the zoo's reference row -> printed table + metrics.json."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from ..data.discover import imagenet_class_names
from ..metrics import accuracy, per_class_accuracy
from ..schema import read_predictions
from ..zoo import ZooRow


def compute_metrics(out_dir: str) -> dict:
    """Counts and top-1/top-5 (percent) over labelled, successful rows of the run's Parquet dump."""
    table = read_predictions(out_dir, columns=["index", "label", "topk_ids", "error"])
    n = table.num_rows
    failed = int(pc.sum(pc.is_valid(table["error"])).as_py() or 0)
    ok = table.filter(pc.is_null(table["error"]))
    labelled = ok.filter(pc.is_valid(ok["label"]))
    out = {"images": n, "failed": failed, "succeeded": ok.num_rows, "labelled": labelled.num_rows,
           "top1": None, "top5": None, "per_class": {}}
    if labelled.num_rows:
        labels = labelled["label"].to_numpy().astype(np.int64)
        col = labelled["topk_ids"].combine_chunks()
        ids = pc.list_flatten(col).to_numpy().astype(np.int64).reshape(labelled.num_rows, -1)
        acc = accuracy(labels, ids)
        out["top1"], out["top5"] = acc["top1"], acc["top5"]
        out["per_class"] = {str(c): v for c, v in per_class_accuracy(labels, ids, 1000).items()}
    errors = table.filter(pc.is_valid(table["error"]))["error"].to_pylist()
    kinds: dict[str, int] = {}
    for e in errors:
        kind = e.split(":")[1].strip() if e.count(":") >= 1 else e
        kinds[kind] = kinds.get(kind, 0) + 1
    out["failed_by_reason"] = dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_report(metrics: dict, ref: ZooRow | None, title: str) -> str:
    """The human summary printed at the end of a run."""
    lines = [f"== {title} ==",
             f"images {metrics['images']}  ok {metrics['succeeded']}  failed {metrics['failed']}  "
             f"labelled {metrics['labelled']}"]
    deploy = metrics.get("deploy") or {}
    if deploy.get("precision", "fp32") != "fp32":
        lines.append(f"precision {deploy['precision']}" + _calibration_line(deploy))
    for reason, count in list(metrics.get("failed_by_reason", {}).items())[:5]:
        lines.append(f"  failed: {count} x {reason}")
    if metrics["top1"] is None:
        lines.append("accuracy: not available (no labelled, successful samples)")
    else:
        lines.append(f"{'':12}{'top-1':>10}{'top-5':>10}")
        lines.append(f"{'measured':12}{_pct(metrics['top1']):>10}{_pct(metrics['top5']):>10}")
        if ref is not None:
            lines.append(f"{'reference':12}{ref.top1:>10.3f}{ref.top5:>10.3f}   ({ref.id}, seed table)")
            d1 = metrics["top1"] - ref.top1
            d5 = None if metrics["top5"] is None else metrics["top5"] - ref.top5
            lines.append(f"{'difference':12}{d1:>+10.3f}{'n/a' if d5 is None else f'{d5:+.3f}':>10}")
    t = metrics.get("timing", {})
    reused = metrics.get("shards", {}).get("reused_parts", 0)
    if reused:
        lines.append(f"reused {reused} of {metrics['shards']['total']} finished parts from an earlier run")
    if t and t.get("startup_s") is not None:
        lines.append(f"time: end-to-end {t['end_to_end_s']:.1f} s ({t['end_to_end_images_per_s']:.1f} img/s), "
                     f"prep {t['prep_images_per_s']:.1f} img/s, inference {t['infer_images_per_s']:.1f} img/s, "
                     f"startup {t['startup_s']:.1f} s")
    worst = _worst_classes(metrics)
    if worst:
        lines.append("lowest top-1 classes: " + "; ".join(worst))
    return "\n".join(lines)


def _worst_classes(metrics: dict, n: int = 3) -> list[str]:
    per = metrics.get("per_class") or {}
    if len(per) < 2:
        return []
    names = imagenet_class_names()
    ranked = sorted(per.items(), key=lambda kv: (kv[1]["top1"], int(kv[0])))[:n]
    return [f"{c} {names[int(c)].split(',')[0] if int(c) < len(names) else ''} {v['top1']:.1f}%" for c, v in ranked]


def _calibration_line(deploy: dict) -> str:
    c = deploy.get("calibration")
    if not c:
        return ""
    return (f": calibrated {c['method']} (vamc {c.get('vamc_calibrate_mode', '?')}), "
            f"{'per-channel' if c['per_channel'] else 'per-tensor'}, {c['images_used']} images; "
            f"{deploy['evaluated_calibration_images']} of the evaluated images were calibration images")
