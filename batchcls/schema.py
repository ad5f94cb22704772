"""The one Arrow schema of an output row (ok or error), and the atomic Parquet part writer and reader."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PART_GLOB = "part-*.parquet"


def prediction_schema(num_classes: int | None = None) -> pa.Schema:
    """index, path, label, topk_ids, topk_probs, error; plus logits (float16 x num_classes) when given."""
    fields = [
        pa.field("index", pa.int32(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int16()),
        pa.field("topk_ids", pa.list_(pa.int16())),
        pa.field("topk_probs", pa.list_(pa.float32())),
        pa.field("error", pa.string()),
    ]
    if num_classes:
        fields.append(pa.field("logits", pa.list_(pa.float16(), num_classes)))
    return pa.schema(fields)


def _list_column(values: np.ndarray, ok: np.ndarray, typ: pa.DataType) -> pa.Array:
    """[n_ok, k] values scattered into n rows of list<typ>, null where the sample failed."""
    n, k = ok.shape[0], values.shape[1] if values.ndim == 2 else 0
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(ok.astype(np.int32) * k)
    flat = pa.array(values.reshape(-1), type=typ)
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(~ok))


def build_table(indices, paths, labels, errors, topk_ids, topk_probs, logits=None) -> pa.Table:
    """One row per sample of a shard. `indices`, `paths`, `labels` (None = unknown), `errors` ('' or None = fine)
    have one entry per sample; `topk_ids`/`topk_probs` [n_ok, k] and `logits` [n_ok, C] cover the fine ones, in order."""
    ok = np.array([not e for e in errors], dtype=bool)
    cols = {
        "index": pa.array(np.asarray(indices, dtype=np.int32)),
        "path": pa.array(list(paths), type=pa.string()),
        "label": pa.array(list(labels), type=pa.int16()),
        "topk_ids": _list_column(np.asarray(topk_ids, dtype=np.int16), ok, pa.int16()),
        "topk_probs": _list_column(np.asarray(topk_probs, dtype=np.float32), ok, pa.float32()),
        "error": pa.array([e or None for e in errors], type=pa.string()),
    }
    num_classes = None
    if logits is not None:
        num_classes = int(logits.shape[1])
        full = np.zeros((len(ok), num_classes), dtype=np.float16)
        full[ok] = logits.astype(np.float16)
        cols["logits"] = pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), num_classes,
                                                           mask=pa.array(~ok))
    return pa.table(cols, schema=prediction_schema(num_classes))


def part_path(out_dir: str, shard_id: int) -> str:
    return os.path.join(out_dir, "predictions", f"part-{shard_id:05d}.parquet")


def write_part(path: str, table: pa.Table) -> None:
    """Write a Parquet part atomically: a reader sees the whole part or none of it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_part_rows(path: str) -> int | None:
    """Row count of a finished part, or None when it is unreadable (then its shard is redone)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - any damage means: redo the shard
        return None


def read_predictions(out_dir: str, columns: list[str] | None = None) -> pa.Table:
    """All parts of a run, concatenated in shard order."""
    parts = sorted(glob.glob(os.path.join(out_dir, "predictions", PART_GLOB)))
    if not parts:
        return prediction_schema().empty_table()
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in parts], promote_options="default")
