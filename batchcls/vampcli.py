"""CLI `batchcls vamp export|import`: the vendor's vamp input npz + datalist from a job, and vamp's outputs back into a dump (imports ray)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Sequence

from tqdm import tqdm

from .errors import BatchclsError
from .interop.vamp import (DATALIST, EXPORT_ERRORS, export_chunk, export_name, looks_like_probs, read_datalist,
                           read_outputs, write_lines)

EXIT_USER_ERROR = 2
# Images per export task: at ~3 ms each a task lasts ~0.2 s, long beside Ray's per-task cost, short
# enough that the progress bar moves and the two CPUs share the work evenly.
EXPORT_CHUNK = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise BatchclsError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="batchcls vamp", description="The vendor's vamp tool: its input files from a job, its "
                                                  "output files back into batchcls's dump and report.")
    sub = p.add_subparsers(dest="action", required=True)
    e = sub.add_parser("export", help="one full-resolution npz per image + datalist.txt, as image2npz.py writes")
    e.add_argument("job")
    e.add_argument("-o", "--out", required=True, help="folder for the npz files and datalist.txt")
    i = sub.add_parser("import", help="vamp's --path_output npz files -> Parquet dump, metrics.json, report")
    i.add_argument("job")
    i.add_argument("--outputs", required=True, help="vamp's --path_output folder")
    i.add_argument("--datalist", help="the datalist given to vamp (default: datalist.txt beside --outputs)")
    i.add_argument("--result-txt", help="also write eval_topk.py's result.txt here")
    for q in (e, i):
        q.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
        q.add_argument("--no-progress", action="store_true")
    return p


def _samples(job):
    from .data.discover import discover, select

    ds = discover(job.dataset.root, job.dataset.labels, job.dataset.layout)
    return ds, select(ds.samples, job.dataset.limit)


def export(job, out: str, progress: bool, log=print) -> dict:
    """Write the npz files in parallel Ray tasks on this host, then DIR/datalist.txt (sample order) and
    export_errors.txt."""
    import ray

    from .cluster import connect

    _, samples = _samples(job)
    root = job.dataset.root
    items = [(s.index, s.path, export_name(s, root)) for s in samples]
    chunks = [items[i:i + EXPORT_CHUNK] for i in range(0, len(items), EXPORT_CHUNK)]
    started = connect(job.runtime.ray_address, job.runtime.num_cpus, resources=job.runtime.resources)
    results: dict[int, tuple[str, str]] = {}
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # The files go to DIR on this host (vamp reads them by the datalist's absolute paths): tasks stay here.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        task = ray.remote(export_chunk).options(num_cpus=1, scheduling_strategy=here)
        limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending, todo = [], list(chunks)
        with tqdm(total=len(items), unit="img", desc="export", disable=not progress, file=sys.stderr) as bar:
            while todo or pending:
                while todo and len(pending) < limit:
                    pending.append(task.remote(os.path.abspath(root), os.path.abspath(out), todo.pop(0)))
                done, pending = ray.wait(pending, num_returns=1)
                finished = ray.get(done[0])
                for index, npz, err in finished:
                    results[index] = (npz, err)
                bar.update(len(finished))
    finally:
        if started:
            ray.shutdown()
    by_index = {s.index: s for s in samples}
    datalist = [results[s.index][0] for s in samples if not results[s.index][1]]
    errors = [f"{by_index[i].path}\t{results[i][1]}" for i in sorted(results) if results[i][1]]
    write_lines(os.path.join(out, DATALIST), datalist)
    write_lines(os.path.join(out, EXPORT_ERRORS), errors)
    return {"images": len(samples), "written": len(datalist), "failed": len(errors)}


def vamp_command(job, out: str) -> str:
    """The vamp accuracy run for this export (the seed's step 4.3), then the import."""
    from .transforms.vdsp import resolve_vdsp_params

    prefix = job.model.vacc or "PATH/TO/COMPILED/mod"
    try:
        vdsp = resolve_vdsp_params(job.preprocess.vdsp_params or f"{job.model.source}-{job.model.name}")
    except ValueError:
        vdsp = "PATH/TO/MODEL-vdsp_params.json"
    outputs = os.path.join(os.path.abspath(out), "output")
    return (f"vamp -m {prefix} --vdsp_params {vdsp} -i 8 -p 1 -b {job.inference.batch_size} "
            f"--datalist {os.path.abspath(os.path.join(out, DATALIST))} --path_output {outputs}\n"
            f"batchcls vamp import {job.path} --outputs {outputs}")


def import_outputs(job, outputs: str, datalist_path: str | None, log=print) -> dict:
    """vamp's outputs paired with the datalist by sorted name -> rows of the job's samples -> the dump."""
    from .interop.dump import write_dump
    from .metrics import topk
    from .zoo import find_zoo_row

    datalist_path = datalist_path or os.path.join(os.path.dirname(os.path.abspath(outputs.rstrip("/"))), DATALIST)
    lines = read_datalist(datalist_path)
    scores = read_outputs(outputs, len(lines))
    kind = job.model.outputs
    if kind == "auto":
        kind = "probs" if looks_like_probs(scores) else "logits"
        log(f"model.outputs: assumed {kind} (rows {'are >= 0 and sum' if kind == 'probs' else 'do not sum'} to 1); "
            "set model.outputs to say so")
    ids, probs = topk(scores, job.output.topk, kind)
    _, samples = _samples(job)
    by_name = {export_name(s, job.dataset.root): s for s in samples}
    rows: dict[int, dict] = {}
    for n, line in enumerate(lines):
        key = "/".join(line.replace("\\", "/").split("/")[-2:])
        s = by_name.get(key)
        if s is None:
            raise BatchclsError(f"{datalist_path}: line {n + 1}: {line} is no image of dataset.root "
                                f"{job.dataset.root!r} (looked for {key}); import with the job that was exported")
        rows[s.index] = {"index": s.index, "path": s.path, "label": s.label, "error": None,
                         "topk_ids": ids[n].tolist(), "topk_probs": probs[n].tolist()}
    reasons = _export_errors(os.path.dirname(datalist_path))
    for s in samples:
        if s.index not in rows:
            rows[s.index] = {"index": s.index, "path": s.path, "label": s.label, "topk_ids": [], "topk_probs": [],
                             "error": f"vamp: {reasons.get(s.path, 'not in the datalist')}"}
    fingerprint = _fingerprint(lines, outputs, job.output.topk, kind)
    return write_dump(job.output.dir, [rows[i] for i in sorted(rows)], fingerprint=fingerprint, job=job.to_dict(),
                      overwrite=job.output.overwrite, title=f"{job.model.name} ({job.model.source}), vamp outputs",
                      zoo_row=find_zoo_row(job.model.name, job.model.source), log=log,
                      extra={"source": {"vamp_outputs": os.path.abspath(outputs), "datalist": datalist_path,
                                        "outputs": kind}})


def _export_errors(folder: str) -> dict[str, str]:
    try:
        with open(os.path.join(folder, EXPORT_ERRORS), encoding="utf-8") as f:
            return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    except OSError:
        return {}


def _fingerprint(lines: list[str], outputs: str, k: int, kind: str) -> str:
    h = hashlib.sha256(json.dumps({"datalist": lines, "k": k, "kind": kind}).encode())
    for name in sorted(os.listdir(outputs)):
        st = os.stat(os.path.join(outputs, name))
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return "vamp-" + h.hexdigest()[:20]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(list(argv))
        from .config import load_job

        job = load_job(args.job, args.overrides + (["runtime.progress=false"] if args.no_progress else []))
        if args.action == "export":
            counts = export(job, args.out, job.runtime.progress)
            print(f"vamp export: {counts['written']} of {counts['images']} images written to {args.out}"
                  + (f"; {counts['failed']} failed, listed in {os.path.join(args.out, EXPORT_ERRORS)}"
                     if counts["failed"] else ""))
            print("next, on the vacc host:\n" + vamp_command(job, args.out))
        else:
            import_outputs(job, args.outputs, args.datalist)
            if args.result_txt:
                from .interop.dump import write_run_result_txt

                write_run_result_txt(job.output.dir, job.dataset.root, args.result_txt)
    except BatchclsError as e:
        print(f"batchcls vamp: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
