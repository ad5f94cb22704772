"""CLI `batchcls import-result result.txt -o DIR`: a vendor result.txt (vsx classification.py, vamp_npz_decode.py) into a dump."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Sequence

from .errors import BatchclsError

EXIT_USER_ERROR = 2


def import_result(path: str, out_dir: str, model: str | None, source: str, overwrite: bool, log=print) -> dict:
    """Each image of result.txt as a row (label from its synset folder, as eval_topk.py takes it)."""
    from .interop.dump import write_dump
    from .interop.vamp import read_result_txt
    from .zoo import find_zoo_row

    images = read_result_txt(path)
    rows = [{"index": i, "error": None, **img} for i, img in enumerate(images)]
    with open(path, "rb") as f:
        fingerprint = "result-" + hashlib.sha256(f.read()).hexdigest()[:20]
    job = {"imported": os.path.abspath(path), "model": model, "source": source}
    return write_dump(out_dir, rows, fingerprint=fingerprint, job=job, overwrite=overwrite,
                      title=f"{model or 'model'} ({source}), from {os.path.basename(path)}",
                      zoo_row=find_zoo_row(model, source) if model else None, log=log,
                      extra={"source": {"result_txt": os.path.abspath(path)}})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="batchcls import-result",
                                description="Read a vendor result.txt (5 lines per image) into a Parquet dump + report.")
    p.add_argument("result_txt")
    p.add_argument("-o", "--out", required=True, help="output folder (as output.dir of a run)")
    p.add_argument("--model", help="model name, e.g. dla34, for the reference row")
    p.add_argument("--source", default="custom", help="timm, ucbdrive or ppcls, for the reference row")
    p.add_argument("--overwrite", action="store_true", help="replace another run's predictions in --out")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        import_result(args.result_txt, args.out, args.model, args.source, args.overwrite)
    except BatchclsError as e:
        print(f"batchcls import-result: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
