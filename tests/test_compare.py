"""`batchcls compare`: every figure against an independent count from the two Parquet dumps (plain Python over
the rows), the gate's exit codes, the refusal of runs over different images, --flips, --json, --html."""

from __future__ import annotations

import base64
import json
import math
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchcls.analysis.compare import compare_runs, load_predictions
from batchcls.analysis.stats import mcnemar_exact_p, paired_difference, reliability
from batchcls.compare import main as compare_main
from batchcls.errors import BatchclsError
from batchcls.metrics import topk
from batchcls.schema import build_table, part_path, read_predictions, write_part

N, CLASSES = 1200, 40


def write_run(out: str, logits: np.ndarray, labels: list, errors: list, save_logits: bool = True,
              keep: np.ndarray | None = None) -> str:
    """A run folder of two Parquet parts, as the reduce stage writes them; `keep` selects the rows."""
    rows = np.arange(len(labels)) if keep is None else np.flatnonzero(keep)
    halves = np.array_split(rows, 2)
    for pid, part in enumerate(halves):
        ok = np.array([not errors[i] for i in part], dtype=bool)
        ids, probs = topk(logits[part[ok]], 5)
        table = build_table(part, [f"ILSVRC2012_val_{i:08d}.JPEG" for i in part], [labels[i] for i in part],
                            [errors[i] for i in part], ids, probs, logits[part[ok]] if save_logits else None)
        write_part(part_path(out, pid), table)
    return out


