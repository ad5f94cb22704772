"""The self-contained HTML report of a run, of a comparison, and of the runs table: one file, figures
embedded as base64 PNG, no script and nothing fetched from the network."""

from __future__ import annotations

import base64
import datetime
import html
import os

from . import plots
from .verdict import format_p

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.sub{color:#666;font-size:13px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}td.n{text-align:right;
font-variant-numeric:tabular-nums}.cols{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
figure{margin:8px 0}img{max-width:100%}figcaption{font-size:12px;color:#666}
#verdict{margin-top:14px}.pass{background:#e6f4ea;border:1px solid #34a853;padding:8px 12px}.fail{background:#fce8e6;border:1px solid #d93025;
padding:8px 12px}.none{background:#f1f3f4;border:1px solid #999;padding:8px 12px}.neg{color:#c5221f}.pos{color:#188038}
"""

TIMING_LABELS = (("end_to_end_s", "end to end (s)"), ("end_to_end_images_per_s", "end to end (images/s)"),
                 ("startup_s", "startup: command to first inference (s)"), ("prep_images_per_s", "prep (images/s)"),
                 ("infer_images_per_s", "inference (images/s)"), ("ray_shutdown_s", "stopping Ray after the results (s)"))


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _num(v, fmt=".3f", signed=False) -> str:
    if v is None:
        return "—"
    return format(v, ("+" if signed else "") + fmt) if isinstance(v, (int, float)) else _e(v)


def _img(fig_id: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="{fig_id}"><img id="{fig_id}-img" alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(alt)}</figcaption></figure>")


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), table_id: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


def deploy_summary(m: dict):
    """What ran, as a flat table: metrics.json's `deploy` (precision, calibration, calibration images among the
    evaluated ones), or an older run's `precision` as it is."""
    deploy = m.get("deploy")
    if not isinstance(deploy, dict):
        return m.get("precision")
    out = {"precision": deploy.get("precision", "fp32")}
    for k, v in (deploy.get("calibration") or {}).items():
        out[f"calibration {k.replace('_', ' ')}"] = v
    if deploy.get("evaluated_calibration_images") is not None:
        out["evaluated images used for calibration"] = deploy["evaluated_calibration_images"]
    return out


def _kv(d: dict | None, table_id: str = "") -> str:
    if not d:
        return "<p>—</p>"
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.items())
    return f'<table id="{table_id}">{rows}</table>' if table_id else f"<table>{rows}</table>"


def _page(title: str, subtitle: str, body: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1><div class=\"sub\">{_e(subtitle)} · written "
            f"{stamp} by batchcls</div>{body}</body></html>\n")


def _accuracy_rows(m: dict) -> list[list]:
    ref = m.get("reference") or {}
    rows = [["measured (labelled images with a prediction)", _num(m.get("top1")), _num(m.get("top5")),
             _num(m.get("labelled"), "d")]]
    if m.get("top1_all") is not None:
        rows.append(["measured, failures as misses (all labelled images)", _num(m.get("top1_all")),
                     _num(m.get("top5_all")), _num(m.get("labelled_all"), "d")])
    real = m.get("real")
    if isinstance(real, dict):
        rows.append(["ReaL labels", _num(real.get("top1")), _num(real.get("top5")),
                     _num(real.get("scored", real.get("count")), "d")])
    if ref:
        rows.append([f"seed table ({_e(ref.get('id'))})", _num(ref.get("top1")), _num(ref.get("top5")), ""])
        if m.get("top1") is not None:
            d5 = None if m.get("top5") is None else m["top5"] - ref["top5"]
            rows.append(["difference (measured − seed table)", _num(m["top1"] - ref["top1"], signed=True),
                         _num(d5, signed=True), ""])
    return rows


def _summary(m: dict) -> str:
    counts = _table(["images", "with a prediction", "failed", "labelled, with a prediction"],
                    [[_num(m.get(k), "d") for k in ("images", "succeeded", "failed", "labelled")]],
                    numeric={0, 1, 2, 3}, table_id="counts")
    acc = _table(["", "top-1 %", "top-5 %", "images"], _accuracy_rows(m), numeric={1, 2, 3}, table_id="accuracy")
    reasons = m.get("failed_by_reason") or {}
    fail = _table(["failure", "images"], [[_e(r), n] for r, n in reasons.items()], numeric={1},
                  table_id="failures") if reasons else "<p>No image failed.</p>"
    t = m.get("timing") or {}
    timing = {label: f"{t[k]:.2f}" for k, label in TIMING_LABELS if t.get(k) is not None}
    precision = deploy_summary(m)
    prec = _kv(precision, "precision") if isinstance(precision, dict) else f"<p>{_e(precision or 'as the model file')}</p>"
    ds = m.get("dataset") or {}
    labels = {k: v for k, v in ds.items() if k != "root"}
    return (f"<h2 id=\"summary\">Summary</h2>{counts}{acc}<h3>Failures by reason</h3>{fail}"
            f"<div class=\"cols\"><div><h3>Preprocessing (as resolved)</h3>{_kv(m.get('preprocess'), 'preprocess')}"
            f"</div><div><h3>Precision</h3>{prec}<h3>Dataset and labels</h3>{_kv(labels, 'dataset')}"
            f"<h3>Timing</h3>{_kv(timing, 'timing')}</div></div>")


