"""Softmax, top-k, and top-1/top-5 accuracy overall and per class (numpy only)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 of [N, C] logits, stable for large logits."""
    x = logits.astype(np.float32, copy=False)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def topk(logits: np.ndarray, k: int, scores: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    """(ids int16 [N, k], probs float32 [N, k]) in descending order of score; ties go to the lower class id.
    `scores` "logits" are softmaxed for the probabilities; "probs" (a model that ends in a softmax) are
    the probabilities already and are kept as they are."""
    x = logits.astype(np.float32, copy=False)
    k = min(k, x.shape[1])
    ids = topk_ids(x, k)
    if scores == "probs":
        return ids.astype(np.int16), np.take_along_axis(x, ids, axis=1).astype(np.float32)
    # softmax of the kept entries only: exp(x - max) / sum(exp(x - max)), the same float32 arithmetic
    # as softmax() on the whole row, without writing the [N, C] result.
    m = x.max(axis=1, keepdims=True)
    denom = np.exp(x - m).sum(axis=1, keepdims=True)
    probs = np.exp(np.take_along_axis(x, ids, axis=1) - m) / denom
    return ids.astype(np.int16), probs.astype(np.float32)


def topk_ids(x: np.ndarray, k: int) -> np.ndarray:
    """The ids of a stable descending argsort's first k columns, via argpartition (O(C) a row, not
    O(C log C)). A row whose k-th value is tied beyond the k kept, or is NaN, takes the full sort."""
    n, c = x.shape
    if k >= c or n == 0:
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    part = np.sort(np.argpartition(-x, k - 1, axis=1)[:, :k], axis=1)  # the k largest, in id order
    vals = np.take_along_axis(x, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # by value, ties by lower id
    ids = np.take_along_axis(part, order, axis=1)
    kth = np.take_along_axis(vals, order[:, -1:], axis=1)
    unsure = np.isnan(kth[:, 0]) | ((x >= kth).sum(axis=1) != k)
    if unsure.any():
        ids[unsure] = np.argsort(-x[unsure], axis=1, kind="stable")[:, :k]
    return ids


def accuracy(labels: np.ndarray, topk_ids: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Top-k accuracy in percent over the rows given (labels int [N], topk_ids [N, K]).

    Returns {'count': N, 'top1': %, 'top5': %}; a k larger than K counts hits within K and is reported
    as None, since it would understate the model.
    """
    n = int(labels.shape[0])
    out: dict = {"count": n}
    for k in ks:
        if n == 0 or k > topk_ids.shape[1]:
            out[f"top{k}"] = None
            continue
        hits = (topk_ids[:, :k] == labels[:, None]).any(axis=1)
        out[f"top{k}"] = float(100.0 * hits.sum() / n)
    return out


def per_class_accuracy(labels: np.ndarray, topk_ids: np.ndarray, num_classes: int) -> dict[int, dict]:
    """{class: {'count', 'top1', 'top5'}} for each class present in `labels`."""
    out = {}
    for c in np.unique(labels):
        m = labels == c
        out[int(c)] = accuracy(labels[m], topk_ids[m])
    return out


# The error of an image whose logits hold a NaN or an Inf (an fp16 overflow, a broken graph): never ranked.
NONFINITE_ERROR = "model output: non-finite logits"


def mark_nonfinite(errors: list[str], finite: np.ndarray) -> list[str]:
    """`errors` ('' = fine, one per sample) with NONFINITE_ERROR for the fine samples whose row of
    `finite` (bool [n_fine], in the order of the fine samples) is False."""
    if sum(1 for e in errors if not e) != len(finite):
        raise AssertionError(f"{len(finite)} model outputs for {sum(1 for e in errors if not e)} prepared images")
    out, pos = [], 0
    for e in errors:
        if e:
            out.append(e)
            continue
        out.append("" if finite[pos] else NONFINITE_ERROR)
        pos += 1
    return out


def subset_topk(logits: np.ndarray, k: int, subset: np.ndarray | None,
                scores: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    """top-k over the columns `subset` (sorted class indices) only, softmax over those columns (probabilities
    of a model ending in a softmax, `scores` "probs", are renormalised over them), ids given back as the
    model's own class indices (timm's --valid-labels); `subset` None = every class."""
    if subset is None:
        return topk(logits, k, scores)
    sub = logits[:, subset]
    if scores == "probs":
        sub = sub.astype(np.float32)
        sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1e-30)
    ids, probs = topk(sub, k, scores)
    return subset[ids].astype(np.int16), probs
