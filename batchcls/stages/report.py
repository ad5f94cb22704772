"""Report stage: metrics from the Parquet dump vs the zoo's reference row -> printed table + metrics.json."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from ..data.labels import imagenet_class_names, val_number
from ..metrics import NONFINITE_ERROR, accuracy, per_class_accuracy
from ..schema import read_predictions
from ..zoo import ZooRow


def compute_metrics(out_dir: str, class_subset: tuple | None = None, real_labels: tuple | None = None) -> dict:
    """Counts and top-1/top-5 (percent) of the run's Parquet dump: `top1`/`top5` over labelled rows that
    succeeded, `top1_all`/`top5_all` over every labelled row with failures counted as misses (every sample
    counts). With `class_subset`, rows labelled outside it are excluded; with `real_labels`, ReaL accuracy."""
    table = read_predictions(out_dir, columns=["index", "path", "label", "topk_ids", "error"])
    n = table.num_rows
    errors = table["error"].to_pylist()
    ok = np.array([e is None for e in errors], dtype=bool)
    label = pc.fill_null(table["label"], -1).to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
    ids = _topk_matrix(table, ok)
    has_label = label >= 0
    scored = has_label & (np.isin(label, class_subset) if class_subset else True)
    m = scored & ok
    out = {"images": n, "failed": int((~ok).sum()), "succeeded": int(ok.sum()), "labelled": int(m.sum()),
           "top1": None, "top5": None, "per_class": {}, "labelled_all": int(scored.sum()),
           "unlabelled": int((~has_label).sum()), "excluded": int((has_label & ~scored).sum()),
           "top1_all": None, "top5_all": None}
    if m.any():
        acc = accuracy(label[m], ids[m])
        out["top1"], out["top5"] = acc["top1"], acc["top5"]
        out["per_class"] = {str(c): v for c, v in per_class_accuracy(label[m], ids[m], 1000).items()}
    if scored.any():
        acc = accuracy(label[scored], ids[scored])  # a failed row's ids are -1: a miss
        out["top1_all"], out["top5_all"] = acc["top1"], acc["top5"]
    kinds: dict[str, int] = {}
    for e in errors:
        if e is not None:
            kind = e.split(":")[1].strip() if e.count(":") >= 1 else e
            kinds[kind] = kinds.get(kind, 0) + 1
    out["failed_by_reason"] = dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
    out["nonfinite"] = sum(1 for e in errors if e == NONFINITE_ERROR)
    out["bad_inputs"] = out["failed"] - out["nonfinite"]
    out["real"] = None if real_labels is None else real_accuracy(table["path"].to_pylist(), ok, ids, real_labels)
    return out


def _topk_matrix(table, ok: np.ndarray) -> np.ndarray:
    """int64 [n, k] top-k ids of every row; -1 in the rows that failed."""
    flat = pc.list_flatten(table["topk_ids"].combine_chunks()).to_numpy().astype(np.int64) if len(ok) else []
    k = len(flat) // int(ok.sum()) if ok.any() else 1
    ids = np.full((len(ok), k), -1, dtype=np.int64)
    if ok.any():
        ids[ok] = np.asarray(flat).reshape(-1, k)
    return ids


def real_accuracy(paths: list[str], ok: np.ndarray, ids: np.ndarray, real_labels: tuple) -> dict | None:
    """ReaL top-1/top-5 (percent) as timm's RealLabelsImagenet counts: over val images (by file name) whose
    ReaL set is not empty; top-k is right when any of the top-k ids is in the set. `top1_all`/`top5_all`
    count the failed ones among them as misses. None when no image is an ILSVRC2012 val image."""
    numbers = [val_number(p) for p in paths]
    sets = [None if k is None else real_labels[k - 1] if k <= len(real_labels) else () for k in numbers]
    val = [i for i, s in enumerate(sets) if s is not None]
    if not val:
        return None
    scored = [i for i in val if sets[i]]
    out = {"val_images": len(val), "scored_all": len(scored), "scored": sum(1 for i in scored if ok[i]),
           "empty_sets": len(val) - len(scored)}
    for k in (1, 5):
        usable = ids.shape[1] >= k
        hits = sum(1 for i in scored if ok[i] and usable and any(c in sets[i] for c in ids[i, :k]))
        out[f"top{k}"] = 100.0 * hits / out["scored"] if out["scored"] and usable else None
        out[f"top{k}_all"] = 100.0 * hits / len(scored) if scored and usable else None
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_report(metrics: dict, ref: ZooRow | None, title: str) -> str:
    """The human summary printed at the end of a run."""
    lines = [f"== {title} =="]
    if metrics.get("nonfinite"):
        lines.append(f"WARNING: {metrics['nonfinite']} images got non-finite model outputs (NaN/Inf logits): "
                     "they are failures, not predictions; the model or its precision is broken for them")
    lines.append(f"images {metrics['images']}  ok {metrics['succeeded']}  failed {metrics['failed']}"
                 + (f" ({metrics['bad_inputs']} bad inputs, {metrics['nonfinite']} non-finite outputs)"
                    if metrics.get("nonfinite") else "") + f"  labelled {metrics['labelled']}")
    deploy = metrics.get("deploy") or {}
    if deploy.get("precision", "fp32") != "fp32":
        lines.append(f"precision {deploy['precision']}" + _calibration_line(deploy))
    lines.extend(_label_lines(metrics))
    for reason, count in list(metrics.get("failed_by_reason", {}).items())[:5]:
        lines.append(f"  failed: {count} x {reason}")
    rows = _all_and_real_lines(metrics)
    if metrics["top1"] is None:
        lines.append("accuracy: not available (no labelled, successful samples)")
    if metrics["top1"] is not None or rows:
        lines.append(f"{'':12}{'top-1':>10}{'top-5':>10}")
    if metrics["top1"] is not None:
        lines.append(f"{'measured':12}{_pct(metrics['top1']):>10}{_pct(metrics['top5']):>10}"
                     f"   (the {metrics['labelled']} labelled images that succeeded)")
    if metrics["top1"] is not None and ref is not None:
        lines.append(f"{'reference':12}{ref.top1:>10.3f}{ref.top5:>10.3f}   ({ref.id}, seed table)")
        d1 = metrics["top1"] - ref.top1
        d5 = None if metrics["top5"] is None else metrics["top5"] - ref.top5
        lines.append(f"{'difference':12}{d1:>+10.3f}{'n/a' if d5 is None else f'{d5:+.3f}':>10}")
    lines.extend(rows)
    t = metrics.get("timing", {})
    reused = metrics.get("shards", {}).get("reused_parts", 0)
    if reused:
        lines.append(f"reused {reused} of {metrics['shards']['total']} finished parts from an earlier run")
    if t and t.get("startup_s") is not None:
        lines.append(f"time: end-to-end {t['end_to_end_s']:.1f} s ({t['end_to_end_images_per_s']:.1f} img/s), "
                     f"prep {t['prep_images_per_s']:.1f} img/s, inference {t['infer_images_per_s']:.1f} img/s, "
                     f"startup {t['startup_s']:.1f} s")
    ran = _how_it_ran(metrics.get("workers") or [])
    if ran:
        lines.append(ran)
    worst = _worst_classes(metrics)
    if worst:
        lines.append("lowest top-1 classes: " + "; ".join(worst))
    return "\n".join(lines)


def _label_lines(metrics: dict) -> list[str]:
    info = metrics.get("labels") or {}
    if not info:
        return []
    counts = (f"labelled {metrics.get('labelled_all', 0)}, unlabelled {metrics.get('unlabelled', 0)}, "
              f"excluded {metrics.get('excluded', 0)}")
    if info.get("class_subset"):
        counts += f" (class outside the {info['class_subset']}-class subset)"
    lines = [f"labels: {info.get('source')} ({counts}); ReaL: {info.get('real_source')}"]
    lines.extend(note if note.startswith("WARNING") else f"NOTE: {note}" for note in info.get("notes", []))
    return lines


def _all_and_real_lines(metrics: dict) -> list[str]:
    lines = []
    if metrics.get("top1_all") is not None and \
            (metrics["top1_all"], metrics["top5_all"]) != (metrics["top1"], metrics["top5"]):
        missed = metrics["labelled_all"] - metrics["labelled"]
        lines.append(f"{'all':12}{_pct(metrics['top1_all']):>10}{_pct(metrics['top5_all']):>10}"
                     f"   (all {metrics['labelled_all']} labelled images; {missed} failures count as misses)")
    real = metrics.get("real")
    if real and real["scored"]:
        lines.append(f"{'ReaL':12}{_pct(real['top1']):>10}{_pct(real['top5']):>10}"
                     f"   ({real['scored']} scored; {real['empty_sets']} of {real['val_images']} val images "
                     "have no ReaL label)")
    return lines


def _how_it_ran(workers: list[dict]) -> str:
    """One line: the provider that ran, where the crops were normalised, and TF32 on a GPU."""
    seen = sorted({(w.get("providers") or ["?"])[0] + f", normalize {w.get('normalize', 'host')}"
                   + ("" if w.get("tf32") is None else f", TF32 {'on' if w['tf32'] else 'off'}")
                   for w in workers})
    return f"ran on: {'; '.join(seen)}" if seen else ""


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
