"""report.md and report.html from the collected tasks and their figures."""

from __future__ import annotations

import base64
import html
from typing import Any

from report.figures import Figure

TITLE = "tinygru parity report"


def fmt(value: Any, kind: str, unit: str | None = None) -> str:
    """One cell's text; ``None`` (not applicable) prints as n/a."""
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind in ("f2", "f3", "f4", "f6"):
        return f"{value:.{kind[1]}f}"
    if kind == "g4":
        return f"{value:.4g}"
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "count":
        return f"{int(value):,}"
    if kind == "bytes":
        return f"{int(value):,}"
    if kind == "latency":
        if unit == "instructions_per_step":
            return f"{value:,.0f} instructions"
        return f"{value:#.3g} µs" if value < 100 else f"{value:,.0f} µs"
    raise ValueError(f"unknown cell kind {kind!r}")


def cells(task: dict[str, Any], row: dict[str, Any]) -> list[tuple[str, int | None]]:
    """(text, footnote number) of every cell of a row, in column order."""
    out = []
    for col in task["columns"]:
        text = fmt(row["cells"][col["key"]], col["kind"], row["latency_unit"])
        out.append((text, row["notes"].get(col["key"])))
    return out


def heading(task: dict[str, Any]) -> str:
    what = "activity classifier" if task["task"] == "classification" else "anomaly forecaster"
    pruned = ", pruned" if task["pruned"] else ""
    return f"{task['name']} — {what}{pruned} ({task['dataset']}, bundle {task['bundle']})"


INTRO = (
    "Every row runs the same test data. Agreement, errors, L2R (‖out − float‖ / ‖float‖) "
    "and cosine compare each backend's outputs with the float Keras model that was "
    "converted{pruned}. Latency: µs per step on the host rows, instructions per step on "
    "the Cortex-M rows."
)


QAT_INTRO = (
    " The converted model is the quantization-aware fine-tuned one; the rows marked PTQ "
    "run the model before QAT converted the same way, compared with the float model before "
    "QAT: PTQ and QAT side by side."
)


def intro(task: dict[str, Any]) -> str:
    which = " (the pruned model)" if task["pruned"] else ""
    if task.get("qat"):
        which = " (the QAT model)"
    warning = f" WARNING: {task['warning']}." if task.get("warning") else ""
    return INTRO.format(pruned=which) + (QAT_INTRO if task.get("qat") else "") + warning


# --------------------------------------------------------------------------- Markdown


def _md_row(values: list[str]) -> str:
    return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"


def _md_sweep(sw: dict[str, Any]) -> list[str]:
    lines = [_md_row(["granularity", "target", "achieved", "val", "test"])]
    lines.append(_md_row(["---"] * 5))
    for r in sw["rows"]:
        lines.append(
            _md_row(
                [
                    r["granularity"],
                    f"{r['target']:.2f}",
                    f"{100 * r['achieved']:.1f}%",
                    f"{r['val']:.4f}",
                    f"{r['test']:.4f}",
                ]
            )
        )
    if sw.get("choice"):
        lines += ["", f"Deployed: {sw['choice']['why']}."]
    return lines


def target_lines(ot: dict[str, Any] | None) -> tuple[str, list[list[str]]]:
    """The target paragraph and its table rows (row, instructions, time, share)."""
    if not ot:
        return "", []
    tg = ot["target"]
    head = (f"On the target {tg['name']} ({tg['description']}): the instructions per step "
            f"measured under QEMU on its board {ot.get('board', tg.get('board'))} ÷ "
            f"{tg['clock_hz'] / 1e6:g} MHz, a lower bound of the time per step, and the share "
            f"of the sample period ({ot['sample_rate_hz']:g} Hz, {ot['steps_per_sample']:g} "
            "step per sample) it uses."
            + (" The other cores' rows are not at this clock: a target file for their core "
               "(make demo TARGET=…) gives them this table." if ot.get("other_cores") else ""))  # fmt: skip
    rows = [[r["row"], f"{r['instructions_per_step']:,.0f}", f"≥ {1e6 * r['time_per_step_s']:.1f} µs",
             f"≥ {100 * r['share_of_period']:.2f}%"] for r in ot["rows"]]  # fmt: skip
    return head, rows


def _md_target(ot: dict[str, Any] | None) -> list[str]:
    head, rows = target_lines(ot)
    if not head:
        return []
    lines = ["", head, "", _md_row(["row", "instructions per step", "time per step",
                                    "share of the sample period"]), _md_row(["---"] * 4)]  # fmt: skip
    return lines + [_md_row(r) for r in rows]


