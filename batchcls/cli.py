"""CLI `batchcls run|models|export`: one entry point for the package's commands."""

from __future__ import annotations

import sys

COMMANDS = {
    "run": ("batchcls.run", "evaluate a model as a job file says"),
    "models": ("batchcls.models.table", "print the DLA model zoo table"),
    "export": ("batchcls.models.export", "build a DLA model as ONNX from its weights"),
    "bench": ("batchcls.bench", "throughput and latency of a model on synthetic input (N workers, batch B)"),
    "vamp": ("batchcls.vampcli", "the vendor's vamp: export its input npz + datalist, import its outputs"),
    "import-result": ("batchcls.importresult", "read a vendor result.txt into a dump and report"),
    "compare": ("batchcls.compare", "compare two runs image by image, with a verdict against a gate (exit 0/1)"),
    "report": ("batchcls.report", "write a run's HTML report, or the seed table of measured runs (--table)"),
    "doctor": ("batchcls.doctor", "what this host can run (onnxruntime, GPUs, CUDA libraries, Ray) and what to fix"),
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
