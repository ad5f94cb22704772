"""CLI `batchcls compare RUN_A RUN_B`: paired accuracy of two runs over the same images, and a verdict against
a gate (exit 0 when it holds, 1 when it fails, 2 for a usage error)."""

from __future__ import annotations

import argparse
import sys

from .errors import BatchclsError

EXIT_GATE_FAILED = 1
EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batchcls compare", description=(
        "Compare two runs image by image (rows paired by path): top-1/top-5 of each, B - A with a 95%% interval "
        "and McNemar's exact test, agreement, logit divergence, per-class shifts, and a verdict against a gate."))
    p.add_argument("run_a", help="the reference run: its output.dir, or its predictions/ folder")
    p.add_argument("run_b", help="the run under test")
    p.add_argument("--intersect", action="store_true", help="compare only the images both runs have")
    p.add_argument("--max-drop", type=float, metavar="P", help="gate: B's top-1 at most P points below A's")
    p.add_argument("--min-ratio", type=float, metavar="R", help="gate: B's top-1 >= R x A's (MLPerf: 0.99)")
    p.add_argument("--min-agreement", type=float, metavar="PCT", help="gate: top-1 agreement >= PCT percent")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument("--html", metavar="FILE", help="write the comparison as one self-contained HTML file")
    p.add_argument("--flips", metavar="FILE.parquet", help="write the discordant images (path, label, both top-k)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .analysis.compare import compare_runs, load_predictions, write_flips
        from .analysis.files import write_json
        from .analysis.verdict import apply_gate, format_compare

        a, b = load_predictions(args.run_a), load_predictions(args.run_b)
        result = compare_runs(a, b, intersect=args.intersect)
        verdict = apply_gate(result, args.max_drop, args.min_ratio, args.min_agreement)
        print(format_compare(result, verdict), flush=True)
        if args.flips:
            n = write_flips(args.flips, a, b, result)
            print(f"wrote {n} discordant images to {args.flips}", file=sys.stderr)
        result.pop("_pairs")
        result["verdict"] = verdict
        if args.json:
            write_json(args.json, result)
        if args.html:
            from .analysis.html import render_compare_report
            from .analysis.files import write_atomic

            write_atomic(args.html, render_compare_report(result))
            print(f"wrote {args.html}", file=sys.stderr)
    except BatchclsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_GATE_FAILED if verdict["passed"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