def _md_versioning(v: dict[str, Any]) -> list[str]:
    ds = v["dataset"]
    lines = [
        "### Versions",
        "",
        f"- data set: `{ds['id']}`, sha256 `{ds['sha256']}`",
        f"- git commit of this report: `{v['git_commit']}`",
    ]
    commits = sorted(set(v["stage_commits"].values()))
    lines.append(f"- git commit of the stages: {', '.join(f'`{c}`' for c in commits)}")
    libs = ", ".join(f"{x['name']} {x['version']} ({x['from']})" for x in v["libraries"])
    lines.append(f"- libraries: {libs}")
    seeds = ", ".join(f"{k} {val}" for k, val in v["seeds"].items())
    lines.append(f"- seeds: {seeds or 'none recorded'}")
    sel = v["selection"]
    lines += ["", "Model selection (reports/train.json):", ""]
    if sel["candidates"]:
        lines.append(
            _md_row(["candidate", "params", "epochs", "val accuracy", "val macro-F1", "selected"])
        )
        lines.append(_md_row(["---"] * 6))
        for c in sel["candidates"]:
            lines.append(
                _md_row(
                    [
                        str(c["name"]),
                        str(c["params"]),
                        str(c["epochs_run"]),
                        _opt(c["val_accuracy"]),
                        _opt(c["val_macro_f1"]),
                        "yes" if c["selected"] else "",
                    ]
                )
            )
        lines.append(f"\nselected on {sel['metric']} (validation subjects only)")
    else:
        lines.append("one configuration was trained; there was no selection.")
    lines += ["", "Artifacts (manifest):", "", _md_row(["file", "bytes", "sha256", "on disk"])]
    lines.append(_md_row(["---"] * 4))
    for a in v["artifacts"]:
        lines.append(_md_row([a["name"], f"{a['bytes']:,}", f"`{a['sha256']}`", a["on_disk"]]))
    return lines


def _opt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def markdown(tasks: list[dict[str, Any]], figs: dict[str, list[Figure]]) -> str:
    lines = [f"# {TITLE}", ""]
    for t in tasks:
        lines += [f"## {heading(t)}", "", intro(t), ""]
        lines.append(_md_row(["backend", *[c["title"] for c in t["columns"]]]))
        lines.append(_md_row(["---"] * (len(t["columns"]) + 1)))
        for r in t["rows"]:
            texts = [f"{x} [{n}]" if n else x for x, n in cells(t, r)]
            lines.append(_md_row([r["title"], *texts]))
        lines.append("")
        lines += [f"[{n['n']}] {n['text']}  " for n in t["footnotes"]]
        lines += _md_target(t.get("on_target"))
        for f in figs[t["name"]]:
            lines += ["", f"### {f.title}", "", f"![{f.title}]({f.name})", "", f.caption]
            if f.name.endswith("_per_class_f1.png"):
                cls = t["classes"]
                lines += ["", _md_row(["class", *[r["title"] for r in cls["rows"]]])]
                lines.append(_md_row(["---"] * (len(cls["rows"]) + 1)))
                for i, lab in enumerate(t["labels"]):
                    vals = [_opt(cls["per_class_f1"][r["key"]][i]) for r in cls["rows"]]
                    lines.append(_md_row([lab, *vals]))
            if f.name.endswith("_sparsity.png"):
                lines += ["", *_md_sweep(t["sweep"])]
        lines += ["", *_md_versioning(t["versioning"]), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24;
  margin: 24px auto; max-width: 1240px; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 36px; border-bottom: 2px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin-top: 22px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; }
