"""The parity report as a Markdown page (``reports/parity.md``) and as two printed lines."""

from __future__ import annotations

from typing import Any

from edge_runtime import contract

STEP_FILE = contract.STEP_MODEL
WINDOW_FILE = contract.WINDOW_MODEL
# Rows of the backend table: (entry key, shown as a percentage).
CLASSIFICATION_ROWS = (
    ("accuracy", True),
    ("macro_f1", False),
    ("argmax_agreement", True),
    ("max_abs_err", False),
    ("mean_abs_err", False),
    ("rmse", False),
    ("l2r", False),
    ("cosine", False),
    ("model_bytes", False),
)
FORECAST_ROWS = tuple(
    (key, False)
    for key in (
        "hit",
        "peak",
        "margin",
        "point_auc",
        "window_auc",
        "false_alarms",
        "forecast_mae",
        "forecast_max_abs_err",
        "max_abs_err",
        "mean_abs_err",
        "rmse",
        "cosine",
        "model_bytes",
    )
)


def fmt(v: Any, pct: bool = False) -> str:
    """A cell: – for None, yes/no, integers as they are, floats to 4 digits or as %."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.4g}"
    return str(v)


def render_markdown(report: dict[str, Any], name: str, labels: list[str]) -> str:
    """The parity report as a Markdown page: one column per backend."""
    lines = [
        *_backends(report, name),
        *_per_class(report, labels),
        *_ptq_vs_qat(report.get("qat")),
        *_interpreters(report),
        *_sizes(report["sizes"]),
        *_thresholds(report.get("thresholds")),
    ]
    return "\n".join(lines) + "\n"


def _backends(report: dict[str, Any], name: str) -> list[str]:
    be = report["backends"]
    cols = list(be)
    ref = report["reference"]
    lines = [
        f"# Parity: {name}",
        "",
        f"Task: {report['task']}; {ref['series']} reference series × "
        f"{ref['steps_per_series']} steps; int8 input from int16 counts "
        "(device contract). Parity columns compare with the `float` step chain of "
        f"`{report['source_model']}`.",
        "",
        "| | " + " | ".join(f"`{c}`" for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    rows = CLASSIFICATION_ROWS if report["task"] == "classification" else FORECAST_ROWS
    for key, pct in rows:
        lines.append(f"| {key} | " + " | ".join(fmt(be[c][key], pct) for c in cols) + " |")
    return lines


def _per_class(report: dict[str, Any], labels: list[str]) -> list[str]:
    if report["task"] != "classification":
        return []
    be = report["backends"]
    cols = list(be)
    lines = ["", "Per-class F1:", "", "| class | " + " | ".join(cols) + " |"]
    lines.append("|---|" + "---|" * len(cols))
    for lab in labels:
        cells = " | ".join(fmt(be[c]["per_class_f1"][lab]) for c in cols)
        lines.append(f"| {lab} | {cells} |")
    return lines


PCT_KEYS = ("accuracy", "argmax_agreement")


def _ptq_vs_qat(q: dict[str, Any] | None) -> list[str]:
    """PTQ and QAT side by side (only when the step is a QAT one)."""
    if not q:
        return []
    keys = q["keys"]
    lines = [
        "",
        f"## PTQ vs QAT (`{q['ptq_model']}` vs `{q['qat_model']}`)",
        "",
        f"Compared: {q['compared']}.",
        "",
        "| backend | " + " | ".join(f"{k} PTQ | {k} QAT" for k in keys) + " |",
        "|---|" + "---|---|" * len(keys),
    ]
    for name, row in q["rows"].items():
        cells = [f"{fmt(row[k]['ptq'], k in PCT_KEYS)} | {fmt(row[k]['qat'], k in PCT_KEYS)}"
                 for k in keys]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _interpreters(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Interpreters (int8 steps)",
        "",
        "| comparison | values differ | max diff | windows with other argmax |",
        "|---|---|---|---|",
    ]
    for key in ("litert_vs_tflm", "litert_xnnpack_vs_tflm"):
        for kind in ("single_step", "chain"):
            c = report[key][kind]
            flips = (
                "–"
                if c["windows_argmax_differ"] is None
                else f"{c['windows_argmax_differ']} of {c['windows']}"
            )
            lines.append(
                f"| {key.replace('_vs_', ' vs ')}, {kind.replace('_', ' ')} | "
                f"{c['values_differ']} of {c['values']} "
                f"({100 * c['fraction_values_differ']:.3f}%) | {c['max_diff_steps']} | {flips} |"
            )
    return lines


def _sizes(s: dict[str, Any]) -> list[str]:
    arena = s.get("tflm_arena") or {}
    return [
        "",
        "## Sizes",
        "",
        f"- `{STEP_FILE}`: {s[STEP_FILE]} B ({s['step_ops']} ops, {s['step_tensors']} tensors; "
        f"gzip -9: {s[f'{STEP_FILE}.gz']} B)",
        f"- {arena.get('label', 'TFLM arena')}: {arena.get('bytes', '–')} B",
        f"- `{WINDOW_FILE}`: {s[WINDOW_FILE] if s[WINDOW_FILE] is not None else '–'} B",
        f"- `model_float.keras`: {s['model_float.keras']} B",
    ]


def _thresholds(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return []
    lines = ["", "## Device thresholds", ""]
    lines += [f"- {k}: {fmt(v)}" for k, v in t.items() if k not in ("measured", "derivation")]
    lines.append(f"- derived: {t['derivation']}")
    return lines


def print_summary(report: dict[str, Any]) -> None:
    """Each backend's headline figures and LiteRT vs TFLM, on two lines."""
    be = report["backends"]
    if report["task"] == "classification":
        parts = [
            f"{n} acc {e['accuracy']:.4f} agree {fmt(e['argmax_agreement'])}" for n, e in be.items()
        ]
    else:
        parts = [
            f"{n} hit={fmt(e['hit'])} margin {fmt(e['margin'])} AUC {fmt(e['point_auc'])} "
            f"alarms {fmt(e.get('alarm_events'))}"
            for n, e in be.items()
        ]
    c = report["litert_vs_tflm"]
    print("[quantize] check: " + "; ".join(parts))
    flips = c["chain"]["windows_argmax_differ"]
    print(
        f"[quantize] check: LiteRT vs TFLM: single step max diff "
        f"{c['single_step']['max_diff_steps']} step(s), {c['single_step']['values_differ']} "
        f"values differ; chains: {100 * c['chain']['fraction_values_differ']:.3f}% values"
        + (f", {flips} windows change class" if flips is not None else "")
    )
