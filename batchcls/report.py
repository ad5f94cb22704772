"""CLI `batchcls report RUN [-o FILE]` and `batchcls report --table RUNS/ [-o FILE]`: a run's HTML report,
or the seed table with every run's measured accuracy (markdown on stdout, and HTML)."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import BatchclsError

EXIT_USER_ERROR = 2
TABLE_HTML = "table.html"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batchcls report", description=(
        "(Re)write a run's report.html, or with --table print the seed table (model x source) with the measured "
        "top-1/top-5 of every run found under a folder."))
    p.add_argument("run", nargs="?", help="a run's output.dir")
    p.add_argument("--table", metavar="RUNS", help="a folder of runs (searched recursively for metrics.json)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help=f"the HTML file (default: RUN/report.html, or RUNS/{TABLE_HTML} with --table)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if (args.run is None) == (args.table is None):
        p.error("give a run folder, or --table RUNS")
    try:
        if args.table:
            from .analysis.files import write_atomic
            from .analysis.html import render_runs_table
            from .analysis.table import HEADERS, format_markdown, runs_table

            if not os.path.isdir(args.table):
                raise BatchclsError(f"--table: {args.table!r} is not a folder; give the folder your runs write to")
            rows = runs_table(args.table)
            print(format_markdown(rows))
            out = write_atomic(args.output or os.path.join(args.table, TABLE_HTML),
                               render_runs_table(HEADERS, rows, args.table))
        else:
            from .analysis.runreport import write_run_report

            out = write_run_report(args.run, args.output)
        print(f"wrote {out}", file=sys.stderr)
    except BatchclsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
