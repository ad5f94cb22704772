"""The report's figures with matplotlib (Agg backend), each returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: figures are rendered to PNG only
from matplotlib.figure import Figure  # noqa: E402 - after the backend is chosen

import numpy as np  # noqa: E402

DPI = 100
COLOR_A, COLOR_B = "#1f77b4", "#d62728"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def per_class_histogram(top1: list[float], overall: float | None) -> bytes:
    """Histogram of the classes' top-1 (percent), the overall top-1 marked."""
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    ax.hist(top1, bins=np.linspace(0, 100, 21), color=COLOR_A, edgecolor="white")
    if overall is not None:
        ax.axvline(overall, color="black", linestyle="--", label=f"overall {overall:.2f}%")
        ax.legend(loc="upper right")
    ax.set_xlabel("per-class top-1 (%)")
    ax.set_ylabel("classes")
    ax.set_xlim(0, 100)
    return _png(fig)


def reliability_diagram(bins: list[dict], ece: float | None, label: str = "") -> bytes:
    """Accuracy against mean top-1 probability per bin (bars), the diagonal, and the count per bin."""
    fig = Figure(figsize=(7.5, 3.6))
    ax, ax_n = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lo = np.array([b["lo"] for b in bins])
    width = bins[0]["hi"] - bins[0]["lo"]
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["confidence"] is not None else np.nan for b in bins])
    ax.bar(lo, acc, width=width, align="edge", color=COLOR_A, edgecolor="white", label="accuracy")
    ax.plot(conf, acc, "o", color="black", markersize=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 probability"), ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"{label}ECE {ece:.2f}%" if ece is not None else label or "calibration")
    ax.legend(loc="lower right", fontsize=8)
    counts = np.array([b["count"] for b in bins])
    ax_n.bar(lo, counts, width=width, align="edge", color="grey", edgecolor="white")
    if counts.max() > 50 * max(counts[counts > 0].min(), 1):
        ax_n.set_yscale("log")  # a few images in the confident bins still show beside thousands in one
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("top-1 probability"), ax_n.set_ylabel("images")
    ax_n.set_title("images per bin")
    return _png(fig)


def throughput_over_time(series: dict, marks: list[tuple[float, str]]) -> bytes:
    """Images/s of prep and inference (top) and images finished (bottom) against seconds since the command
    started; `marks` are (s, label) vertical lines (first inference, results written, Ray stopped)."""
    fig = Figure(figsize=(7.5, 5.2))
    ax, ax_done = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    empty = (np.zeros(0), np.zeros(0))
    for name, color, label in (("prep", "#2ca02c", "prep"), ("infer", COLOR_A, "inference")):
        t, rate = series.get(name, empty)
        if len(t):
            ax.step(t, rate, where="post", color=color, label=label)
        t, done = series.get(f"{name}_done", empty)
        if len(t):
            ax_done.step(np.concatenate([[t[0]], t]), np.concatenate([[0], done]), where="post", color=color)
    styles = ["--", ":", "-."]
    for i, (x, label) in enumerate(marks):
        for a in (ax, ax_done):
            a.axvline(x, color="black", linestyle=styles[i % 3], linewidth=1,
                      label=f"{label} ({x:.1f} s)" if a is ax else None)
    for a in (ax, ax_done):
        a.set_xlim(left=0)
        a.set_ylim(0, max(a.get_ylim()[1], 1.0) * 1.1)  # a flat rate is drawn below the frame, not on it
    ax.set_ylabel("images/s")
    ax_done.set_ylabel("images finished")
    ax_done.set_xlabel("seconds since the command started")
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def class_deltas(per_class: list[dict]) -> bytes:
    """Per-class top-1 change B - A (points), classes sorted by it."""
    fig = Figure(figsize=(6.2, 4.0))
    ax = fig.add_subplot()
    d = np.array([r["delta"] for r in per_class])
    colors = np.where(d < 0, COLOR_B, np.where(d > 0, "#2ca02c", "grey"))
    ax.bar(np.arange(d.size), d, width=1.0, color=colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"classes ({d.size}), sorted by change"), ax.set_ylabel("B - A top-1 (points)")
    ax.set_xlim(-0.5, max(d.size - 0.5, 0.5))
    return _png(fig)


def class_scatter(per_class: list[dict]) -> bytes:
    """Per-class top-1 of B against A (percent), the diagonal for no change."""
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    ax.scatter([r["a"] for r in per_class], [r["b"] for r in per_class], s=8, color=COLOR_A, alpha=0.6)
    ax.plot([0, 100], [0, 100], color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, 100), ax.set_ylim(0, 100)
    ax.set_xlabel("A per-class top-1 (%)"), ax.set_ylabel("B per-class top-1 (%)")
    return _png(fig)