def _class_table(rows: list[dict], table_id: str) -> str:
    return _table(["class", "name", "images", "top-1 %", "top-5 %"],
                  [[r["class"], _e(r["name"]), r["count"], _num(r["top1"], ".1f"), _num(r["top5"], ".1f")]
                   for r in rows], numeric={0, 2, 3, 4}, table_id=table_id)


def _per_class(data: dict) -> str:
    if not data["classes"]:
        return '<h2 id="per-class">Per-class top-1</h2><p>No labelled images with a prediction.</p>'
    fig = _img("fig-per-class", plots.per_class_histogram([r["top1"] for r in data["classes"]],
                                                          data["metrics"].get("top1")),
               f"Histogram of top-1 over {len(data['classes'])} classes")
    return (f"<h2 id=\"per-class\">Per-class top-1</h2>{fig}<div class=\"cols\"><div><h3>Worst classes</h3>"
            f"{_class_table(data['worst'], 'worst-classes')}</div><div><h3>Best classes</h3>"
            f"{_class_table(data['best'], 'best-classes')}</div></div>")


def _confusions(data: dict) -> str:
    rows = [[f"{c['true']} {_e(c['true_name'])}", f"{c['pred']} {_e(c['pred_name'])}", c["count"]]
            for c in data["confusions"]]
    body = _table(["true class", "predicted", "images"], rows, numeric={2}, table_id="confusions") if rows \
        else "<p>No confusions (no labelled mistakes).</p>"
    return f"<h2 id=\"confusions\">Most frequent confusions</h2>{body}"


def _calibration(cal: dict | None, fig_id: str = "fig-calibration", label: str = "") -> str:
    if not cal:
        return f'<h2 id="calibration">Calibration</h2><p>Needs labelled images with a prediction.</p>'
    fig = _img(fig_id, plots.reliability_diagram(cal["bins"], cal["ece"], label),
               f"{label}Reliability diagram: top-1 accuracy against top-1 probability, 15 equal-width bins; "
               f"expected calibration error {cal['ece']:.2f}%")
    return f'<h2 id="calibration">Calibration</h2><p>ECE (15 bins): <b id="ece">{cal["ece"]:.3f}%</b></p>{fig}'


def _throughput(data: dict) -> str:
    series, t = data["throughput"], data["metrics"].get("timing") or {}
    if not series:
        return ('<h2 id="throughput">Throughput</h2><p>No timeline: this run did no work of its own (every part was '
                "reused), or it was written by an older batchcls.</p>")
    marks = []
    if t.get("startup_s") is not None:
        marks.append((t["startup_s"], "first inference call"))
    if t.get("end_to_end_s") is not None:
        marks.append((t["end_to_end_s"], "results written, Ray stop begins"))
        if t.get("ray_shutdown_s") is not None:
            marks.append((t["end_to_end_s"] + t["ray_shutdown_s"], "Ray stopped"))
    fig = _img("fig-throughput", plots.throughput_over_time(series, marks),
               "Images/s over time for prep and inference (per-shard start and end times), startup and stop marked")
    return f'<h2 id="throughput">Throughput</h2>{fig}'


def render_run_report(data: dict) -> str:
    """The report of one run: summary, per-class top-1, confusions, calibration, throughput."""
    m = data["metrics"]
    model = (m.get("job") or {}).get("model") or {}
    title = f"{model.get('name', 'run')} ({model.get('source', '?')})"
    body = _summary(m) + _per_class(data) + _confusions(data) + _calibration(data["calibration"]) + _throughput(data)
    return _page(f"batchcls report: {title}", data["run_dir"], body)


def _cmp_accuracy(r: dict) -> str:
    rows = []
    for key, label in (("top1", "top-1, images both got"), ("top5", "top-5, images both got"),
                       ("top1_all", "top-1, failures as misses"), ("top5_all", "top-5, failures as misses")):
        x = r.get(key)
        if x:
            ci = f"[{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"
            rows.append([label, x["count"], _num(x["a"]), _num(x["b"]), _num(x["diff"], signed=True), ci,
                         format_p(x["mcnemar_p"]) if "mcnemar_p" in x else "—"])
    if not rows:
        return "<p>No labels: accuracy not available.</p>"
    return _table(["", "images", "A %", "B %", "B − A (points)", "95% CI", "McNemar p"], rows,
                  numeric={1, 2, 3, 4, 6}, table_id="cmp-accuracy")


