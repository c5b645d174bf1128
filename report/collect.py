"""A bundle's stage reports → the report's data for one task (tables, plot data, versions).

Everything here is read, never recomputed: the backend rows come from
``reports/parity.json`` (float Keras, LiteRT built-in and XNNPACK, TFLM; with
quantization-aware fine-tuning also the float model before QAT and the PTQ step on
each int8 backend, side by side with the QAT rows) and from
the ``backend`` entry of ``reports/engine.json``, ``reports/mcu_m4.json``,
``reports/mcu_m3.json`` and ``reports/runtime.json``, which carry the same keys
as a parity backend entry plus ``ram_bytes`` and ``us_per_step`` or
``instructions_per_step`` (in the entry or at the file's top level).

A missing file or field is a :class:`ReportError` naming the bundle, the file and
the field; a cell that cannot apply to a row (the RAM of a Keras model) is
``None`` with a footnote saying why. There are no empty cells.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_runtime import boards, contract
from edge_runtime.bundle import Bundle, BundleError

ROOT = Path(__file__).resolve().parents[1]


class ReportError(Exception):
    """A bundle cannot be reported on: a file or a field is missing or malformed."""


@dataclass(frozen=True)
class Column:
    key: str  # key of the cell in report.json
    title: str
    kind: str  # how it is printed: pct, f2, f3, f4, f6, g4, bool, bytes, latency


@dataclass(frozen=True)
class RowSpec:
    key: str  # key of the row in report.json
    title: str
    file: str  # under reports/
    entry: tuple[str, ...]  # path of the backend entry in that file
    kind: str  # float, litert, tflm, ptq, host, mcu
    optional: bool = False  # shown when its file exists (boards added after a bundle was made)


# The Cortex-M rows every bundle has; the other boards' rows appear when their report does.
REQUIRED_MCU = ("m4", "m3")


def _mcu_title(b: boards.Board) -> str:
    """``tinygru C (Cortex-M4, QEMU)``; a core without DSP says portable; a part names its core."""
    core = "Cortex-" + b.cpu.removeprefix("cortex-").upper()
    name = core if b.core == b.cpu.removeprefix("cortex-") else f"{b.core.upper()}, {core}"
    return f"tinygru C ({name}{'' if b.dsp else ' portable'}, QEMU)"


CLASSIFY = (Column("accuracy", "accuracy", "pct"), Column("macro_f1", "macro-F1", "f4"))
ANOMALY = (
    Column("hit", "hit", "bool"),
    Column("margin", "margin", "f2"),
    Column("point_auc", "point AUC", "f3"),
    Column("window_auc", "window AUC", "f3"),
    Column("threshold", "threshold", "g4"),
    Column("false_alarms", "false alarms", "count"),
    Column("detection_delay", "detection delay (samples)", "count"),
)
# Forecaster cells that are null by nature: no labelled anomaly, or no score above the
# threshold inside the zone.
NULLABLE = ("hit", "margin", "point_auc", "window_auc", "false_alarms", "detection_delay")
COMMON = (
    Column("argmax_agreement", "argmax agreement with float", "pct"),
    Column("max_abs_err", "max abs error", "g4"),
    Column("rmse", "RMSE", "g4"),
    Column("l2r", "L2R", "g4"),
    Column("cosine", "cosine", "f6"),
    Column("model_bytes", "model bytes", "bytes"),
    Column("ram_bytes", "RAM bytes", "bytes"),
    Column("latency", "latency per step", "latency"),
)
ROWS = (
    RowSpec("float", "float Keras", "parity.json", ("backends", "float"), "float"),
    RowSpec(
        "float_pre_qat",
        "float Keras, before QAT",
        "parity.json",
        ("backends", "float_pre_qat"),
        "float",
    ),
    RowSpec(
        "float_unpruned",
        "float Keras, dense (before pruning)",
        "parity.json",
        ("backends", "float_unpruned"),
        "float",
    ),
    RowSpec("litert", "int8 LiteRT (built-in)", "parity.json", ("backends", "litert"), "litert"),
    RowSpec(
        "litert_xnnpack",
        "int8 LiteRT (XNNPACK)",
        "parity.json",
        ("backends", "litert_xnnpack"),
        "litert",
    ),
    RowSpec("tflm", "int8 TFLM", "parity.json", ("backends", "tflm"), "tflm"),
    RowSpec(
        "litert_ptq",
        "int8 LiteRT (built-in), PTQ without QAT",
        "parity.json",
        ("backends", "litert_ptq"),
        "ptq",
    ),
    RowSpec(
        "litert_xnnpack_ptq",
        "int8 LiteRT (XNNPACK), PTQ without QAT",
        "parity.json",
        ("backends", "litert_xnnpack_ptq"),
        "ptq",
    ),
    RowSpec(
        "tflm_ptq", "int8 TFLM, PTQ without QAT", "parity.json", ("backends", "tflm_ptq"), "ptq"
    ),
    RowSpec("engine", "tinygru C (host)", "engine.json", ("backend",), "host"),
    *(
        RowSpec(
            f"mcu_{b.core}",
            _mcu_title(b),
            f"mcu_{b.core}.json",
            ("backend",),
            "mcu",
            optional=b.core not in REQUIRED_MCU,
        )
        for b in sorted(boards.BOARDS, key=lambda b: (*REQUIRED_MCU, b.core).index(b.core))
    ),  # fmt: skip
    RowSpec("runtime", "edge runtime (x86, window-exact)", "runtime.json", ("backend",), "host"),
)

# What writes each report (named in the error when one is missing).
PRODUCERS = {
    "train.json": "python -m train --config CONFIG --out BUNDLE",
    "parity.json": "python -m quantize parity --bundle BUNDLE",
    "quantize.json": "python -m quantize int8 --bundle BUNDLE",
    "engine.json": "python -m firmware_export engine --bundle BUNDLE",
    **{
        f"mcu_{b.core}.json": f"python -m firmware_export mcu --bundle BUNDLE --target {b.core} "
        "--report"
        for b in boards.BOARDS
    },
    "runtime.json": "python -m edge_runtime check --bundle BUNDLE --json BUNDLE/reports/runtime.json",
}

# Why a cell does not apply (printed as a footnote under the table).
NA_AGREEMENT = (
    "A forecaster has no classes to agree on; its agreement with float is given by "
    "max abs error, RMSE, L2R and cosine."
)
NA_FLOAT_RAM = (
    "The float model runs inside TensorFlow on the host: it has no fixed memory "
    "budget of its own to report."
)
NA_FLOAT_LATENCY = (
    "quantize parity runs the float model batched over all windows at once, so it "
    "has no per-step time."
)
NA_LITERT_RAM = "LiteRT allocates its tensors at run time on the host heap; no stage measures it."
NA_PTQ_RAM = (
    "A PTQ row runs the step converted without QAT, for comparison only; it is not "
    "deployed, and its graph is the QAT step's (same ops and tensor sizes)."
)
NOTE_PTQ = (
    "PTQ rows: the model before QAT converted the same way (step_int8_ptq.tflite); their "
    "agreement and errors compare with the float model before QAT, the model they were "
    "converted from."
)
NOTE_ARENA = (
    "Host (x86-64) TFLM arena, measured to the byte by bisection in the int8 stage; "
    "a 32-bit MCU build needs less."
)
NOTE_HOST_US = (
    "Microseconds per step on the machine that ran the stage, call overhead included; "
    "compare rows measured on one host only."
)
NA_UNLABELLED = "The test series has no labelled anomaly: no hit, margin, AUC or false alarm."
NA_NO_DETECTION = "No score above the threshold inside the zone around the labelled anomaly."
NOTE_FLOAT_THRESHOLD = (
    "The float model's threshold (thresholds.anomaly_score): the largest float score on "
    "the anomaly-free validation tail."
)
NOTE_INT8_THRESHOLD = (
    "The int8 threshold (thresholds.anomaly_score_int8): the largest int8 score on the "
    "anomaly-free validation tail, over the host int8 backends; what the device flags at."
)
NOTE_INSTRUCTIONS = (
    "Instructions per step counted by QEMU (-icount): instructions executed, not clock "
    "cycles; reports/mcu_<target>.json says how they were taken (instructions_method)."
)


def _where(bundle: Path, file: str) -> str:
    return f"{bundle}: reports/{file}"


def read_report(bundle: Path, file: str, needed_for: str) -> dict[str, Any]:
    """``reports/<file>`` of a bundle as a dict; a clear error when absent or not JSON."""
    path = bundle / "reports" / file
    if not path.is_file():
        how = PRODUCERS.get(file, "its stage")
        raise ReportError(
            f"{_where(bundle, file)} not found: {needed_for} comes from it "
            f"(written by {how}; `make demo` runs every stage)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{_where(bundle, file)}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(
            f"{_where(bundle, file)}: expected a JSON object, found {type(data).__name__}"
        )
    return data


def field(data: dict[str, Any], path: tuple[str, ...], where: str) -> Any:
    """``data[path[0]][path[1]]…``; a clear error naming the field when absent."""
    cur: Any = data
    for i, key in enumerate(path):
        if not isinstance(cur, dict) or key not in cur:
            raise ReportError(f"{where}: field {'.'.join(path[: i + 1])} missing")
        cur = cur[key]
    return cur


def number(value: Any, where: str, name: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportError(f"{where}: field {name}: expected a finite number, found {value!r}")
    return value


class Notes:
    """Footnotes numbered in order of first use; one number per distinct text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def ref(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1

    def to_json(self) -> list[dict[str, Any]]:
        return [{"n": i + 1, "text": t} for i, t in enumerate(self.texts)]


def columns(task: str) -> tuple[Column, ...]:
    return (CLASSIFY if task == "classification" else ANOMALY) + COMMON


def is_pruned(parity: dict[str, Any]) -> bool:
    backends = parity.get("backends")
    if isinstance(backends, dict) and "float_unpruned" in backends:
        return True
    return parity.get("source_model") == contract.PRUNED_MODEL


def has_qat(parity: dict[str, Any]) -> bool:
    """Whether the step is a QAT one with PTQ rows beside it (``parity.json`` ``qat``)."""
    return isinstance(parity.get("qat"), dict)


QAT_ROWS = ("float_pre_qat", "litert_ptq", "litert_xnnpack_ptq", "tflm_ptq")


def row_specs(parity: dict[str, Any]) -> list[RowSpec]:
    """The rows of a bundle's table: the dense float row only when the bundle was pruned,
    the pre-QAT and PTQ rows only when the step is a QAT one."""
    return [
        r
        for r in ROWS
        if (r.key != "float_unpruned" or is_pruned(parity))
        and (r.key not in QAT_ROWS or has_qat(parity))
    ]


def _extras(spec: RowSpec, doc: dict[str, Any], entry: dict[str, Any], where: str) -> dict:
    """RAM and latency of a row: where each comes from depends on the backend."""
    if spec.kind in ("float", "litert", "tflm", "ptq"):
        timing = field(doc, ("timing", "int8", "us_per_step"), where)
        out: dict[str, Any] = {"ram_bytes": None, "latency": None, "latency_unit": None}
        if spec.kind == "tflm":
            arena = field(doc, ("sizes", "tflm_arena", "bytes"), where)
            out["ram_bytes"] = number(arena, where, "sizes.tflm_arena.bytes")
        if spec.kind != "float":
            us = field(timing, (spec.key,), f"{where} timing.int8.us_per_step")
            out["latency"] = number(us, where, f"timing.int8.us_per_step.{spec.key}")
            out["latency_unit"] = "us_per_step"
        return out
    unit = "instructions_per_step" if spec.kind == "mcu" else "us_per_step"
    out = {"latency_unit": unit, "na": {}}
    for name, key in (("ram_bytes", "ram_bytes"), ("latency", unit)):
        src = entry if key in entry else doc
        if key not in src:
            raise ReportError(
                f"{where}: field {key} missing (expected in {'.'.join(spec.entry)} or at "
                "the top level)"
            )
        value = src[key]
        if value is None:
            why = src.get(f"{key}_note")
            if not isinstance(why, str) or not why:
                raise ReportError(
                    f"{where}: field {key}: expected a number, found null without a "
                    f"{key}_note saying why it does not apply"
                )
            out["na"][name] = why[0].upper() + why[1:].rstrip(".") + "."
            out[name] = None
        else:
            out[name] = number(value, where, key)
    return out


def row_title(spec: RowSpec, doc: dict[str, Any]) -> str:
    """The row's title; the runtime row names the host and streaming mode it ran with, the
    float row says when it is the QAT model."""
    if spec.key == "float" and has_qat(doc):
        return "float Keras, after QAT (converted)"
    if spec.key != "runtime" or not isinstance(doc.get("mode"), str):
        return spec.title
    host = str(doc.get("host") or "x86_64")
    host = "x86" if host in ("x86_64", "AMD64", "i686") else host
    return f"edge runtime ({host}, {doc['mode']})"


def build_row(
    spec: RowSpec, doc: dict[str, Any], task: str, where: str, notes: Notes
) -> dict[str, Any]:
    """One table row: every cell a value, or None with a footnote saying why."""
    label = ".".join(spec.entry)
    if len(spec.entry) == 1 and doc.get(label) is None:
        why = f" ({doc['backend_error']})" if doc.get("backend_error") else ""
        raise ReportError(
            f"{where}: field {label} {'missing' if label not in doc else 'is null'}{why}: "
            f"the row '{spec.title}' needs a backend entry with the keys of a parity.json "
            f"backend (plus ram_bytes and the latency), written by "
            f"{PRODUCERS.get(spec.file, 'its stage')}"
        )
    entry = field(doc, spec.entry, where)
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: field {label}: expected an object")
    extras = _extras(spec, doc, entry, where)
    cells: dict[str, Any] = {}
    cell_notes: dict[str, int] = {}
    for col in columns(task):
        if col.key in ("ram_bytes", "latency"):
            cells[col.key] = extras[col.key]
            continue
        if col.key not in entry:
            raise ReportError(f"{where}: field {label}.{col.key} missing")
        value = entry[col.key]
        if value is None and task != "classification" and col.key in NULLABLE:
            cells[col.key] = None
            unlabelled = entry.get("hit") is None
            cell_notes[col.key] = notes.ref(NA_UNLABELLED if unlabelled else NA_NO_DETECTION)
            continue
        if col.key == "threshold" and task != "classification":
            cells[col.key] = None if value is None else number(value, where, f"{label}.{col.key}")
            th_note = NOTE_FLOAT_THRESHOLD if spec.kind == "float" else NOTE_INT8_THRESHOLD
            cell_notes[col.key] = notes.ref(th_note)
            continue
        if col.key == "argmax_agreement" and task != "classification":
            if value is not None:
                raise ReportError(
                    f"{where}: field {label}.argmax_agreement: expected null for a "
                    f"forecaster, found {value!r}"
                )
            cells[col.key] = None
            cell_notes[col.key] = notes.ref(NA_AGREEMENT)
        elif col.kind == "bool":
            if not isinstance(value, bool):
                raise ReportError(
                    f"{where}: field {label}.{col.key}: expected true/false, found {value!r}"
                )
            cells[col.key] = value
        else:
            cells[col.key] = number(value, where, f"{label}.{col.key}")
    if spec.kind == "float":
        cell_notes["ram_bytes"] = notes.ref(NA_FLOAT_RAM)
        cell_notes["latency"] = notes.ref(NA_FLOAT_LATENCY)
    elif spec.kind == "litert":
        cell_notes["ram_bytes"] = notes.ref(NA_LITERT_RAM)
    elif spec.kind == "ptq":
        cell_notes["ram_bytes"] = notes.ref(NA_PTQ_RAM)
        cell_notes["max_abs_err"] = notes.ref(NOTE_PTQ)
    if spec.kind == "tflm":
        cell_notes["ram_bytes"] = notes.ref(NOTE_ARENA)
    for key, why in extras.get("na", {}).items():
        cell_notes[key] = notes.ref(why)
    if extras["latency_unit"] == "us_per_step" and cells["latency"] is not None:
        cell_notes["latency"] = notes.ref(NOTE_HOST_US)
    if extras["latency_unit"] == "instructions_per_step" and cells["latency"] is not None:
        cell_notes["latency"] = notes.ref(NOTE_INSTRUCTIONS)
    return {
        "key": spec.key,
        "title": row_title(spec, doc),
        "source": f"reports/{spec.file} {label}",
        "description": entry.get("description"),
        "cells": cells,
        "latency_unit": extras["latency_unit"],
        "notes": cell_notes,
        "_entry": entry,  # dropped before writing report.json
    }


def table(bundle: Path, task: str) -> tuple[list[dict[str, Any]], Notes]:
    """Every row of a bundle's table; refuses when one file or field is missing."""
    notes = Notes()
    docs: dict[str, dict[str, Any]] = {}
    parity = read_report(bundle, "parity.json", "the float, LiteRT and TFLM rows")
    docs["parity.json"] = parity
    rows = []
    for spec in row_specs(parity):
        if spec.optional and not (bundle / "reports" / spec.file).is_file():
            continue
        if spec.file not in docs:
            docs[spec.file] = read_report(bundle, spec.file, f"the row '{spec.title}'")
        rows.append(build_row(spec, docs[spec.file], task, _where(bundle, spec.file), notes))
    return rows, notes


# --------------------------------------------------------------------------- plot data


def _square(value: Any, n: int, where: str) -> list[list[int]]:
    ok = isinstance(value, list) and len(value) == n
    ok = ok and all(isinstance(r, list) and len(r) == n for r in value)
    if not ok:
        raise ReportError(f"{where}: expected a {n}×{n} confusion matrix")
    return [[int(number(v, where, "confusion")) for v in r] for r in value]


def _per_class(value: Any, labels: list[str], where: str) -> list[float | None]:
    if isinstance(value, dict):
        missing = [lab for lab in labels if lab not in value]
        if missing:
            raise ReportError(f"{where}: per_class_f1 has no value for {missing}")
        value = [value[lab] for lab in labels]
    if not isinstance(value, list) or len(value) != len(labels):
        raise ReportError(f"{where}: per_class_f1: expected {len(labels)} values")
    # None: a class with neither test samples nor predictions has no F1
    return [None if v is None else float(number(v, where, "per_class_f1")) for v in value]


FIGURE_ROWS = ("float", "tflm", "mcu_m4")


def class_figures(rows: list[dict[str, Any]], labels: list[str], bundle: Path) -> dict:
    """Confusion matrices and per-class F1 of float, int8 TFLM and the Cortex-M4."""
    by_key = {r["key"]: r for r in rows}
    out: dict[str, Any] = {"rows": [], "confusion": {}, "per_class_f1": {}}
    for key in FIGURE_ROWS:
        r = by_key[key]
        where = f"{bundle}: {r['source']}"
        out["rows"].append({"key": key, "title": r["title"]})
        out["confusion"][key] = _square(
            field(r["_entry"], ("confusion",), where), len(labels), where
        )
        out["per_class_f1"][key] = _per_class(
            field(r["_entry"], ("per_class_f1",), where), labels, where
        )
    return out


def sweep(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The accuracy-vs-sparsity rows of ``reports/prune.json`` (None without a sweep)."""
    path = bundle / "reports" / "prune.json"
    if not path.is_file():
        return None
    doc = read_report(bundle, "prune.json", "the sparsity sweep")
    rows = doc.get("sweep")
    if not rows:
        return None
    where = _where(bundle, "prune.json")
    if not isinstance(rows, list):
        raise ReportError(f"{where}: field sweep: expected a list of rows")
    keep = ("granularity", "target", "achieved", "metric", "val", "test")
    out = []
    for i, r in enumerate(rows):
        if r.get("skipped"):  # not trained: a sparser point was chosen first
            continue
        for k in keep:
            field(r, (k,), f"{where} sweep[{i}]")
        out.append(
            {
                "granularity": str(r["granularity"]),
                "target": float(number(r["target"], where, f"sweep[{i}].target")),
                "achieved": float(number(r["achieved"], where, f"sweep[{i}].achieved")),
                "metric": str(r["metric"]),
                "val": float(number(r["val"], where, f"sweep[{i}].val")),
                "test": float(number(r["test"], where, f"sweep[{i}].test")),
                "val_score": None
                if r.get("val_score") is None
                else float(number(r["val_score"], where, f"sweep[{i}].val_score")),
            }
        )
    sp = manifest.get("sparsity") or {}
    deployed = None
    if "overall" in sp and "granularity" in sp:
        deployed = {
            "granularity": sp["granularity"],
            "achieved": sp["overall"],
            "test": (sp.get("metrics") or {}).get("pruned", {}).get("test"),
        }
    if sp.get("deployed") == "dense":
        dense = next((r for r in out if r["granularity"] == "dense"), None)
        if dense is not None:
            deployed = {"granularity": "dense", "achieved": dense["achieved"],
                        "test": dense["test"]}  # fmt: skip
    choice = doc.get("choice")
    return {
        "rows": out,
        "deployed": deployed,
        "choice": choice if isinstance(choice, dict) else None,
    }


# --------------------------------------------------------------------------- versioning

LIBRARIES = ("numpy", "ai-edge-litert", "tflite-micro", "tensorflow", "keras")


def git_commit(cwd: Path = ROOT) -> str:
    """``git rev-parse HEAD`` of the checkout the report code lives in; "unknown" outside one."""
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    head = r.stdout.strip()
    return head if r.returncode == 0 and len(head) == 40 else "unknown"


def library_versions(manifest: dict[str, Any]) -> list[dict[str, str]]:
    """Each library's version as the stages recorded it, else as installed here."""
    stages = manifest.get("stages", {})
    out = []
    for dist in ("python", *LIBRARIES):
        key = dist.replace("-", "_")
        seen: dict[str, list[str]] = {}
        for stage, info in stages.items():
            v = (info.get("versions") or {}).get(key)
            if v is not None:
                seen.setdefault(str(v), []).append(stage)
        if seen:
            for v, where in seen.items():
                out.append({"name": dist, "version": v, "from": "manifest: " + ", ".join(where)})
            continue
        try:
            v = metadata.version(dist)
            src = "installed here (no stage recorded it)"
        except metadata.PackageNotFoundError:
            v, src = "not installed", "no stage recorded it"
        out.append({"name": dist, "version": v, "from": src})
    return out


def seeds(manifest: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    stages = manifest.get("stages", {})
    out: dict[str, Any] = {}
    tcfg = stages.get("train", {}).get("config", {}).get("train", {})
    if "seed" in tcfg:
        out["train (config)"] = tcfg["seed"]
    runs = [r["seed"] for r in train.get("runs", []) if "seed" in r]
    if runs:
        out["train runs (first is kept)"] = runs
    pcfg = stages.get("prune", {}).get("config", {}).get("prune", {})
    if "seed" in pcfg:
        out["prune"] = pcfg["seed"]
    qcfg = stages.get("quantize", {}).get("config", {})
    if "seed" in qcfg:
        out["int8 calibration"] = qcfg["seed"]
    return out


def selection(train: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for r in train.get("selection", []):
        rows.append(
            {
                "name": r.get("name"),
                "params": r.get("params"),
                "epochs_run": r.get("epochs_run"),
                "val_accuracy": r.get("val_accuracy"),
                "val_macro_f1": r.get("val_macro_f1"),
                "selected": bool(r.get("selected", False)),
            }
        )
    return {"metric": train.get("selection_metric"), "candidates": rows}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifacts(bundle: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every artifact of the manifest with its sha256, and whether the file on disk matches."""
    out = []
    for name, a in sorted(manifest.get("artifacts", {}).items()):
        p = bundle / name
        state = "missing" if not p.is_file() else ("ok" if _sha256(p) == a["sha256"] else "differs")
        out.append({"name": name, "sha256": a["sha256"], "bytes": a["bytes"], "on_disk": state})
    return out


def versioning(bundle: Path, manifest: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    ds = manifest.get("dataset", {})
    commits = {
        stage: info.get("git_commit", "unknown")
        for stage, info in manifest.get("stages", {}).items()
    }
    return {
        "dataset": {"id": ds.get("id"), "sha256": ds.get("sha256")},
        "git_commit": git_commit(),
        "stage_commits": commits,
        "libraries": library_versions(manifest),
        "seeds": seeds(manifest, train),
        "selection": selection(train),
        "artifacts": artifacts(bundle, manifest),
    }


# --------------------------------------------------------------------------- one task


def open_bundle(bundle: Path) -> Bundle:
    try:
        return Bundle.open(bundle)
    except BundleError as e:
        raise ReportError(f"{bundle}: {e}") from None


def on_target(rows: list[dict[str, Any]], manifest: dict[str, Any], target: Any) -> dict | None:
    """The instructions per step (QEMU) of the Cortex-M row run on the target's board, at
    the target's clock: a lower bound of the time per step (a core needs at least one
    cycle per instruction) and the share of the sample period it uses; None for a target
    that is not a microcontroller. Rows of other cores are left out: the target's clock
    is not theirs (a target file of their own gives them a table)."""
    if target is None or target.kind != "mcu":
        return None
    own = f"mcu_{target.board.core}"
    mc = manifest["model"]["config"]
    stride = int(mc.get("front_end_stride", 1))
    rate = target.sample_rate_hz or float(manifest["dataset"]["sample_rate"])
    out = []
    for r in rows:
        ips = r["cells"].get("latency")
        if r["latency_unit"] != "instructions_per_step" or ips is None or r.get("key") != own:
            continue
        t = target.time_per_step_s(ips)
        out.append({"row": r["title"], "instructions_per_step": ips, "time_per_step_s": t,
                    "share_of_period": target.share_of_period(ips, 1 / stride, rate)})  # fmt: skip
    others = [r["title"] for r in rows
              if r["latency_unit"] == "instructions_per_step" and r.get("key") != own]  # fmt: skip
    return {"target": target.to_dict(), "sample_rate_hz": rate, "steps_per_sample": 1 / stride,
            "rows": out, "board": target.board.name, "other_cores": others,
            "method": "instructions per step under QEMU -icount / clock_hz: a lower bound of "
            "the time per step; share = steps per second x that time"}  # fmt: skip


def collect(bundle_dir: str | Path, target: Any = None) -> dict[str, Any]:
    """Everything the report shows for one bundle (rows keep their source entry in ``_entry``)."""
    bundle = Path(bundle_dir)
    b = open_bundle(bundle)
    m = b.manifest
    task = m.get("task")
    if task not in ("classification", "forecast"):
        raise ReportError(
            f"{bundle}/manifest.json: field task: expected classification or forecast, "
            f"found {task!r}"
        )
    train = read_report(bundle, "train.json", "the selection log")
    rows, notes = table(bundle, task)
    out: dict[str, Any] = {
        "name": m.get("name", bundle.name),
        "bundle": str(bundle),
        "task": task,
        "dataset": m.get("dataset", {}).get("id"),
        "pruned": any(r["key"] == "float_unpruned" for r in rows),
        "qat": any(r["key"] == "float_pre_qat" for r in rows),
        "columns": [{"key": c.key, "title": c.title, "kind": c.kind} for c in columns(task)],
        "rows": rows,
        "footnotes": notes.to_json(),
        "sweep": sweep(bundle, m),
        "on_target": on_target(rows, m, target),
        "versioning": versioning(bundle, m, train),
        "warning": (train.get("skill") or {}).get("warning"),  # a classifier at chance
    }
    if task == "classification":
        out["labels"] = list(m["labels"])
        out["classes"] = class_figures(rows, out["labels"], bundle)
    else:
        tflm = next(r for r in rows if r["key"] == "tflm")["_entry"]
        flt = next(r for r in rows if r["key"] == "float")["_entry"]
        where = _where(bundle, "parity.json")
        out["trace"] = {
            "threshold": None
            if flt.get("threshold") is None
            else number(flt["threshold"], where, "backends.float.threshold"),
            "threshold_int8": None
            if tflm.get("threshold") is None
            else number(tflm["threshold"], where, "backends.tflm.threshold"),
            "labelled": field(flt, ("labelled",), where),
            "peak_float": field(flt, ("peak",), where),
            "peak_tflm": field(tflm, ("peak",), where),
        }
    return out


def public(task: dict[str, Any]) -> dict[str, Any]:
    """The task's data as written to report.json (without the raw source entries)."""
    return {
        **task,
        "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in task["rows"]],
    }