thead th { background: #f3f5f7; vertical-align: bottom; }
td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody th { text-align: left; font-weight: 600; white-space: nowrap; }
table.parity tbody tr:nth-child(even) { background: #fafbfc; }
td.na { color: #6e7781; text-align: center; }
sup { color: #0969da; }
ol.notes { font-size: 12px; color: #57606a; padding-left: 20px; }
img { max-width: 100%; display: block; margin: 6px 0; }
p.caption { font-size: 12px; color: #57606a; margin-top: 0; }
code { font-size: 12px; }
td.hash { text-align: left; font-family: ui-monospace, monospace; font-size: 11px; }
"""


def _e(s: Any) -> str:
    return html.escape(str(s))


def _h_table(header: list[str], rows: list[list[str]], cls: str = "") -> list[str]:
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append(f'<tr><th scope="row">{_e(r[0])}</th>')
        out += [f"<td>{_e(c)}</td>" for c in r[1:]]
        out.append("</tr>")
    out.append("</tbody></table>")
    return out


def _h_parity(t: dict[str, Any]) -> list[str]:
    out = ['<table class="parity">', "<thead><tr><th>backend</th>"]
    out += [f"<th>{_e(c['title'])}</th>" for c in t["columns"]]
    out.append("</tr></thead><tbody>")
    for r in t["rows"]:
        tip = f"{r['source']}: {r['description']}" if r.get("description") else r["source"]
        out.append(f'<tr data-backend="{_e(r["key"])}"><th scope="row" title="{_e(tip)}">')
        out.append(f"{_e(r['title'])}</th>")
        for text, n in cells(t, r):
            na = ' class="na"' if text == "n/a" else ""
            sup = f"<sup>{n}</sup>" if n else ""
            out.append(f"<td{na}>{_e(text)}{sup}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append('<ol class="notes">')
    out += [f"<li>{_e(n['text'])}</li>" for n in t["footnotes"]]
    out.append("</ol>")
    return out


def _h_figure(f: Figure) -> list[str]:
    data = base64.b64encode(f.png).decode("ascii")
    return [
        f"<h3>{_e(f.title)}</h3>",
        f'<img alt="{_e(f.title)}" src="data:image/png;base64,{data}">',
        f'<p class="caption">{_e(f.caption)}</p>',
    ]


def _h_versioning(v: dict[str, Any]) -> list[str]:
    ds = v["dataset"]
    commits = sorted(set(v["stage_commits"].values()))
    out = ["<h3>Versions</h3>", "<ul>"]
    out.append(
        f"<li>data set <code>{_e(ds['id'])}</code>, sha256 <code>{_e(ds['sha256'])}</code></li>"
    )
    out.append(f"<li>git commit of this report <code>{_e(v['git_commit'])}</code></li>")
    out.append(
        "<li>git commit of the stages "
        + ", ".join(f"<code>{_e(c)}</code>" for c in commits)
        + "</li>"
    )
    seeds = ", ".join(f"{k} {val}" for k, val in v["seeds"].items()) or "none recorded"
    out.append(f"<li>seeds: {_e(seeds)}</li></ul>")
    out += _h_table(
        ["library", "version", "recorded by"],
        [[x["name"], x["version"], x["from"]] for x in v["libraries"]],
    )
    sel = v["selection"]
    out.append("<h3>Model selection (reports/train.json)</h3>")
    if sel["candidates"]:
        rows = [
            [
                str(c["name"]),
                str(c["params"]),
                str(c["epochs_run"]),
                _opt(c["val_accuracy"]),
                _opt(c["val_macro_f1"]),
                "selected" if c["selected"] else "",
            ]
            for c in sel["candidates"]
        ]
        out += _h_table(["candidate", "params", "epochs", "val accuracy", "val macro-F1", ""], rows)
        out.append(f'<p class="caption">Selected on {_e(sel["metric"])}, validation data only.</p>')
    else:
        out.append("<p>One configuration was trained; there was no selection.</p>")
    out.append("<h3>Artifacts (manifest)</h3><table><thead><tr>")
    out += [f"<th>{h}</th>" for h in ("file", "bytes", "sha256", "on disk")]
    out.append("</tr></thead><tbody>")
    for a in v["artifacts"]:
        out.append(
            f'<tr><th scope="row">{_e(a["name"])}</th><td>{a["bytes"]:,}</td>'
            f'<td class="hash">{_e(a["sha256"])}</td><td>{_e(a["on_disk"])}</td></tr>'
        )
    out.append("</tbody></table>")
    return out


def page(tasks: list[dict[str, Any]], figs: dict[str, list[Figure]]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{TITLE}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{TITLE}</h1>",
        "<p>" + _e(", ".join(t["bundle"] for t in tasks)) + "</p>",
    ]
    for t in tasks:
        out.append(f'<section id="task-{_e(t["name"])}">')
        out += [f"<h2>{_e(heading(t))}</h2>", f"<p>{_e(intro(t))}</p>", *_h_parity(t)]
        head, trows = target_lines(t.get("on_target"))
        if head:
            out.append(f"<p>{_e(head)}</p><table><tr>" + "".join(
                f"<th>{h}</th>" for h in ("row", "instructions per step", "time per step",
                                          "share of the sample period")) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>"
                          for r in trows) + "</table>")  # fmt: skip
        for f in figs[t["name"]]:
            out += _h_figure(f)
            if f.name.endswith("_per_class_f1.png"):
                cls = t["classes"]
                rows = [
                    [lab, *[_opt(cls["per_class_f1"][r["key"]][i]) for r in cls["rows"]]]
                    for i, lab in enumerate(t["labels"])
                ]
                out += _h_table(["class", *[r["title"] for r in cls["rows"]]], rows)
            if f.name.endswith("_sparsity.png"):
                rows = [
                    [
                        r["granularity"],
                        f"{r['target']:.2f}",
                        f"{100 * r['achieved']:.1f}%",
                        f"{r['val']:.4f}",
                        f"{r['test']:.4f}",
                    ]
                    for r in t["sweep"]["rows"]
                ]
                out += _h_table(["granularity", "target", "achieved", "val", "test"], rows)
        out += _h_versioning(t["versioning"])
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