def synthetic_logits(seed: int = 0):
    """A: labels boosted by 2.5; B: A plus noise, labels boosted by 2.2 (worse, many shared answers)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, N)
    base = rng.normal(0, 1, (N, 1000)).astype(np.float32)
    la = base.copy()
    la[np.arange(N), labels] += 2.5
    lb = base + rng.normal(0, 0.4, (N, 1000)).astype(np.float32)
    lb[np.arange(N), labels] += 2.2
    return la, lb, labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    la, lb, labels = synthetic_logits()
    lab = [int(x) for x in labels]
    lab[3] = lab[4] = None  # unlabelled images take part in agreement only
    ea, eb = [""] * N, [""] * N
    ea[10] = "a.JPEG: cannot decode: truncated file"
    eb[11] = "b.JPEG: cannot decode: empty file (0 bytes)"
    eb[12] = "c.JPEG: model output: non-finite logits"
    ea[13] = eb[13] = "d.JPEG: not an image: unknown format"
    return write_run(str(tmp / "A"), la, lab, ea), write_run(str(tmp / "B"), lb, lab, eb), tmp


def _rows(run: str) -> dict:
    return {r["path"]: r for r in read_predictions(run).to_pylist()}


def _independent(a_dir: str, b_dir: str) -> dict:
    """The figures counted over the rows read back as Python objects."""
    a, b = _rows(a_dir), _rows(b_dir)
    paths = sorted(a)
    both = [p for p in paths if a[p]["error"] is None and b[p]["error"] is None]
    lab_both = [p for p in both if a[p]["label"] is not None]
    lab_all = [p for p in paths if a[p]["label"] is not None]

    def hit(r, k):
        return r["error"] is None and r["label"] in r["topk_ids"][:k]

    out = {}
    for k in (1, 5):
        n11 = sum(hit(a[p], k) and hit(b[p], k) for p in lab_both)
        n10 = sum(hit(a[p], k) and not hit(b[p], k) for p in lab_both)
        n01 = sum(not hit(a[p], k) and hit(b[p], k) for p in lab_both)
        n00 = len(lab_both) - n11 - n10 - n01
        out[k] = dict(n=len(lab_both), n11=n11, n10=n10, n01=n01, n00=n00,
                      a=100 * (n11 + n10) / len(lab_both), b=100 * (n11 + n01) / len(lab_both),
                      a_all=100 * sum(hit(a[p], k) for p in lab_all) / len(lab_all),
                      b_all=100 * sum(hit(b[p], k) for p in lab_all) / len(lab_all))
    out["agree1"] = 100 * sum(a[p]["topk_ids"][0] == b[p]["topk_ids"][0] for p in both) / len(both)
    out["agree5"] = 100 * sum(set(a[p]["topk_ids"]) == set(b[p]["topk_ids"]) for p in both) / len(both)
    kls, dps = [], []
    for p in both:
        xa = np.array(a[p]["logits"], np.float64)
        xb = np.array(b[p]["logits"], np.float64)
        pa = np.exp(xa - xa.max()) / np.exp(xa - xa.max()).sum()
        pb = np.exp(xb - xb.max()) / np.exp(xb - xb.max()).sum()
        kls.append(float(np.sum(pa * np.log(pa / pb))))
        dps.append(abs(pa[int(np.argmax(pa))] - pb[int(np.argmax(pa))]))
    out["kl_mean"], out["kl_max"], out["dp_max"] = np.mean(kls), max(kls), max(dps)
    out["both"], out["lab_both"], out["a"], out["b"] = both, lab_both, a, b
    return out


def _binomial_p(b: int, c: int) -> float:
    n, m = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(m + 1)) / 2 ** n)


def test_every_figure_equals_an_independent_count(runs):
    a_dir, b_dir, _ = runs
    ref = _independent(a_dir, b_dir)
    r = compare_runs(load_predictions(a_dir), load_predictions(b_dir))
    assert r["paired"] == N and r["labelled"] == N - 2 and r["labelled_both_ok"] == ref[1]["n"] == N - 2 - 4
    for k in (1, 5):
        x, e = r[f"top{k}"], ref[k]
        assert x["table"] == {"both_right": e["n11"], "a_right_b_wrong": e["n10"], "a_wrong_b_right": e["n01"],
                              "both_wrong": e["n00"]}
        assert x["a"] == pytest.approx(e["a"], abs=1e-9) and x["b"] == pytest.approx(e["b"], abs=1e-9)
        assert x["diff"] == pytest.approx(e["b"] - e["a"], abs=1e-9)
        # Wald interval of a paired difference: se = sqrt(b + c - (c - b)^2 / n) / n.
        n, bb, cc = e["n"], e["n10"], e["n01"]
        se = math.sqrt(bb + cc - (cc - bb) ** 2 / n) / n
        assert x["ci95"] == pytest.approx([100 * ((cc - bb) / n - 1.96 * se), 100 * ((cc - bb) / n + 1.96 * se)],
                                          abs=1e-3)
        assert x["mcnemar_p"] == pytest.approx(_binomial_p(bb, cc), rel=1e-9)
        assert r[f"top{k}_all"]["a"] == pytest.approx(e["a_all"]) and r[f"top{k}_all"]["b"] == pytest.approx(e["b_all"])
    assert ref[1]["n10"] > ref[1]["n01"] > 0  # B is worse, and a few images flip the other way
    assert r["agreement"]["top1"] == pytest.approx(ref["agree1"]) and r["agreement"]["count"] == len(ref["both"])
    assert r["agreement"]["top5_set"] == pytest.approx(ref["agree5"])
    lg = r["logits"]
    assert lg["kl_mean"] == pytest.approx(ref["kl_mean"], rel=1e-9) and lg["kl_max"] == pytest.approx(ref["kl_max"])
    assert lg["top1_prob_abs_diff_max"] == pytest.approx(ref["dp_max"], rel=1e-9)


def test_classes_and_failures(runs):
    a_dir, b_dir, _ = runs
    ref = _independent(a_dir, b_dir)
    r = compare_runs(load_predictions(a_dir), load_predictions(b_dir))
    per = {}
    for p in ref["lab_both"]:
        ra, rb = ref["a"][p], ref["b"][p]
        d = per.setdefault(ra["label"], [0, 0, 0])
        d[0] += 1
        d[1] += ra["topk_ids"][0] == ra["label"]
        d[2] += rb["topk_ids"][0] == rb["label"]
    deltas = sorted((100 * (c - a) / n, cls) for cls, (n, a, c) in per.items())
    got = {x["class"]: x["delta"] for x in r["classes"]["per_class"]}
    assert got == pytest.approx({cls: d for d, cls in deltas})
    assert [x["delta"] for x in r["classes"]["per_class"]] == sorted(got.values())
    worst = r["classes"]["lost"][0]
    assert worst["class"] == deltas[0][1] and worst["name"] == \
        __import__("batchcls.data.discover", fromlist=["x"]).imagenet_class_names()[worst["class"]].split(",")[0]
    f = r["failures"]
    assert [e[0] for e in f["only_a"]["examples"]] == ["ILSVRC2012_val_00000010.JPEG"]
    assert sorted(e[0] for e in f["only_b"]["examples"]) == ["ILSVRC2012_val_00000011.JPEG",
                                                            "ILSVRC2012_val_00000012.JPEG"]
    assert f["only_b"]["by_reason"] == {"cannot decode": 1, "model output": 1} and f["both"] == 1


def test_mcnemar_and_interval_edge_cases():
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(7, 7) == 1.0
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 / 1024)
    # Large counts: the log-space sum against exact integers.
    assert mcnemar_exact_p(2000, 2300) == pytest.approx(_binomial_p(2000, 2300), rel=1e-9)
    assert paired_difference(0, 0, 0) is None
    d, lo, hi = paired_difference(10, 30, 1000)
    assert d == pytest.approx(2.0) and lo < d < hi


def test_reliability_bins_against_a_loop():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0, 1, 5000)
    conf[:3] = [1.0, 1 / 15, 2 / 15]  # edges belong to the bin below: (lo, hi]
    correct = rng.uniform(0, 1, 5000) < conf
    got = reliability(conf, correct)
    ece = 0.0
    for i in range(15):
        m = [j for j in range(5000) if i / 15 < conf[j] <= (i + 1) / 15 or (i == 0 and conf[j] == 0)]
        assert got["bins"][i]["count"] == len(m)
        if m:
            acc, c = np.mean(correct[m]), np.mean(conf[m])
            assert got["bins"][i]["accuracy"] == pytest.approx(acc) and got["bins"][i]["confidence"] == pytest.approx(c)
            ece += len(m) / 5000 * abs(acc - c)
    assert got["ece"] == pytest.approx(100 * ece)


def _gate_drop(runs) -> float:
    ref = _independent(runs[0], runs[1])
    return ref[1]["a_all"] - ref[1]["b_all"]


def test_gate_exit_codes(runs, capsys):
    a_dir, b_dir, _ = runs
    drop = _gate_drop(runs)
    assert drop > 1
    assert compare_main([a_dir, b_dir]) == 0
    assert compare_main([a_dir, b_dir, "--max-drop", f"{drop + 0.01:.4f}"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert compare_main([a_dir, b_dir, "--max-drop", f"{drop - 0.01:.4f}"]) == 1
    assert "FAIL" in capsys.readouterr().out
    ref = _independent(a_dir, b_dir)
    ratio = ref[1]["b_all"] / ref[1]["a_all"]
    assert compare_main([a_dir, b_dir, "--min-ratio", f"{ratio - 1e-4:.6f}"]) == 0
    assert compare_main([a_dir, b_dir, "--min-ratio", "0.99"]) == 1
    assert compare_main([a_dir, a_dir, "--min-ratio", "0.99", "--min-agreement", "100"]) == 0
    assert compare_main([a_dir, b_dir, "--min-agreement", "99"]) == 1
    with pytest.raises(SystemExit) as e:
        compare_main([a_dir, b_dir, "--max-drop", "one"])
    assert e.value.code == 2


def test_refuses_runs_over_different_images(runs, capsys):
    a_dir, _, tmp = runs
    la, lb, labels = synthetic_logits()
    keep = np.ones(N, bool)
    keep[[100, 200, 300]] = False
    short = write_run(str(tmp / "short"), lb, [int(x) for x in labels], [""] * N, keep=keep)
    with pytest.raises(BatchclsError, match="3 only in A .* 0 only in B.*--intersect"):
        compare_runs(load_predictions(a_dir), load_predictions(short))
    assert compare_main([a_dir, short]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not over the same images" in err
    r = compare_runs(load_predictions(a_dir), load_predictions(short), intersect=True)
    assert r["paired"] == N - 3 and r["dropped"] == {"only_a": 3, "only_b": 0}
    assert compare_main([a_dir, short, "--intersect"]) == 0
    assert "dropped 3 only in A, 0 only in B" in capsys.readouterr().out


def test_refuses_different_labels_and_unlabelled_gate(runs, capsys):
    a_dir, _, tmp = runs
    la, _, labels = synthetic_logits()
    other = [int(x + 1) % CLASSES for x in labels]
    moved = write_run(str(tmp / "moved"), la, other, [""] * N)
    with pytest.raises(BatchclsError, match="labels differ"):
        compare_runs(load_predictions(a_dir), load_predictions(moved))
    un_a = write_run(str(tmp / "ua"), la, [None] * N, [""] * N, save_logits=False)
    un_b = write_run(str(tmp / "ub"), la + 0.01, [None] * N, [""] * N, save_logits=False)
    r = compare_runs(load_predictions(un_a), load_predictions(un_b))
    assert r["top1"] is None and r["logits"] is None and r["agreement"]["count"] == N
    assert compare_main([un_a, un_b, "--max-drop", "1"]) == 2
    assert "--min-agreement" in capsys.readouterr().err
    assert compare_main([un_a, un_b, "--min-agreement", "90"]) == 0
    assert compare_main([str(tmp / "nothing-here"), un_b]) == 2


def test_flips_json_and_html(runs, tmp_path):
    a_dir, b_dir, _ = runs
    ref = _independent(a_dir, b_dir)
    flips, js, page = str(tmp_path / "flips.parquet"), str(tmp_path / "c.json"), str(tmp_path / "c.html")
    assert compare_main([a_dir, b_dir, "--flips", flips, "--json", js, "--html", page, "--max-drop", "50"]) == 0
    t = pq.read_table(flips).to_pylist()
    a, b = ref["a"], ref["b"]
    expected = sorted(p for p in ref["lab_both"]
                      if (a[p]["topk_ids"][0] == a[p]["label"]) != (b[p]["topk_ids"][0] == b[p]["label"]))
    unlabelled = sorted(p for p in ref["both"] if a[p]["label"] is None and a[p]["topk_ids"][0] != b[p]["topk_ids"][0])
    assert len(unlabelled) == 1  # rows 3 and 4 have no label; only row 4 changes its top-1
    assert sorted(r["path"] for r in t if r["label"] is not None) == expected
    assert sorted(r["path"] for r in t if r["label"] is None) == unlabelled
    assert len(expected) == ref[1]["n10"] + ref[1]["n01"]
    assert {r["kind"] for r in t} == {"A right, B wrong", "A wrong, B right", "top-1 differs"}
    row = t[0]
    assert row["a_topk_ids"] == a[row["path"]]["topk_ids"] and row["b_topk_ids"] == b[row["path"]]["topk_ids"]
    assert row["label"] == a[row["path"]]["label"]
    data = json.load(open(js))
    assert data["top1"]["table"]["a_right_b_wrong"] == ref[1]["n10"] and data["verdict"]["passed"] is True
    html = open(page, encoding="utf-8").read()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for fig in ("fig-class-delta", "fig-class-scatter"):
        m = re.search(rf'<img id="{fig}-img" alt="[^"]+" src="data:image/png;base64,([^"]+)"', html)
        assert m and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'id="two-by-two"' in html and f">{ref[1]['n10']}<" in html and "PASS" in html
    assert f"{ref[1]['b'] - ref[1]['a']:+.3f}" in html


def test_prediction_folder_is_accepted(runs):
    a_dir, b_dir, _ = runs
    r = compare_runs(load_predictions(os.path.join(a_dir, "predictions")), load_predictions(b_dir))
    assert r["paired"] == N