def _two_by_two(r: dict) -> str:
    t = (r.get("top1") or {}).get("table")
    if not t:
        return ""
    return "<h3>Top-1, image by image</h3>" + _table(
        ["", "B right", "B wrong"], [["A right", t["both_right"], t["a_right_b_wrong"]],
                                     ["A wrong", t["a_wrong_b_right"], t["both_wrong"]]],
        numeric={1, 2}, table_id="two-by-two")


def _cmp_classes(r: dict) -> str:
    per = r["classes"]["per_class"]
    if not per:
        return ""
    figs = (_img("fig-class-delta", plots.class_deltas(per), "Per-class top-1 change B − A, classes sorted by it")
            + _img("fig-class-scatter", plots.class_scatter(per), "Per-class top-1 of B against A"))

    def rows(key):
        return [[c["class"], _e(c["name"]), c["count"], _num(c["a"], ".1f"), _num(c["b"], ".1f"),
                 _num(c["delta"], ".1f", signed=True)] for c in r["classes"][key]]

    head = ["class", "name", "images", "A %", "B %", "B − A"]
    lost = _table(head, rows("lost"), {0, 2, 3, 4, 5}, "lost-classes") if rows("lost") else "<p>No class lost.</p>"
    gained = _table(head, rows("gained"), {0, 2, 3, 4, 5}, "gained-classes") if rows("gained") \
        else "<p>No class gained.</p>"
    return (f"<h2 id=\"per-class\">Per-class deltas</h2><div class=\"cols\">{figs}</div><div class=\"cols\"><div>"
            f"<h3>Lost most</h3>{lost}</div><div><h3>Gained most</h3>{gained}</div></div>")


def _cmp_failures(r: dict) -> str:
    f = r["failures"]
    rows = [[who, f[key]["count"], _e(", ".join(f"{n} × {k}" for k, n in f[key]["by_reason"].items())),
             _e(f[key]["examples"][0][0] if f[key]["examples"] else "")]
            for key, who in (("only_a", "only in A"), ("only_b", "only in B"))]
    rows.append(["in both", f["both"], "", ""])
    return "<h2 id=\"failures\">Failures</h2>" + _table(["failed", "images", "reasons", "e.g."], rows, {1},
                                                        "cmp-failures")


def _run_title(x: dict) -> str:
    return x["model"] or os.path.basename(os.path.normpath(x["source"]))


def render_compare_report(r: dict) -> str:
    """The report of a comparison: verdict, accuracy both ways, the 2x2 table, agreement, per-class deltas."""
    v = r.get("verdict") or {"passed": None, "line": ""}
    cls = {True: "pass", False: "fail", None: "none"}[v["passed"]]
    a, b = r["a"], r["b"]
    runs = _table(["", "run", "model", "images", "failed", "preprocessing", "precision"],
                  [[who, _e(x["source"]), _e(f"{x['model']} ({x['model_source']})" if x["model"] else "—"), x["images"], x["failed"],
                    _e(", ".join(f"{k}={v_}" for k, v_ in (x.get("preprocess") or {}).items())), _e(x.get("precision"))]
                   for who, x in (("A", a), ("B", b))], {3, 4}, "runs")
    ag, lg = r["agreement"], r.get("logits")
    agree = {"images both got": ag["count"], "top-1 agreement %": _num(ag["top1"]),
             "top-5 set agreement %": _num(ag["top5_set"])}
    if lg:
        agree.update({"KL(A‖B) mean (nats)": f"{lg['kl_mean']:.5f}", "KL(A‖B) max (nats)": f"{lg['kl_max']:.5f}",
                      "max |Δp| of A's top-1 class": f"{lg['top1_prob_abs_diff_max']:.4f}"})
    d = r["dropped"]
    sig = f'<p id="significance">{_e(v["significance"])}</p>' if v.get("passed") is not None else ""
    body = (f'<div id="verdict" class="{cls}"><b>{_e(v["line"])}</b></div>{sig}'
            f"<h2 id=\"runs\">Runs</h2>{runs}<p>{r['paired']} images paired by path"
            + (f"; dropped {d['only_a']} only in A and {d['only_b']} only in B" if d["only_a"] or d["only_b"] else "")
            + f"</p><h2 id=\"accuracy\">Accuracy</h2>{_cmp_accuracy(r)}{_two_by_two(r)}<h2 id=\"agreement\">"
            f"Agreement</h2>{_kv(agree, 'agreement')}{_cmp_classes(r)}{_cmp_failures(r)}")
    return _page(f"batchcls compare: {_run_title(a)} vs {_run_title(b)}", f"A = {a['source']}, B = {b['source']}", body)


def render_runs_table(headers: list[str], rows: list[list], root: str) -> str:
    """The seed table with measured accuracy beside the published one, as a page."""
    return _page("batchcls: measured vs published", root,
                 _table(headers, [[_e(c) for c in row] for row in rows], set(range(2, len(headers) - 2)), "runs-table"))
