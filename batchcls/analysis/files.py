"""Atomic writes of report files (HTML, JSON): a temp name with the pid, then os.replace."""

from __future__ import annotations

import json
import os


def write_atomic(path: str, data: str | bytes) -> str:
    """Write `data` to `path` so that a reader sees the old file or the whole new one; returns `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str, data: dict) -> str:
    return write_atomic(path, json.dumps(data, indent=2) + "\n")
