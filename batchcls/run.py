"""CLI `python -m batchcls.run job.yaml [--set FIELD=VALUE ...]`: parse, progress, exit codes."""

from __future__ import annotations

import argparse
import sys
import time

from .errors import BatchclsError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m batchcls.run",
                                description="Evaluate an image classifier over an image folder as the job file says.")
    p.add_argument("job", help="job YAML, e.g. jobs/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a job field, e.g. --set dataset.root=/data/val --set inference.workers=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (same as --set runtime.progress=false)")
    p.add_argument("--result-txt", metavar="FILE", help="also write the vendor's result.txt (eval_topk.py's input)")
    return p


def main(argv: list[str] | None = None) -> int:
    t_command = time.time()
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides) + (["runtime.progress=false"] if args.no_progress else [])
    try:
        from .config import load_job

        job = load_job(args.job, overrides)
        from .pipeline import run_job

        run_job(job, t_command=t_command, log=lambda m: print(m, flush=True))
        if args.result_txt:
            from .interop.dump import write_run_result_txt

            write_run_result_txt(job.output.dir, job.dataset.root, args.result_txt)
    except BatchclsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
