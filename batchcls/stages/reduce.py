"""Reduce stage: a shard's results -> one Arrow record batch a sample -> an atomic Parquet part."""

from __future__ import annotations

import numpy as np

from ..data.shards import Shard
from ..schema import build_table, part_path, write_part


def reduce_shard(shard: Shard, result: dict, out_dir: str) -> str:
    """Write the part of `shard`; returns its path. Every sample of the shard gets exactly one row,
    in index order, whether it succeeded or failed."""
    indices = np.asarray(result["indices"])
    expected = np.array([s.index for s in shard.samples], dtype=np.int32)
    if not np.array_equal(indices, expected):
        raise AssertionError(f"shard {shard.id}: results are for other samples than the shard holds")
    table = build_table(
        indices=indices,
        paths=[s.path for s in shard.samples],
        labels=[s.label for s in shard.samples],
        errors=result["errors"],
        topk_ids=result["topk_ids"],
        topk_probs=result["topk_probs"],
        logits=result.get("logits"),
    )
    path = part_path(out_dir, shard.id)
    write_part(path, table)
    return path
