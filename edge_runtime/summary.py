"""Print the figures the stages measured, read from a bundle's reports (no TensorFlow).

    python -m edge_runtime.summary build/har build/anomaly

Used by ``make demo`` (its closing summary) and ``make bench``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _read(bundle: Path, name: str) -> dict | None:
    path = bundle / "reports" / name
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "–" if v is None else format(v, fmt)


def train_lines(rep: dict) -> list[str]:
    t = rep["test"]
    if "accuracy" in t:
        s = rep["summary"]
        return [
            f"  float model: {rep['params']} params, test accuracy {_pct(t['accuracy'])}, "
            f"macro-F1 {t['macro_f1']:.4f} over {t['n']} windows "
            f"(seeds {len(s['accuracy']['values'])}: accuracy {_pct(s['accuracy']['mean'])} "
            f"± {100 * s['accuracy']['std']:.2f})"
        ] + ([f"  WARNING: {rep['skill']['warning']}"] if (rep.get("skill") or {}).get("warning")
             else [])  # fmt: skip
    if t.get("hit") is None:  # a series without labelled anomaly
        return [f"  float forecaster: peak {t['peak']} (no labelled anomaly), threshold "
                f"{_num(t.get('threshold'))}, {t.get('alarm_events')} alarm events"]  # fmt: skip
    base = rep["baseline_persistence"]
    return [
        f"  float forecaster: peak {t['peak']} (labelled {t['labelled']}) hit={t['hit']}, "
        f"margin {t['margin']:.2f} (persistence {base['margin']:.2f}), point AUC "
        f"{t['point_auc']:.3f} (persistence {base['point_auc']:.3f}), window AUC "
        f"{t['window_auc']:.3f}, false alarms {t.get('false_alarms')}, "
        f"detection delay {t.get('detection_delay')}"
    ]


def parity_lines(rep: dict) -> list[str]:
    alarms: list[str] = []
    lines = ["  backend          accuracy  macro-F1  agree  max|err|   RMSE      L2R     cosine"]
    for name, b in rep["backends"].items():
        if "accuracy" in b:
            head = f"{_pct(b.get('accuracy')):>9} {_num(b.get('macro_f1'), '.4f'):>9}"
        else:
            head = f"hit={b.get('hit')!s:5} margin {_num(b.get('margin'), '.2f'):>5}"
            alarms.append(f"{name} {_num(b.get('threshold'))} ({b.get('false_alarms')} false "
                          f"alarms, delay {b.get('detection_delay')})")  # fmt: skip
        lines.append(
            f"  {name:16s} {head} {_pct(b.get('argmax_agreement')):>7} "
            f"{_num(b.get('max_abs_err')):>8} {_num(b.get('rmse')):>8} "
            f"{_num(b.get('l2r')):>8} {_num(b.get('cosine'), '.6f'):>9}"
        )
    if alarms:
        lines.append("  thresholds (float model's; int8 chain's): " + ", ".join(alarms))
    s = rep.get("sizes", {})
    arena = (s.get("tflm_arena") or {}).get("bytes")
    lines.append(
        f"  step_int8.tflite {s.get('step_int8.tflite')} B ({s.get('step_ops')} ops), "
        f"host (x86-64) TFLM arena {arena} B"
    )
    chain = (rep.get("litert_vs_tflm") or {}).get("chain")
    if chain:
        line = f"  LiteRT vs TFLM over chains: {_pct(chain['fraction_values_differ'])} of values"
        if chain.get("windows_argmax_differ") is not None:  # None for a forecaster: no class
            line += f", {chain['windows_argmax_differ']} of {chain['windows']} windows change class"
        lines.append(line)
    return lines


def engine_lines(rep: dict) -> list[str]:
    # agreement as in the parity table: with the float model the step was converted from
    # (the backend entry); the report's top-level agreement_with_float is against
    # reference.npz, the train stage's model, which pruning and QAT have since changed
    b = rep.get("backend") or {}
    agree = b["argmax_agreement"] if "argmax_agreement" in b else rep.get("agreement_with_float")
    return [
        f"  C engine vs TFLM: {rep['mismatches']} mismatches over {rep['steps_compared']} steps "
        f"(tolerance {rep['tolerance']}); accuracy {_pct(rep.get('accuracy'))}, agreement with "
        f"float {_pct(agree)}; state {rep.get('state_bytes')} B, "
        f"scratch {rep.get('scratch_bytes')} B"
    ]


def summarize(bundle: Path) -> list[str]:
    if not (bundle / "manifest.json").is_file():
        return [f"{bundle}: no bundle (run `make demo`)"]
    lines = [f"{bundle}:"]
    sp = json.loads((bundle / "manifest.json").read_text()).get("sparsity") or {}
    if sp.get("why"):
        lines.append(f"  deployed model: {sp['why']}")
    for name, fn in (
        ("train.json", train_lines),
        ("parity.json", parity_lines),
        ("engine.json", engine_lines),
    ):
        rep = _read(bundle, name)
        if rep is not None:
            lines += fn(rep)
    return lines


def main(argv: list[str] | None = None) -> int:
    bundles = (sys.argv[1:] if argv is None else argv) or ["build/har", "build/anomaly"]
    for b in bundles:
        print("\n".join(summarize(Path(b))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
