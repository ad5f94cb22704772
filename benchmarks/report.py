"""The benchmark table and the targets, computed from one run's results (ratios of figures measured together)."""

from __future__ import annotations

# The targets, each a ratio or a size measured in the same run.
WARM_VS_M = 0.95
COLD_VS_BOUND = 0.85
PER_CORE_VS_PIL = 1.3
SHARD_BYTES_PER_IMAGE = 160_000
HOST_GAP = 0.05
# What "end to end" becomes at the size of the real job (ILSVRC2012 val), from the measured startup
# and steady rate: the fixed cost of starting Ray and the first shard is paid once.
FULL_RUN_IMAGES = 50_000


def _e2e(run: dict) -> float:
    return run["timing"]["end_to_end_images_per_s"]


# Fewer shards than this and the "steady" rate is not one: a single shard is prepared, then inferred.
MIN_SHARDS_STEADY = 4


def projected(run: dict, images: int = FULL_RUN_IMAGES) -> float | None:
    """images/s of a run of `images` with this run's startup and its steady inference rate (None when
    the run had too few shards to have a steady state)."""
    t = run["timing"]
    if run["shards"]["total"] < MIN_SHARDS_STEADY:
        return None
    return images / (t["startup_s"] + images / t["infer_images_per_s"])


def _ratio(x: float | None, y: float) -> float | None:
    return None if x is None else x / y


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def harmonic(p: float, m: float) -> float:
    """The rate when every image needs 1/P core-seconds of prep and 1/M of inference on shared cores."""
    return 1.0 / (1.0 / p + 1.0 / m)


def _gap(run: dict) -> dict:
    t = run["timing"]
    idle = t["worker_idle_between_shards_s"] / t["model_run_s"] if t["model_run_s"] else None
    return {"host_gap_fraction": t["host_gap_fraction"], "idle_between_shards_fraction": idle,
            "total": (t["host_gap_fraction"] or 0) + (idle or 0),
            "device_idle_fraction": run.get("device_idle_fraction")}


def targets(r: dict) -> dict:
    """Each target, for the engine's defaults and for the tuned settings: value, threshold, met."""
    m, p = r["M"]["images_per_s"], r["P"]["images_per_s"]
    bound = harmonic(p, m)
    rivals = {k: r[k]["images"] / r[k]["command_s"] for k in ("naive", "raydata", "raydata_split") if k in r}
    out = {"M": m, "P": p, "bound_cold": bound,
           "per_core": {"value": r["per_core"]["ratio"], "need": PER_CORE_VS_PIL,
                        "met": r["per_core"]["ratio"] >= PER_CORE_VS_PIL}}
    for tag in ("", "_tuned", "_cluster"):
        if f"warm{tag}" not in r:
            continue
        warm, cold = r[f"warm{tag}"], r[f"cold{tag}"]
        name = tag.strip("_") or "defaults"
        cold_cmd = cold["images"] / cold["command_s"]
        shard = cold["cache"]["bytes_per_image"]
        warm_cmd = warm["images"] / warm["command_s"]
        out[name] = {
            "warm_vs_M": {"value": _e2e(warm) / m, "command": warm_cmd / m,
                          "steady": warm["timing"]["infer_images_per_s"] / m,
                          "at_50k": _ratio(projected(warm), m), "need": WARM_VS_M, "met": _e2e(warm) / m >= WARM_VS_M},
            "cold_vs_bound": {"value": _e2e(cold) / bound, "command": cold_cmd / bound,
                              "at_50k": _ratio(projected(cold), bound),
                              "need": COLD_VS_BOUND, "met": _e2e(cold) / bound >= COLD_VS_BOUND},
            "cold_vs_rivals": {"value": {k: cold_cmd / v for k, v in rivals.items()},
                               "met": all(cold_cmd > v for v in rivals.values())},
            "shard_bytes": {"value": shard, "need": SHARD_BYTES_PER_IMAGE,
                            "met": shard is not None and shard <= SHARD_BYTES_PER_IMAGE},
            "host_gap_warm": {"value": _gap(warm), "need": HOST_GAP, "met": _gap(warm)["total"] < HOST_GAP},
            "host_gap_cold": {"value": _gap(cold), "need": HOST_GAP, "met": _gap(cold)["total"] < HOST_GAP},
        }
    return out


