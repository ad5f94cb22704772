"""Paired statistics of two prediction dumps (numpy/pyarrow only): rows paired by `path`, accuracy both
ways with a confidence interval and McNemar's test, agreement, divergence of the logits, per-class shifts."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..data.discover import imagenet_class_names
from ..errors import BatchclsError
from ..schema import PART_GLOB, read_predictions, write_part
from .stats import kl_rows, mcnemar_exact_p, paired_difference, softmax64

# Rows of logits turned into probabilities at once: 8192 x 1000 float64 is 65 MB per run.
LOGIT_CHUNK_ROWS = 8192
# Classes listed as lost / gained most, and failures listed by path, in the text and the JSON.
TOP_CLASSES = 10
FAILURE_EXAMPLES = 20


@dataclass
class RunPredictions:
    """One run's rows, in path order. labels -1 = unknown; topk_ids -1 where the row failed."""

    name: str  # the folder as given
    run_dir: str | None  # the folder holding metrics.json, when there is one
    table: pa.Table  # in path order, for the logits
    paths: np.ndarray
    labels: np.ndarray
    ok: np.ndarray
    errors: list
    topk_ids: np.ndarray
    has_logits: bool

    def metrics(self) -> dict:
        if self.run_dir is None:
            return {}
        try:
            with open(os.path.join(self.run_dir, "metrics.json"), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}


def _topk_matrix(col, ok: np.ndarray) -> np.ndarray:
    """list<int16> column -> int64 [N, K], -1 in the rows that are not ok."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
    k = flat.size // int(valid.sum()) if valid.any() else 0
    out = np.full((len(valid), k), -1, dtype=np.int64)
    out[valid] = flat.reshape(-1, k) if k else out[valid]
    out[~ok] = -1
    return out


def load_predictions(path: str) -> RunPredictions:
    """A run's output folder (with `predictions/`) or a folder of Parquet parts."""
    if os.path.isdir(os.path.join(path, "predictions")):
        run_dir, table = path, read_predictions(path)
    elif glob.glob(os.path.join(path, PART_GLOB)):
        parent = os.path.dirname(os.path.abspath(path))
        run_dir = parent if os.path.exists(os.path.join(parent, "metrics.json")) else None
        parts = sorted(glob.glob(os.path.join(path, PART_GLOB)))
        table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    else:
        raise BatchclsError(f"{path!r} holds no predictions: give a run's output.dir or its predictions/ folder")
    if table.num_rows == 0:
        raise BatchclsError(f"{path!r} holds no predictions: give a run's output.dir or its predictions/ folder")
    table = table.sort_by("path")
    paths = np.array(table["path"].to_pylist(), dtype=str)  # not object: sorting and set operations stay fast
    uniq, counts = np.unique(paths, return_counts=True)
    if (counts > 1).any():
        raise BatchclsError(f"{path!r}: {int((counts > 1).sum())} paths appear more than once (e.g. "
                            f"{uniq[counts > 1][0]!r}); its parts come from different runs")
    labels = pc.fill_null(table["label"], -1).to_numpy().astype(np.int64)
    ok = pc.and_(pc.is_null(table["error"]), pc.is_valid(table["topk_ids"])).to_numpy()
    has_logits = "logits" in table.column_names and \
        bool(pc.all(pc.or_(pc.is_valid(table["logits"]), pc.invert(pa.array(ok)))).as_py())
    return RunPredictions(path, run_dir, table, paths, labels,
                          ok, table["error"].to_pylist(), _topk_matrix(table["topk_ids"], ok), has_logits)


