"""The gate of a comparison (max drop, min ratio, min agreement) and its one-line verdict; the text summary."""

from __future__ import annotations

from ..errors import BatchclsError

# Significance level the no-gate verdict speaks of.
ALPHA = 0.05


def apply_gate(result: dict, max_drop: float | None = None, min_ratio: float | None = None,
               min_agreement: float | None = None) -> dict:
    """{'passed': True/False (None without a gate), 'line': the verdict, 'checks': [...]}.

    Accuracy gates use top-1 over all paired labelled images, failures counted as misses, so that a run
    cannot pass by failing on hard images; agreement counts an image only one run got as a disagreement."""
    checks = []
    acc = result.get("top1_all")
    if (max_drop is not None or min_ratio is not None) and acc is None:
        raise BatchclsError("--max-drop/--min-ratio need labelled images and none of the paired images has a "
                            "label; gate unlabelled runs with --min-agreement PCT")
    where = f"over {acc['count']} labelled images, failures as misses" if acc else ""
    if max_drop is not None:
        drop = acc["a"] - acc["b"]
        checks.append((bool(drop <= max_drop + 1e-12),
                       f"B's top-1 {acc['b']:.3f}% is {abs(drop):.3f} points {'below' if drop >= 0 else 'above'} "
                       f"A's {acc['a']:.3f}% "
                       f"(allowed {max_drop:g}) {where}"))
    if min_ratio is not None:
        ratio = acc["b"] / acc["a"] if acc["a"] else float("inf")
        checks.append((bool(acc["b"] >= min_ratio * acc["a"] - 1e-12),
                       f"B's top-1 {acc['b']:.3f}% is {ratio:.4f} x A's {acc['a']:.3f}% "
                       f"(required >= {min_ratio:g} x) {where}"))
    if min_agreement is not None:
        ag = result["agreement"]["top1_all"]
        if ag is None:
            raise BatchclsError("--min-agreement: no image has a prediction in either run")
        checks.append((bool(ag >= min_agreement - 1e-12),
                       f"top-1 agreement {ag:.3f}% (required >= {min_agreement:g}%) over "
                       f"{result['agreement']['count_any']} images"))
    significance = _significance(result)
    if not checks:
        return {"passed": None, "line": "no gate: " + significance, "checks": [], "significance": significance}
    passed = all(ok for ok, _ in checks)
    line = ("PASS: " if passed else "FAIL: ") + "; ".join(("" if ok else "NOT MET: ") + text for ok, text in checks)
    return {"passed": passed, "line": line, "checks": [{"passed": ok, "text": text} for ok, text in checks],
            "significance": significance}


def _significance(result: dict) -> str:
    t1 = result.get("top1")
    if not t1:
        ag = result["agreement"]
        return f"no labels; top-1 agreement {_f(ag['top1'])}% over {ag['count']} images both got"
    lo, hi = t1["ci95"]
    sig = "significant" if t1["mcnemar_p"] < ALPHA else "not significant"
    p = format_p(t1["mcnemar_p"])
    return (f"B - A top-1 {t1['diff']:+.3f} points (95% CI {lo:+.3f} .. {hi:+.3f}), McNemar p "
            f"{p if p.startswith('<') else '= ' + p}: {sig} at {ALPHA:g}")


def format_p(p: float | None) -> str:
    """A p-value for people: below double precision it is shown as a bound, not as 0."""
    if p is None:
        return "n/a"
    return "< 1e-300" if p < 1e-300 else f"{p:.3g}"


def _f(v, fmt=".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _accuracy_lines(result: dict) -> list[str]:
    lines = [f"{'':34}{'A':>9}{'B':>9}{'B - A':>9}  {'95% CI':>18}  McNemar p"]
    for key, label in (("top1", "top-1"), ("top5", "top-5"), ("top1_all", "top-1, failures as misses"),
                       ("top5_all", "top-5, failures as misses")):
        r = result.get(key)
        if not r:
            continue
        ci = f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"
        p = format_p(r["mcnemar_p"]) if "mcnemar_p" in r else ""
        lines.append(f"{label + ' (' + str(r['count']) + ')':34}{r['a']:>9.3f}{r['b']:>9.3f}{r['diff']:>+9.3f}"
                     f"  {ci:>18}  {p}")
    t = (result.get("top1") or {}).get("table")
    if t:
        lines.append(f"top-1 pairs: both right {t['both_right']}, A right B wrong {t['a_right_b_wrong']}, "
                     f"A wrong B right {t['a_wrong_b_right']}, both wrong {t['both_wrong']}")
    return lines


def format_compare(result: dict, verdict: dict) -> str:
    """The printed summary of `batchcls compare`."""
    a, b, d = result["a"], result["b"], result["dropped"]
    lines = [f"== A: {a['source']} ({a['model'] or '?'})  vs  B: {b['source']} ({b['model'] or '?'}) ==",
             f"images paired {result['paired']}" + (f" (dropped {d['only_a']} only in A, {d['only_b']} only in B)"
                                                    if d["only_a"] or d["only_b"] else "")]
    if result.get("labelled"):
        lines += _accuracy_lines(result)
    else:
        lines.append("no labels: accuracy not available")
    ag = result["agreement"]
    lines.append(f"agreement over {ag['count']} images both got: top-1 {_f(ag['top1'])}%, "
                 f"top-5 set {_f(ag['top5_set'])}%")
    lg = result.get("logits")
    if lg:
        lines.append(f"logits: KL(A||B) mean {lg['kl_mean']:.5f}, max {lg['kl_max']:.5f} nats; |dp| of A's top-1 "
                     f"class max {lg['top1_prob_abs_diff_max']:.4f}, mean {lg['top1_prob_abs_diff_mean']:.4f}")
    for key, title in (("lost", "lost most"), ("gained", "gained most")):
        rows = result["classes"][key][:5]
        if rows:
            lines.append(f"{title}: " + "; ".join(f"{r['class']} {r['name']} {r['a']:.1f}->{r['b']:.1f}% "
                                                   f"(n={r['count']})" for r in rows))
    f = result["failures"]
    for key, who in (("only_a", "A"), ("only_b", "B")):
        if f[key]["count"]:
            reasons = ", ".join(f"{n} x {r}" for r, n in list(f[key]["by_reason"].items())[:3])
            lines.append(f"failed only in {who}: {f[key]['count']} ({reasons}); e.g. {f[key]['examples'][0][0]}")
    if f["both"]:
        lines.append(f"failed in both: {f['both']}")
    lines.append(verdict["line"])
    return "\n".join(lines)
