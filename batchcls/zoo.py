"""The model zoo as a table: reference rows `<arch>.<source>` with their published accuracy and preprocessing."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

SOURCES = ("timm", "ucbdrive", "ppcls")

# Which preprocessing profile each source's published accuracy was measured with.
SOURCE_PROFILE = {"timm": "timm", "ucbdrive": "timm", "ppcls": "ppcls"}


@dataclass(frozen=True)
class ZooRow:
    """One row of the published table (seed DLANet.md): accuracy in percent, FLOPs in G, params in M."""

    model: str
    source: str
    top1: float
    top5: float
    flops_g: float
    params_m: float
    input_size: int
    source_url: str

    @property
    def id(self) -> str:
        return f"{self.model}.{self.source}"

    @property
    def profile(self) -> str:
        return SOURCE_PROFILE[self.source]


@lru_cache(maxsize=1)
def read_zoo() -> tuple[ZooRow, ...]:
    """All rows of the shipped `dla_zoo.csv`, in the table's order."""
    text = resources.files("batchcls").joinpath("resources/dla_zoo.csv").read_text()
    rows = []
    for r in csv.DictReader(text.splitlines()):
        rows.append(
            ZooRow(
                model=r["model"],
                source=r["source"],
                top1=float(r["top1"]),
                top5=float(r["top5"]),
                flops_g=float(r["flops_g"]),
                params_m=float(r["params_m"]),
                input_size=int(r["input_size"]),
                source_url=r["source_url"],
            )
        )
    return tuple(rows)


def find_zoo_row(model: str, source: str) -> ZooRow | None:
    """The reference row for `model` (e.g. 'dla34') from `source` ('timm', 'ucbdrive', 'ppcls'), or None."""
    for row in read_zoo():
        if row.model == model and row.source == source:
            return row
    return None


def zoo_models() -> tuple[str, ...]:
    """Architecture names of the table, first appearance order."""
    seen: dict[str, None] = {}
    for row in read_zoo():
        seen.setdefault(row.model, None)
    return tuple(seen)
