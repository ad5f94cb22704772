"""Export a DLA architecture to an ONNX file (atomic write), a build cache keyed by weights, and the export CLI."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import onnx

from batchcls.errors import BatchclsError
from batchcls.models.arch import DlaArch, get_arch, list_archs
from batchcls.models.build import BUILDER_VERSION, DEFAULT_OPSET, build_onnx
from batchcls.models.shapes import count_macs, count_params
from batchcls.models.weights import RANDOM_PREFIX, parse_seed, read_weights

# Read weights files in 1 MiB pieces when hashing them for the cache key.
HASH_CHUNK_BYTES = 1 << 20


def export_onnx(
    arch: DlaArch | str,
    weights_spec: str | os.PathLike,
    out_path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    *,
    dynamic_size: bool = False,
) -> dict:
    """Build `arch` with the weights of `weights_spec` (see `read_weights`), check it with
    `onnx.checker`, and write it to `out_path` through a temp file and `os.replace`.

    Returns a summary: arch, weights, path, opset, params (trainable, before folding), macs (per
    224 image), size_bytes, ignored_tensors (checkpoint keys not used) and seconds (wall time).
    """
    start = time.perf_counter()
    arch = get_arch(arch)
    loaded = read_weights(weights_spec, arch)
    model = build_onnx(arch, loaded.tensors, opset=opset, dynamic_size=dynamic_size)
    onnx.checker.check_model(model)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp.{os.getpid()}")
    try:
        onnx.save_model(model, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "arch": arch.name,
        "weights": os.fspath(weights_spec),
        "path": os.fspath(out),
        "opset": opset,
        "params": count_params(arch),
        "macs": count_macs(arch),
        "size_bytes": out.stat().st_size,
        "ignored_tensors": len(loaded.ignored),
        "seconds": round(time.perf_counter() - start, 3),
    }


def cache_key(arch: DlaArch | str, weights_spec: str | os.PathLike, opset: int = DEFAULT_OPSET) -> str:
    """Hex digest of what decides the ONNX bytes: arch, builder version, opset and the weights'
    content (the sha256 of the file, or the `random:SEED` spec itself)."""
    arch = get_arch(arch)
    spec = os.fspath(weights_spec)
    if spec.startswith(RANDOM_PREFIX):
        weights_id = f"{RANDOM_PREFIX}{parse_seed(spec)}"
    elif os.path.isfile(spec):
        digest = hashlib.sha256()
        with open(spec, "rb") as f:
            while chunk := f.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
        weights_id = digest.hexdigest()
    else:
        raise BatchclsError(f"weights file not found: {spec}")
    text = f"{arch.name}|builder={BUILDER_VERSION}|opset={opset}|{weights_id}"
    return hashlib.sha256(text.encode()).hexdigest()


def cached_onnx(
    arch: DlaArch | str, weights_spec: str | os.PathLike, cache_dir: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Path of `<cache_dir>/<arch>-<key>.onnx`, exported on first use (see `cache_key`).

    Concurrent first uses may both build; the atomic rename leaves one complete file either way.
    """
    arch = get_arch(arch)
    path = Path(cache_dir) / f"{arch.name}-{cache_key(arch, weights_spec, opset)[:16]}.onnx"
    if not path.is_file():
        export_onnx(arch, weights_spec, path, opset)
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise BatchclsError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="batchcls export", description="Build a timm DLA as an ONNX file (BatchNorm folded).")
    p.add_argument("arch", help=f"architecture: {', '.join(list_archs())}")
    p.add_argument("--weights", required=True, help="a .safetensors file, a .pth file (needs torch) or random:SEED")
    p.add_argument("-o", "--output", help="ONNX file to write (default: <arch>.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--dynamic-size", action="store_true", help="leave height and width dynamic (multiples of 32)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`batchcls export ARCH --weights SPEC [-o OUT]`: print the summary; exit 2 with one line on a user error."""
    try:
        args = _parser().parse_args(argv)
        summary = export_onnx(
            args.arch, args.weights, args.output or f"{args.arch}.onnx", args.opset,
            dynamic_size=args.dynamic_size,
        )
    except BatchclsError as e:
        print(f"batchcls export: error: {e}", file=sys.stderr)
        return 2
    for key, value in summary.items():
        print(f"{key:16s} {value}")
    return 0