def pair_runs(a: RunPredictions, b: RunPredictions, intersect: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Row indices of A and of B for the same paths, and what was dropped. Refuses runs over different
    images unless `intersect`."""
    shared = set(a.paths.tolist()) & set(b.paths.tolist())
    only_a, only_b = a.paths.size - len(shared), b.paths.size - len(shared)
    if (only_a or only_b) and not intersect:
        raise BatchclsError(f"the runs are not over the same images: {only_a} only in A ({a.name}), {only_b} only "
                            f"in B ({b.name}); compare the images they share with --intersect")
    _, ia, ib = np.intersect1d(a.paths, b.paths, assume_unique=True, return_indices=True)
    if ia.size == 0:
        raise BatchclsError(f"the runs {a.name!r} and {b.name!r} share no image paths")
    la, lb = a.labels[ia], b.labels[ib]
    clash = (la >= 0) & (lb >= 0) & (la != lb)
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        raise BatchclsError(f"labels differ for {int(clash.sum())} paired images (e.g. {a.paths[ia[i]]!r}: "
                            f"A {la[i]}, B {lb[i]}); the runs used different label files")
    return ia, ib, {"only_a": only_a, "only_b": only_b}


def _two_by_two(hit_a: np.ndarray, hit_b: np.ndarray) -> dict:
    """The 2x2 table, B - A with its 95% interval, and McNemar's exact p-value (percent, points)."""
    n = int(hit_a.size)
    both, a_only = int((hit_a & hit_b).sum()), int((hit_a & ~hit_b).sum())
    b_only, neither = int((~hit_a & hit_b).sum()), int((~hit_a & ~hit_b).sum())
    diff = paired_difference(a_only, b_only, n)
    return {"count": n, "a": 100.0 * (both + a_only) / n if n else None,
            "b": 100.0 * (both + b_only) / n if n else None,
            "diff": None if diff is None else diff[0], "ci95": None if diff is None else [diff[1], diff[2]],
            "table": {"both_right": both, "a_right_b_wrong": a_only, "a_wrong_b_right": b_only,
                      "both_wrong": neither},
            "mcnemar_p": mcnemar_exact_p(a_only, b_only) if n else None}


def _hits(ids: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return (ids[:, :k] == labels[:, None]).any(axis=1) if ids.shape[1] >= k else np.zeros(len(labels), bool)


def _accuracy_block(a, b, ia, ib, labels) -> dict:
    """top-1/top-5 over labelled images both got (paired), and over all labelled ones, failures as misses."""
    ok = a.ok[ia] & b.ok[ib]
    lab = labels >= 0
    k = min(a.topk_ids.shape[1], b.topk_ids.shape[1])
    out = {"labelled": int(lab.sum()), "labelled_both_ok": int((lab & ok).sum())}
    for kk in (1, 5):
        if kk > k or not lab.any():
            out[f"top{kk}"] = out[f"top{kk}_all"] = None
            continue
        ha, hb = _hits(a.topk_ids[ia], labels, kk), _hits(b.topk_ids[ib], labels, kk)
        both = lab & ok
        out[f"top{kk}"] = _two_by_two(ha[both], hb[both]) if both.any() else None
        diff_all = paired_difference(int((ha & ~hb)[lab].sum()), int((~ha & hb)[lab].sum()), int(lab.sum()))
        out[f"top{kk}_all"] = {"count": int(lab.sum()), "a": float(100.0 * ha[lab].mean()),
                               "b": float(100.0 * hb[lab].mean()),
                               "diff": diff_all[0], "ci95": [diff_all[1], diff_all[2]]}
    return out


def _agreement(a, b, ia, ib) -> dict:
    """top-1 and top-5-set agreement (percent) over images both got; `top1_all` counts an image that only one
    run got as a disagreement (images both failed are left out)."""
    ok = a.ok[ia] & b.ok[ib]
    either = a.ok[ia] | b.ok[ib]
    ta, tb = a.topk_ids[ia], b.topk_ids[ib]
    same1 = ok & (ta[:, 0] == tb[:, 0])
    k = min(ta.shape[1], tb.shape[1], 5)
    same5 = ok & (np.sort(ta[:, :k], axis=1) == np.sort(tb[:, :k], axis=1)).all(axis=1)
    n = int(ok.sum())
    return {"count": n, "top1": 100.0 * same1.sum() / n if n else None,
            "top5_set": 100.0 * same5.sum() / n if n and k == 5 else None,
            "count_any": int(either.sum()), "top1_all": 100.0 * same1.sum() / either.sum() if either.any() else None}


def _logit_rows(run: RunPredictions, idx: np.ndarray) -> np.ndarray:
    col = run.table["logits"].take(pa.array(idx)).combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(idx), -1)


def _divergence(a, b, ia, ib) -> dict | None:
    """Mean and max KL(A || B) (nats), and max / mean |pA - pB| of A's top-1 class, over images both got."""
    if not (a.has_logits and b.has_logits):
        return None
    both = np.flatnonzero(a.ok[ia] & b.ok[ib])
    if both.size == 0:
        return None
    kl, dp = [], []
    for s in range(0, both.size, LOGIT_CHUNK_ROWS):
        rows = both[s:s + LOGIT_CHUNK_ROWS]
        la, lb = _logit_rows(a, ia[rows]), _logit_rows(b, ib[rows])
        if la.shape != lb.shape:
            return None
        kl.append(kl_rows(la, lb))
        pa_, pb_ = softmax64(la), softmax64(lb)
        top = pa_.argmax(axis=1)
        dp.append(np.abs(pa_[np.arange(len(rows)), top] - pb_[np.arange(len(rows)), top]))
    kl_all, dp_all = np.concatenate(kl), np.concatenate(dp)
    return {"count": int(both.size), "kl_mean": float(kl_all.mean()), "kl_max": float(kl_all.max()),
            "top1_prob_abs_diff_max": float(dp_all.max()), "top1_prob_abs_diff_mean": float(dp_all.mean())}


def class_name(c: int) -> str:
    names = imagenet_class_names()
    return names[c].split(",")[0] if 0 <= c < len(names) else f"class {c}"


def _per_class(a, b, ia, ib, labels) -> list[dict]:
    """Per-class top-1 of A and B over the labelled images both got, B - A in points, worst shift first."""
    both = (labels >= 0) & a.ok[ia] & b.ok[ib]
    lab = labels[both]
    ha = a.topk_ids[ia][both, 0] == lab
    hb = b.topk_ids[ib][both, 0] == lab
    rows = []
    for c in np.unique(lab):
        m = lab == c
        ta, tb = float(100.0 * ha[m].mean()), float(100.0 * hb[m].mean())
        rows.append({"class": int(c), "name": class_name(int(c)), "count": int(m.sum()), "a": ta, "b": tb,
                     "delta": tb - ta})
    return sorted(rows, key=lambda r: (r["delta"], r["class"]))


def _failures(a, b, ia, ib) -> dict:
    fa, fb = ~a.ok[ia], ~b.ok[ib]

    def side(run, idx, mask):
        rows = idx[mask]
        reasons: dict[str, int] = {}
        for i in rows:
            e = run.errors[i] or "no prediction"
            key = e.split(":")[1].strip() if e.count(":") >= 1 else e
            reasons[key] = reasons.get(key, 0) + 1
        return {"count": int(rows.size), "by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                "examples": [[str(run.paths[i]), run.errors[i]] for i in rows[:FAILURE_EXAMPLES]]}

    return {"only_a": side(a, ia, fa & ~fb), "only_b": side(b, ib, fb & ~fa), "both": int((fa & fb).sum())}


def compare_runs(a: RunPredictions, b: RunPredictions, intersect: bool = False) -> dict:
    """Every figure of `batchcls compare` (percent for accuracies and agreement, points for differences)."""
    ia, ib, dropped = pair_runs(a, b, intersect)
    labels = np.where(a.labels[ia] >= 0, a.labels[ia], b.labels[ib])
    per_class = _per_class(a, b, ia, ib, labels)
    result = {"a": _describe(a), "b": _describe(b), "paired": int(ia.size), "dropped": dropped,
              **_accuracy_block(a, b, ia, ib, labels), "agreement": _agreement(a, b, ia, ib),
              "logits": _divergence(a, b, ia, ib), "failures": _failures(a, b, ia, ib),
              "classes": {"lost": [r for r in per_class if r["delta"] < 0][:TOP_CLASSES],
                          "gained": [r for r in reversed(per_class) if r["delta"] > 0][:TOP_CLASSES],
                          "per_class": per_class}}
    result["_pairs"] = (ia, ib, labels)  # for --flips; dropped before JSON
    return result


def _describe(run: RunPredictions) -> dict:
    m = run.metrics()
    job = m.get("job") or {}
    model = job.get("model") or {}
    return {"source": run.name, "images": int(run.paths.size), "failed": int((~run.ok).sum()),
            "model": model.get("name"), "model_source": model.get("source"),
            "preprocess": m.get("preprocess"), "precision": (m.get("deploy") or {}).get("precision") or m.get("precision"), "logits": run.has_logits}


def write_flips(path: str, a: RunPredictions, b: RunPredictions, result: dict) -> int:
    """The discordant images as Parquet (path, label, kind, both top-k lists); with labels, those right in one
    run and wrong in the other, without labels, those whose top-1 differs. Returns the row count."""
    ia, ib, labels = result["_pairs"]
    ok = a.ok[ia] & b.ok[ib]
    ta, tb = a.topk_ids[ia], b.topk_ids[ib]
    ra, rb = ta[:, 0] == labels, tb[:, 0] == labels
    labelled = ok & (labels >= 0)
    mask = (labelled & (ra != rb)) | (ok & (labels < 0) & (ta[:, 0] != tb[:, 0]))
    kind = np.where(labels < 0, "top-1 differs", np.where(ra, "A right, B wrong", "A wrong, B right"))
    sel = np.flatnonzero(mask)
    probs = {s: r.table["topk_probs"].take(pa.array(i[sel])) for s, r, i in (("a", a, ia), ("b", b, ib))}
    table = pa.table({
        "path": pa.array(a.paths[ia][sel].tolist(), pa.string()),
        "label": pa.array([int(x) if x >= 0 else None for x in labels[sel]], pa.int16()),
        "kind": pa.array(kind[sel].tolist(), pa.string()),
        "a_topk_ids": pa.array(ta[sel].tolist(), pa.list_(pa.int16())), "a_topk_probs": probs["a"],
        "b_topk_ids": pa.array(tb[sel].tolist(), pa.list_(pa.int16())), "b_topk_probs": probs["b"]})
    write_part(os.path.abspath(path), table)
    return int(sel.size)
