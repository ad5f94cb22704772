"""Paired statistics and calibration of predictions (numpy and math only): McNemar, paired-difference CI,
KL divergence, reliability bins with the expected calibration error, confusion counts."""

from __future__ import annotations

import math

import numpy as np

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054

# Calibration bins over the top-1 probability: 15 equal-width bins, as in Guo et al. (2017), the
# figure everyone quotes ECE with.
ECE_BINS = 15


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value on the discordant pairs: b (A right, B wrong) and c (A wrong, B right).
    Under H0 each discordant pair goes either way with probability 1/2: p = min(1, 2 P(X <= min(b, c))),
    X ~ Binomial(b + c, 1/2); summed in log space so that b + c of 50,000 does not underflow."""
    n, m = int(b) + int(c), min(int(b), int(c))
    if n == 0:
        return 1.0
    j = np.arange(1, m + 1, dtype=np.float64)
    # log C(n, k) for k = 0..m, as running sums of log((n - j + 1) / j).
    log_choose = np.concatenate([[0.0], np.cumsum(np.log(n - j + 1) - np.log(j))])
    log_terms = log_choose - n * math.log(2.0)
    top = log_terms.max()
    log_tail = top + math.log(np.exp(log_terms - top).sum())
    return float(min(1.0, 2.0 * math.exp(log_tail)))


def paired_difference(b: int, c: int, n: int) -> tuple[float, float, float] | None:
    """B - A in percentage points over n paired images, with its 95% Wald interval for a paired difference
    of proportions: d = (c - b) / n, se = sqrt(b + c - (c - b)^2 / n) / n. None when n is 0."""
    if n <= 0:
        return None
    d = (c - b) / n
    se = math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
    return 100.0 * d, 100.0 * (d - Z_95 * se), 100.0 * (d + Z_95 * se)


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 of [N, C] logits (float16 dumps gain nothing from less)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def kl_rows(logits_a: np.ndarray, logits_b: np.ndarray) -> np.ndarray:
    """KL(A || B) in nats per row of two [N, C] logit arrays: sum_c pA (log pA - log pB)."""
    la = logits_a.astype(np.float64)
    lb = logits_b.astype(np.float64)
    log_pa = la - la.max(axis=1, keepdims=True)
    log_pa -= np.log(np.exp(log_pa).sum(axis=1, keepdims=True))
    log_pb = lb - lb.max(axis=1, keepdims=True)
    log_pb -= np.log(np.exp(log_pb).sum(axis=1, keepdims=True))
    return np.maximum((np.exp(log_pa) * (log_pa - log_pb)).sum(axis=1), 0.0)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Reliability bins of top-1 probability (0..1) against top-1 correctness, bins (lo, hi] of equal width.

    Returns {'bins': [{'lo', 'hi', 'count', 'confidence', 'accuracy'}], 'ece': percent}, where
    ECE = sum_b n_b / N |accuracy_b - confidence_b|; ece is None for no rows."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    out, ece = [], 0.0
    for i in range(bins):
        m = idx == i
        n = int(m.sum())
        row = {"lo": i / bins, "hi": (i + 1) / bins, "count": n, "confidence": None, "accuracy": None}
        if n:
            row["confidence"] = float(conf[m].mean())
            row["accuracy"] = float(hit[m].mean())
            ece += n / conf.size * abs(row["accuracy"] - row["confidence"])
        out.append(row)
    return {"bins": out, "ece": 100.0 * ece if conf.size else None}


def confusions(labels: np.ndarray, top1: np.ndarray, n: int = 20) -> list[tuple[int, int, int]]:
    """The n most frequent (true, predicted, count) mistakes; ties in order of true then predicted class."""
    wrong = labels != top1
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([labels[wrong], top1[wrong]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:n]
    return [(int(pairs[i, 0]), int(pairs[i, 1]), int(counts[i])) for i in order]
