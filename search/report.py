"""The study's result: ``summary.json``, ``report.md``, ``report.html`` and ``front.png``.

``summary.json`` (the parity report's search section reads it)::

    {"schema": "tinygru.search.summary/1", "study", "storage", "config", "target",
     "task", "score": {"name", "direction", "measured_on"}, "recipe", "space", "folds",
     "trials": {"total", "complete", "pruned", "rejected", "failed", "wall_seconds",
                "trial_seconds": {"median", "total"}},
     "probe_error": {...},            # pre-training probe vs trained model
     "fold_seconds": s,               # training and scoring the folds
     "front": [point, ...],           # ≤ 8 points, each:
        {"trial", "label", "candidate", "baseline", "val_score", "fold_scores",
         "fold_mean", "fold_std", "instructions_per_step", "steps_per_second",
         "instructions_per_second", "flash_bytes", "ram_bytes", "params", "chosen"},
     "front_size": n,                 # points on the full front before thinning
     "baseline": point | null,        # the hand-picked default, same keys
     "chosen": {"trial", "config", ...point},
     "seeds": {"chosen": {...}, "baseline": {...}} | null}

The plot: validation score against instructions per second of sensor data
(log axis), marker area proportional to flash; every finished trial in grey,
the front in blue (its fold mean), the default and the chosen point marked.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

SCHEMA = "tinygru.search.summary/1"


def plot(path: Path, summary: dict[str, Any], others: list[dict[str, Any]]) -> None:
    """``front.png`` (module doc); ``others`` are the remaining complete trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flash = [p["flash_bytes"] for p in [*summary["front"], *others]] or [1]
    big = max(flash)

    def area(b: float) -> float:
        return 30 + 400 * b / big

    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=100)
    if others:
        ax.scatter([p["instructions_per_second"] for p in others],
                   [p["val_score"] for p in others], s=[area(p["flash_bytes"]) for p in others],
                   c="0.75", alpha=0.6, label="other trials (search validation)")  # fmt: skip
    front = summary["front"]
    ys = [p.get("fold_mean", p["val_score"]) for p in front]
    ax.scatter([p["instructions_per_second"] for p in front], ys,
               s=[area(p["flash_bytes"]) for p in front], c="tab:blue", alpha=0.75,
               edgecolors="k", linewidths=0.5, label="front (mean over folds)")  # fmt: skip
    base = summary.get("baseline")
    if base:
        ax.scatter([base["instructions_per_second"]], [base.get("fold_mean", base["val_score"])],
                   s=area(base["flash_bytes"]), facecolors="none", edgecolors="k",
                   linewidths=2.0, marker="s", label="default (hand-picked)")  # fmt: skip
    ch = summary.get("chosen")
    if ch:
        ax.scatter([ch["instructions_per_second"]], [ch["fold_mean"]], s=260, marker="*",
                   c="tab:red", edgecolors="k", linewidths=0.6, label="chosen")  # fmt: skip
    for p, y in zip(front, ys, strict=True):
        ax.annotate(f"#{p['trial']}", (p["instructions_per_second"], y), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(f"instructions per second of sensor data ({summary['target']['board']})")
    ax.set_ylabel(summary["score"]["label"])
    ax.set_title(f"{summary['study']}: marker area ∝ flash (largest {big:,} B)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _count(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def front_table(summary: dict[str, Any]) -> list[list[str]]:
    head = ["trial", "model", "val (search)", "fold mean ± std", "instr/step", "steps/s",
            "instr/s", "flash B", "RAM B", "note"]  # fmt: skip
    rows = [head]
    pts = list(summary["front"])
    base = summary.get("baseline")
    if base and all(p["trial"] != base["trial"] for p in pts):
        pts.append(base)
    for p in pts:
        fm = p.get("fold_mean")
        folds = f"{fm:.4f} ± {p['fold_std']:.4f}" if fm is not None else "n/a"
        notes = [n for n, on in (("chosen", p.get("chosen")), ("default", p.get("baseline"))) if on]
        rows.append([f"#{p['trial']}", str(p["label"]), _fmt(p["val_score"]), folds,
                     f"{p['instructions_per_step']:,.0f}", _fmt(p["steps_per_second"], 1),
                     f"{p['instructions_per_second']:,.0f}", _fmt(p["flash_bytes"]),
                     _fmt(p["ram_bytes"]), ", ".join(notes)])  # fmt: skip
    return rows


def seeds_table(summary: dict[str, Any]) -> list[list[str]]:
    seeds = summary.get("seeds") or {}
    if not seeds:
        return []
    task = summary["task"]
    key = "accuracy" if task == "classification" else "margin"
    key2 = "macro_f1" if task == "classification" else "point_auc"
    rows = [["config", "seeds", f"float test {key}", f"int8 test {key}", f"int8 test {key2}",
             "deployed seed", f"deployed int8 test {key}", "instr/s"]]  # fmt: skip
    for name, s in seeds.items():
        t = s["test"]
        dep = s["deployed"]["test"]["int8"]

        def ms(d: dict[str, Any]) -> str:
            return "n/a" if d["mean"] is None else f"{d['mean']:.4f} ± {d['std']:.4f}"

        rows.append([f"{name}: {s['label']}", ",".join(map(str, s["seeds"])), ms(t["float"][key]),
                     ms(t["int8"][key]), ms(t["int8"][key2]), str(s["deployed_seed"]),
                     _fmt(dep.get(key)), _count(s.get("instructions_per_second"))])  # fmt: skip
    return rows


def _md_table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    return "\n".join(out)


def _text(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(heading or paragraph kind, text) blocks shared by the Markdown and HTML pages."""
    t = summary["trials"]
    tg = summary["target"]
    blocks = [
        ("p", f"Config `{summary['config']}`, target `{tg['name']}` ({tg['board']}, "
              f"{tg['clock_hz'] / 1e6:g} MHz; budgets {tg['flash_bytes']:,} B flash, "
              f"{tg['ram_bytes']:,} B RAM), storage `{summary['storage']}`."),
        ("p", f"Trials: {t['total']} ({t['complete']} complete, {t['pruned']} pruned while "
              f"training, {t['rejected']} rejected before training by the budget, "
              f"{t['failed']} failed); wall time {t['wall_seconds'] / 60:.1f} min "
              f"(median trial {t['trial_seconds']['median']:.0f} s); re-scoring the front over "
              f"folds {summary.get('fold_seconds', 0) / 60:.1f} min."),
        ("p", f"Score: {summary['score']['label']} ({summary['score']['direction']}), "
              f"{summary['score']['measured_on']}. The front ({len(summary['front'])} of "
              f"{summary['front_size']} points) is re-scored over {summary['folds']} group folds "
              "of the non-test groups; the choice is the best fold mean. Test data is read "
              "only afterwards, by the seed runs."),
    ]  # fmt: skip
    pe = summary.get("probe_error")
    if pe and pe.get("n"):
        blocks.append(("p", f"Pre-training probe vs the trained model over {pe['n']} trials: "
                            f"instructions per step within {100 * pe['instructions_max_rel']:.2f} % "
                            f"(median {100 * pe['instructions_median_rel']:.2f} %), flash within "
                            f"{pe['flash_max_abs']} B, RAM within {pe['ram_max_abs']} B."))  # fmt: skip
    ch = summary.get("chosen")
    if ch:
        blocks.append(("p", f"Chosen: trial #{ch['trial']} ({ch['label']}), written as "
                            f"`{ch['config']}` (`python -m train --config` reads it; its "
                            "`[prune]` section pins sparsity and granularity)."))  # fmt: skip
    return blocks


def write(out: Path, summary: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Path]:
    """summary.json, front.png, report.md and report.html in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {"schema": SCHEMA, **summary}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    png = out / "front.png"
    plot(png, summary, others)
    ft, st = front_table(summary), seeds_table(summary)
    md = [f"# Model search: {summary['study']}", ""]
    for _, text in _text(summary):
        md += [text, ""]
    md += ["## Pareto front", "", _md_table(ft), "", "![front](front.png)", ""]
    if st:
        md += ["## Test over seeds (after the choice)", "", _md_table(st), ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")

    def table(rows: list[list[str]]) -> str:
        if not rows:
            return ""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    img = base64.b64encode(png.read_bytes()).decode()
    paras = "".join(f"<p>{html.escape(t)}</p>" for _, t in _text(summary))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Model search: {html.escape(summary['study'])}</title><style>"
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .5em}"
        "</style></head><body>"
        f"<h1>Model search: {html.escape(summary['study'])}</h1>{paras}"
        f"<h2>Pareto front</h2>{table(ft)}<p><img alt='front' src='data:image/png;base64,{img}'></p>"
        + (f"<h2>Test over seeds (after the choice)</h2>{table(st)}" if st else "")
        + "</body></html>\n"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    return {"summary": out / "summary.json", "md": out / "report.md", "html": out / "report.html",
            "png": png}  # fmt: skip
