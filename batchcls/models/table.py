"""The zoo table: each DLA architecture with our parameter and MAC counts beside the published references."""

from __future__ import annotations

import argparse
from typing import Sequence

from batchcls.models.arch import list_archs
from batchcls.models.shapes import count_macs, count_params
from batchcls.zoo import SOURCES, find_zoo_row

# Sources disagree on FLOPs (different counters); the timm row is the one our counts reproduce
# exactly (see shapes.table_flops_g), so the table shows that one.
FLOPS_SOURCE = "timm"


def zoo_table() -> list[dict]:
    """One row per architecture: params_m and macs_g (ours, 224 input), table_flops_g, and for each
    source in `batchcls.zoo.SOURCES` its `<source>_top1` / `<source>_top5` (None where it has no row)."""
    rows = []
    for arch in list_archs():
        ref = find_zoo_row(arch, FLOPS_SOURCE)
        row = {
            "arch": arch,
            "params_m": count_params(arch) / 1e6,
            "macs_g": count_macs(arch) / 1e9,
            "table_flops_g": ref.flops_g if ref else None,
        }
        for source in SOURCES:
            r = find_zoo_row(arch, source)
            row[f"{source}_top1"] = r.top1 if r else None
            row[f"{source}_top5"] = r.top5 if r else None
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Fixed-width text; blank cells where a source has no row."""
    head = ["arch", "params(M)", "MACs(G)", "FLOPs(G)"] + [f"{s} top1/top5" for s in SOURCES]
    lines = []
    for r in rows:
        cells = [r["arch"], f"{r['params_m']:.3f}", f"{r['macs_g']:.3f}", _num(r["table_flops_g"])]
        for s in SOURCES:
            top1, top5 = r[f"{s}_top1"], r[f"{s}_top5"]
            cells.append(f"{top1:.3f} / {top5:.3f}" if top1 is not None else "")
        lines.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*cells).rstrip() for cells in [head, *lines])


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the zoo table (`python -m batchcls.models`)."""
    argparse.ArgumentParser(
        prog="python -m batchcls.models",
        description="DLA zoo: our params/MACs (224 input) and the published FLOPs and accuracies. "
        "FLOPs(G) is the table's column, = thop ops x 2 / 0.9e9; true FLOPs ~ 2 x MACs.",
    ).parse_args(argv)
    print(format_table(zoo_table()))
    return 0
