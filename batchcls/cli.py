"""CLI `batchcls run|models|export`: one entry point for the package's commands."""

from __future__ import annotations

import sys

COMMANDS = {
    "run": ("batchcls.run", "evaluate a model as a job file says"),
    "models": ("batchcls.models.table", "print the DLA model zoo table"),
    "export": ("batchcls.models.export", "build a DLA model as ONNX from its weights"),
    "bench": ("batchcls.bench", "throughput and latency of a model on synthetic input (N workers, batch B)"),
    "quantize": ("batchcls.calibrate", "build a job's model as int8 (calibrated on its dataset) or fp16"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:8} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: batchcls COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