def _rows(rep: dict) -> list[tuple[str, dict, float, str]]:
    """(label, the row's result, its images/s, notes) for every row of the table."""
    r = rep["results"]
    m, p = r["M"]["images_per_s"], r["P"]["images_per_s"]
    pc = r["per_core"]
    rows = [("M   model alone: float32 batches of 48, engine session", r["M"], m,
             f"batch p50 {r['M']['batch_ms_p50']:.0f} ms"),
            ("M'  model alone: onnxruntime default session (spinning)", r["M_spin"], r["M_spin"]["images_per_s"], ""),
            ("Mr  model alone in a Ray actor (batchcls bench -i 1)", r["M_ray"], r["M_ray"]["images_per_s"],
             f"batch p50 {r['M_ray']['latency_ms']['p50']:.0f} ms"),
            ("P   prep alone: Ray prep tasks, all cores, npz written", r["P"], p,
             f"{r['P']['shards']} shards of 96, {r['P']['npz_bytes_per_image'] / 1e3:.1f} KB/img"),
            ("    1/(1/P + 1/M): prep and model sharing the cores", None, harmonic(p, m), ""),
            ("    timm transform, one core (ours)", pc, pc["ours_images_per_s"],
             f"{pc['ratio']:.2f} x the PIL loop (passes: {', '.join(f'{x:.2f}' for x in pc['ratio_all_runs'])}); "
             f"crops differing: {pc['crops_differing']}; compiled resampler: "
             f"{'on' if pc.get('compiled_resampler', False) else 'off'}"),
            ("    plain PIL loop, one core", None, pc["pil_images_per_s"], ""),
            ("naive: one process, PIL + onnxruntime per batch", r["naive"],
             r["naive"]["images"] / r["naive"]["command_s"], f"loop alone {r['naive']['images_per_s']:.1f}")]
    for key, label in (("raydata", "Ray Data: canonical map_batches + actor pool"),
                       ("raydata_split", "Ray Data: preprocessing kept apart (not fused)")):
        if key in r:
            x = r[key]
            rows.append((label, x, x["images"] / x["command_s"], f"execution alone {x['images_per_s']:.1f}"))
    for tag, label in (("", "defaults"), ("_tuned", "tuned"), ("_cluster", "tuned, Ray already up in the process")):
        for kind in ("cold", "warm"):
            run = r.get(f"{kind}{tag}")
            if run is None:
                continue
            t = run["timing"]
            rows.append((f"batchcls {kind} cache, {label}", run, _e2e(run),
                         f"command {run['images'] / run['command_s']:.1f}; startup {t['startup_s']:.1f} s; "
                         f"steady {t['infer_images_per_s']:.1f}; at 50k {_f(projected(run), '.1f')}; "
                         f"gaps {100 * _gap(run)['total']:.1f}%"))
    if "vendor" in r:
        v = r["vendor"]
        rows.append(("vendor image2npz: one full-size npz per image, 1 process", v, v["images_per_s"],
                     f"{v['bytes_per_image'] / 1e3:.0f} KB/img = {v['bytes_per_image'] / v['jpeg_bytes_per_image']:.1f}"
                     f" x the JPEG"))
    return rows


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _target_lines(t: dict) -> list[str]:
    lines = [f"  timm per core >= {PER_CORE_VS_PIL} x PIL loop:   {t['per_core']['value']:.2f}  "
             f"{_verdict(t['per_core']['met'])}"]
    for name in ("defaults", "tuned", "cluster"):
        if name not in t:
            continue
        x = t[name]
        w, c, g = x["warm_vs_M"], x["cold_vs_bound"], x["host_gap_warm"]
        rivals = ", ".join(f"{k} {v:.2f}x" for k, v in x["cold_vs_rivals"]["value"].items())
        lines += [f"  [{name}]",
                  f"  warm e2e >= {WARM_VS_M} x M:            {w['value']:.2f}  {_verdict(w['met'])}"
                  f"  (command {_f(w.get('command'))}, steady {w['steady']:.2f}, at 50k images {_f(w['at_50k'])})",
                  f"  cold e2e >= {COLD_VS_BOUND} x 1/(1/P+1/M):   {c['value']:.2f}  {_verdict(c['met'])}"
                  f"  (command {_f(c.get('command'))}, at 50k images {_f(c['at_50k'])})",
                  f"  cold above naive and Ray Data:   {rivals}  {_verdict(x['cold_vs_rivals']['met'])}",
                  f"  shard cache <= 160 KB/img:       {x['shard_bytes']['value'] / 1e3:.1f} KB  "
                  f"{_verdict(x['shard_bytes']['met'])}",
                  f"  host gaps < 5% (warm):           {100 * g['value']['total']:.1f}% (in calls "
                  f"{100 * (g['value']['host_gap_fraction'] or 0):.1f}%, between shards "
                  f"{100 * (g['value']['idle_between_shards_fraction'] or 0):.1f}%)  {_verdict(g['met'])}"
                  f"; cold {100 * x['host_gap_cold']['value']['total']:.1f}%"]
    return lines


def format_table(rep: dict) -> str:
    """The printed report: the machine, one row per figure (best run, x M, every run), the targets."""
    mach = rep["machine"]
    m = rep["results"]["M"]["images_per_s"]
    v = mach["versions"]
    head = (f"batchcls benchmarks: {rep['model']}, {rep['images']} images, {rep['date']}, best of "
            f"{rep.get('repeat', 1)} passes\n"
            f"machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gb']} GB; onnxruntime {v['onnxruntime']}, "
            f"ray {v['ray']}, Pillow {v['PIL']}, numpy {v['numpy']}; commit {mach['commit']}\n"
            f"tuned = {' '.join(rep.get('tuned_sets', []))}")
    width = 57
    lines = [head, "", f"{'row':{width}s} {'img/s':>7s} {'x M':>5s} {'runs':>24s} {'steal':>6s}  notes", "-" * 150]
    for label, row, rate, note in _rows(rep):
        runs = ", ".join(f"{x:.0f}" for x in row["all_runs"]) if row and "all_runs" in row else ""
        steal = f"{100 * max(row['steal_all_runs']):.0f}%" if row and "steal_all_runs" in row else ""
        lines.append(f"{label:{width}s} {rate:7.1f} {rate / m:5.2f} {runs:>24s} {steal:>6s}  {note}")
    lines += ["", "batchcls: e2e = metrics.json end_to_end_images_per_s (main() to results and metrics written, "
              "before the local Ray cluster stops); naive and Ray Data: images / "
              "the command's wall; command = the batchcls process's wall (Ray's stop included); "
              "steady = images / inference window; at 50k = startup + 50,000 images at the steady rate; "
              "runs = every pass (img/s); steal = the most CPU taken by other VMs during a run",
              "", "targets (ratios from this run):"] + _target_lines(rep["targets"])
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    # `python benchmarks/report.py benchmarks/results/latest.json`: the table of a saved run, again.
    with open(sys.argv[1]) as f:
        print(format_table(json.load(f)))
