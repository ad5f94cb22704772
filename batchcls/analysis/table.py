"""The seed's table (model x source) with the measured top-1/top-5 of every run found under a folder."""

from __future__ import annotations

import json
import os

from ..zoo import read_zoo

HEADERS = ["model", "source", "published top-1", "published top-5", "measured top-1", "measured top-5",
           "Δ top-1", "Δ top-5", "images", "preprocess", "run"]


def find_runs(root: str) -> list[tuple[str, dict]]:
    """(run folder relative to `root`, metrics) for every metrics.json below `root`, in path order."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if "metrics.json" in files:
            try:
                with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
                    found.append((os.path.relpath(folder, root), json.load(f)))
            except (OSError, ValueError):
                continue
            dirs[:] = [d for d in dirs if d != "predictions"]
    return found


def _fmt(v, signed=False) -> str:
    return "—" if v is None else format(v, "+.3f" if signed else ".3f")


def _measured(name: str, m: dict, ref_top1, ref_top5) -> list[str]:
    t1, t5 = m.get("top1"), m.get("top5")
    d1 = None if t1 is None or ref_top1 is None else t1 - ref_top1
    d5 = None if t5 is None or ref_top5 is None else t5 - ref_top5
    pre = m.get("preprocess") or {}
    return [_fmt(t1), _fmt(t5), _fmt(d1, True), _fmt(d5, True), str(m.get("labelled", "—")),
            str(pre.get("profile", "—")), name]


def runs_table(root: str) -> list[list[str]]:
    """One line per (zoo row, run) pair: the zoo's rows in its order (measured '—' where no run matches),
    then runs of models the table does not have."""
    runs = find_runs(root)
    used: set[int] = set()
    rows = []
    for z in read_zoo():
        head = [z.model, z.source, f"{z.top1:.3f}", f"{z.top5:.3f}"]
        matching = [i for i, (_, m) in enumerate(runs)
                    if ((m.get("job") or {}).get("model") or {}).get("name") == z.model
                    and ((m.get("job") or {}).get("model") or {}).get("source") == z.source]
        for i in matching:
            rows.append(head + _measured(runs[i][0], runs[i][1], z.top1, z.top5))
        used.update(matching)
        if not matching:
            rows.append(head + ["—"] * 7)
    for i, (name, m) in enumerate(runs):
        if i not in used:
            model = (m.get("job") or {}).get("model") or {}
            rows.append([str(model.get("name", "?")), str(model.get("source", "?")), "—", "—"]
                        + _measured(name, m, None, None))
    return rows


def format_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
