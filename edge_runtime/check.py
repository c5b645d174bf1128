"""Acceptance check of a bundle on this machine's interpreter: ``tinygru-edge check``.

Classifier: the reference windows of ``reference.npz`` (``x_counts``) stream
back to back through :class:`edge_runtime.stream.Streamer` in window-exact mode
(hop = T, one window in flight), the int8 head outputs are dequantized and
compared with the labels (accuracy, macro-F1) and with the float model's
probabilities (``edge_runtime.metrics.parity``: argmax agreement, errors).

Forecaster: the reference test series (``series_counts``) streams continuously;
the scores ``|x_t - forecast_{t-1}|`` go through
``edge_runtime.anomaly.anomaly_report`` (hit, margin, AUCs, false alarms at
``thresholds.anomaly_score``, the first ``anomaly_warmup_samples`` ignored).

Pass marks come from ``manifest["thresholds"]["device"]`` (written by
``python -m quantize parity``) and can be overridden; one check per mark:

| mark | classifier / forecaster | passes when |
|---|---|---|
| ``min_accuracy`` | classifier | accuracy >= mark |
| ``min_argmax_agreement`` | classifier | argmax agreement with float >= mark |
| ``require_hit`` | forecaster | the highest score lies in the anomaly zone (if the mark is true) |
| ``min_point_auc`` | forecaster | point ROC-AUC >= mark |
| ``min_margin`` | forecaster | margin >= mark |
| ``max_false_alarms`` | forecaster | false alarms <= mark |

A device (``--device URL``) answers through a :class:`DeviceLink` instead. It is used
only once it has shown that it runs the bundle's model: the step model's sha256 and the
sha256 of the model data it links, computed by the firmware at boot, equal the bundle's
(``edge_runtime.connect.open_device`` refuses a mismatch, naming both hashes). Its int8
outputs must then also equal the C engine's, ``engine_outputs.npz``, at tolerance 0:
the device runs the same engine on the same model data and inputs, so any difference is
a defect (one more mark, ``max_engine_mismatches`` = 0, not overridable; a bundle
without ``engine_outputs.npz``, which ``python -m firmware_export check`` writes, gets
no such mark and the output says the identity was not judged):

| mark | classifier / forecaster | passes when |
|---|---|---|
| ``max_engine_mismatches`` | both, ``--device`` only | no window (classifier) or step (forecaster) output differs from ``engine_outputs.npz`` |

The JSON result (``--json``) also holds ``backend``: the outputs of this run as
an entry of ``reports/parity.json`` (:mod:`edge_runtime.parity_entry`, against
the float reference ``float_outputs.npz``), with ``model_bytes`` (the
``step_int8.tflite`` this runtime loads), ``ram_bytes`` (None: the interpreter
allocates on the host heap, nothing here measures it) and ``us_per_step`` (the
streaming run's wall time on this host divided by the steps it ran, quantization
and ring buffer included; None for a device, whose link time is no step time).
``mode`` is the streaming mode of the run (``window-exact`` for a classifier,
``continuous`` for a forecaster), ``host`` this machine (``platform.machine()``);
``interpreter`` names the interpreter or device; ``backend_error`` says why
``backend`` is None (a bundle without ``float_outputs.npz``).
"""

from __future__ import annotations

import platform
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_runtime import anomaly, contract, metrics
from edge_runtime.bundle import Bundle, BundleError
from edge_runtime.interpreter import STEP_FILE
from edge_runtime.parity_entry import Reference, dequantize
from edge_runtime.stream import Streamer

__all__ = [
    "CLASSIFIER_MARKS",
    "FORECAST_MARKS",
    "CheckResult",
    "DeviceLink",
    "DeviceLinkUnavailable",
    "ENGINE_MARK",
    "Mark",
    "check_bundle",
    "engine_identity",
    "open_device",
    "render",
    "write_junit",
]

CLASSIFIER_MARKS = ("min_accuracy", "min_argmax_agreement")
FORECAST_MARKS = ("require_hit", "min_point_auc", "min_margin", "max_false_alarms")
ENGINE_MARK = "max_engine_mismatches"  # device runs: outputs vs engine_outputs.npz, tolerance 0


class DeviceLinkUnavailable(RuntimeError):
    """``--device`` was asked for a check the device cannot run."""


class DeviceLink(Protocol):
    """A device running the bundle's model, reached over a serial link.

    ``infer_window`` sends one window of int16 counts ``(T, C)`` and returns the
    device's int8 head output of the window's last step, ``(n_outputs,)``
    (as ``edge_runtime.device.DeviceLink.infer_window``); ``stream`` sends a
    series and returns the int8 head output of every step ``(n_steps, n_outputs)``.
    """

    def infer_window(self, counts: np.ndarray) -> np.ndarray: ...

    def stream(self, counts: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def open_device(url: str, bundle: Bundle) -> DeviceLink:
    """The link to a device at ``url``: ``qemu:an385|an386|an500``, a pyserial URL or a tty."""
    from edge_runtime.connect import open_device as _open

    return _open(url, bundle)


@dataclass
class Mark:
    """One threshold check."""

    name: str
    metric: str
    value: Any
    threshold: Any
    passed: bool
    source: str  # "manifest" or "flag"

    def message(self) -> str:
        if self.name == "require_hit" and not self.threshold:
            return f"{self.metric} {self.value} (not required)"
        if self.value is None:
            return f"{self.metric}: not measured ({self.source})"
        op = {"min": ">=", "max": "<=", "req": "=="}[self.name[:3]]
        v = _fmt(self.value)
        return f"{self.metric} {v} {op if self.passed else 'fails ' + op} {_fmt(self.threshold)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "source": self.source,
        }


@dataclass
class CheckResult:
    bundle: str
    task: str
    backend: str
    metrics: dict[str, Any]
    marks: list[Mark]
    seconds: float
    entry: dict[str, Any] | None = None  # the parity-style entry of this run
    entry_error: str | None = None
    mode: str | None = None
    device: str | None = None

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.marks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "task": self.task,
            "interpreter": self.backend,
            "backend": self.entry,
            "backend_error": self.entry_error,
            "mode": self.mode,
            "host": platform.machine(),
            "device": self.device,
            "passed": self.passed,
            "marks": [m.to_dict() for m in self.marks],
            "metrics": self.metrics,
            "seconds": round(self.seconds, 2),
        }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


# --------------------------------------------------------------------------- running


def _classifier(
    b: Bundle, ref: dict[str, np.ndarray], run: Callable[[np.ndarray], np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    x = ref["x_counts"]
    y_true = ref["y"].astype(np.int64)
    y_int8 = run(x)
    yo = b.manifest["quantization"]["step"]["outputs"]["y"]
    probs = (y_int8.astype(np.float64) - int(yo["zero_point"])) * float(yo["scale"])
    labels = list(b.manifest["labels"])
    k = len(labels)
    yhat = np.argmax(probs, axis=1).astype(np.int64)
    out: dict[str, Any] = {
        "windows": int(len(x)),
        "accuracy": metrics.accuracy(y_true, yhat),
        "macro_f1": metrics.macro_f1(y_true, yhat, k),
        "per_class_f1": dict(zip(labels, metrics.per_class_f1(y_true, yhat, k), strict=True)),
        "confusion": metrics.confusion_matrix(y_true, yhat, k).tolist(),
    }
    out["parity_vs_float"] = metrics.parity(ref["probs"].astype(np.float64), probs)
    out["argmax_agreement"] = out["parity_vs_float"]["argmax_agreement"]
    return out, {"accuracy": out["accuracy"], "argmax_agreement": out["argmax_agreement"]}


def _forecaster(
    b: Bundle, ref: dict[str, np.ndarray], run: Callable[[np.ndarray], Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    m = b.manifest
    counts = ref["series_counts"]
    forecast, scores = run(counts)
    th = m.get("thresholds") or {}
    zone = int(m["stages"]["train"]["config"].get("data", {}).get("zone", 100))
    threshold = anomaly.device_threshold(th)
    warmup = int(th.get("anomaly_warmup_samples", 0))
    rep = anomaly.anomaly_report(
        scores, ref["labels"] > 0, zone=zone, threshold=threshold, ignore_first=warmup
    )
    out = {
        "samples": int(len(counts)),
        **rep,
        "parity_vs_float": metrics.parity(ref["forecast"].astype(np.float64), forecast),
    }
    return out, {
        "hit": rep["hit"],
        "point_auc": rep["point_auc"],
        "margin": rep["margin"],
        "false_alarms": rep.get("false_alarms"),
    }


def _local_windows(
    b: Bundle, backend: str, record: dict[str, Any]
) -> Callable[[np.ndarray], np.ndarray]:
    """Window-exact streaming, windows back to back; ``record`` gets the int8 outputs,
    the streaming time and the steps run."""

    def run(x: np.ndarray) -> np.ndarray:
        n, T, C = x.shape
        s = Streamer(b, "window-exact", backend=backend, hop=T)
        t0 = time.perf_counter()
        res = s.push_many(x.reshape(n * T, C))
        seconds = time.perf_counter() - t0
        if len(res) != n:
            raise RuntimeError(f"check: {len(res)} window results for {n} windows")
        y = np.stack([r.y_int8 for r in res])
        record.update(y_int8=y, seconds=seconds, steps=n * s.cfg.steps_per_window)
        return y

    return run


def _local_series(b: Bundle, backend: str, record: dict[str, Any]) -> Callable[[np.ndarray], Any]:
    """Continuous streaming of one series (a forecast every step); ``record`` as above."""

    def run(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = Streamer(b, "continuous", backend=backend)
        n = len(counts)
        forecast = np.zeros((n, counts.shape[1]), np.float64)
        scores = np.zeros(n, np.float64)
        ys: list[np.ndarray] = []
        t0 = time.perf_counter()
        for i, row in enumerate(counts):
            for r in s.push(row):
                assert r.forecast is not None
                forecast[i] = r.forecast
                scores[i] = 0.0 if r.score is None else r.score
                ys.append(r.y_int8)
        seconds = time.perf_counter() - t0
        record.update(y_int8=np.stack(ys), seconds=seconds, steps=len(ys))
        return forecast, scores

    return run


def _device_windows(link: DeviceLink, record: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        y = np.stack([np.asarray(link.infer_window(w), np.int8).reshape(-1) for w in x])
        record.update(y_int8=y, seconds=None, steps=None)
        return y

    return run


def _device_series(link: DeviceLink, b: Bundle, record: dict[str, Any]) -> Callable[..., Any]:
    """The series through the device's carried state (``DeviceLink.stream``), a step per sample."""

    def run(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(link.stream(counts), np.int8)  # (steps, n_outputs)
        if len(y) != len(counts):
            raise DeviceLinkUnavailable(
                f"the device returned {len(y)} steps for {len(counts)} samples: a forecaster "
                "check needs a step at every sample (stride 1)"
            )
        record.update(y_int8=y, seconds=None, steps=None)
        m = b.manifest
        mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
        forecast = dequantize(y, m["quantization"]["step"]["outputs"]["y"]) * std + mean
        scale = np.array([float(c["scale"]) for c in m["dataset"]["channels"]])
        return forecast, anomaly.forecast_scores(counts * scale, forecast)

    return run


def engine_identity(bundle: Bundle, y_int8: np.ndarray) -> dict[str, Any]:
    """The device's int8 outputs against ``engine_outputs.npz`` at tolerance 0: rows (a
    window's last step, or a series step) compared, rows that differ, the first of them."""
    if not bundle.has(contract.ENGINE_OUTPUTS):
        return {"compared": 0, "mismatches": None, "tolerance": 0,
                "error": f"no {contract.ENGINE_OUTPUTS} in the bundle (python -m "
                         "firmware_export check writes it)"}  # fmt: skip
    want = np.asarray(bundle.load_npz(contract.ENGINE_OUTPUTS)["y"], np.int8)
    got = np.asarray(y_int8, np.int8).reshape(len(y_int8), -1)
    want = want.reshape(len(want), -1)
    if got.shape != want.shape:
        return {"compared": 0, "mismatches": None, "tolerance": 0,
                "error": f"device outputs {got.shape}, {contract.ENGINE_OUTPUTS} y {want.shape}"}  # fmt: skip
    bad = np.flatnonzero(np.any(got != want, axis=1))
    first = None
    if len(bad):
        i = int(bad[0])
        first = {"index": i, "device": got[i].tolist(), "engine": want[i].tolist()}
    return {"compared": int(len(got)), "mismatches": int(len(bad)), "tolerance": 0,
            "first_mismatch": first}  # fmt: skip


def _entry(
    bundle: Bundle, ref: dict[str, np.ndarray], record: dict[str, Any], device: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The parity-style entry of this run's int8 outputs, or None and why not."""
    try:
        reference = Reference.from_bundle(bundle, ref=ref)
    except BundleError as e:
        return None, str(e)
    what = "window-exact" if bundle.task == "classification" else "continuous"
    if device:
        description = f"device {device} through the edge runtime's link, {what}"
    else:
        where = platform.machine()
        description = f"edge runtime, {record['interpreter']} ({where} host), {what} streaming"
    entry = reference.entry(
        record["y_int8"],
        description=description,
        model_file=STEP_FILE,
        model_bytes=int(bundle.artifacts[STEP_FILE]["bytes"]),
    )
    us = None if record["seconds"] is None else record["seconds"] / record["steps"] * 1e6
    entry.update({
        "ram_bytes": None,
        "ram_bytes_note": "the interpreter allocates its tensors on the host heap; not measured",
        "us_per_step": None if us is None else round(us, 3),
        "us_per_step_method": None if us is None else (
            "wall time of the streaming run / steps run (int16 counts in: quantization, ring "
            "buffer and the interpreter's step, Python included)"
        ),
    })  # fmt: skip
    return entry, None


def check_bundle(
    bundle: Bundle,
    *,
    backend: str = "litert",
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> CheckResult:
    """Run the acceptance check; ``overrides`` replaces manifest marks by name."""
    t0 = time.perf_counter()
    m = bundle.manifest
    task = bundle.task
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    allowed = CLASSIFIER_MARKS if task == "classification" else FORECAST_MARKS
    wrong = sorted(set(overrides) - set(allowed))
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: not a pass mark for a {task} bundle")
    link = open_device(device, bundle) if device else None
    ref = bundle.load_npz(contract.REFERENCE)
    record: dict[str, Any] = {"interpreter": f"device {device}" if device else backend}
    try:
        if task == "classification":
            runner = (
                _device_windows(link, record) if link else _local_windows(bundle, backend, record)
            )
            figures, values = _classifier(bundle, ref, runner)
        else:
            if link is not None:
                series = _device_series(link, bundle, record)
            else:
                series = _local_series(bundle, backend, record)
            figures, values = _forecaster(bundle, ref, series)
    finally:
        if link is not None:
            link.close()
    device_marks = dict((m.get("thresholds") or {}).get("device") or {})
    marks: list[Mark] = []
    for name in allowed:
        if name in overrides:
            threshold, source = overrides[name], "flag"
        elif name in device_marks:
            threshold, source = device_marks[name], "manifest"
        else:
            continue
        metric = {
            "min_accuracy": "accuracy",
            "min_argmax_agreement": "argmax_agreement",
            "require_hit": "hit",
            "min_point_auc": "point_auc",
            "min_margin": "margin",
            "max_false_alarms": "false_alarms",
        }[name]
        value = values[metric]
        if name == "require_hit":
            passed = bool(value) or not bool(threshold)
        elif value is None:
            passed = False
        elif name.startswith("min_"):
            passed = float(value) >= float(threshold)
        else:
            passed = float(value) <= float(threshold)
        marks.append(Mark(name, metric, value, threshold, passed, source))
    if device:
        ident = engine_identity(bundle, record["y_int8"])
        figures["engine_identity"] = ident
        n = ident["mismatches"]
        if bundle.has(contract.ENGINE_OUTPUTS):  # compared, or outputs of the wrong shape
            marks.append(Mark(ENGINE_MARK, "outputs differing from the C engine", n, 0,
                              n == 0, contract.ENGINE_OUTPUTS))  # fmt: skip
    entry, entry_error = _entry(bundle, ref, record, device)
    return CheckResult(
        bundle=str(bundle.root),
        task=task,
        backend="device " + device if device else backend,
        metrics=figures,
        marks=marks,
        seconds=time.perf_counter() - t0,
        entry=entry,
        entry_error=entry_error,
        mode="window-exact" if task == "classification" else "continuous",
        device=device,
    )


# --------------------------------------------------------------------------- output


def write_junit(result: CheckResult, path: str | Path) -> None:
    """JUnit XML: one testsuite, one testcase per pass mark."""
    failures = sum(not m.passed for m in result.marks)
    suites = ET.Element("testsuites", tests=str(len(result.marks)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="tinygru-edge check",
        tests=str(len(result.marks)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{result.seconds:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (("bundle", result.bundle), ("task", result.task), ("backend", result.backend)):
        ET.SubElement(props, "property", name=k, value=v)
    classname = f"tinygru_edge.check.{Path(result.bundle).name}"
    for mk in result.marks:
        case = ET.SubElement(suite, "testcase", classname=classname, name=mk.name, time="0")
        if not mk.passed:
            fail = ET.SubElement(case, "failure", message=mk.message(), type="threshold")
            fail.text = (
                f"{mk.metric} = {mk.value}; threshold {mk.name} = {mk.threshold} ({mk.source})"
            )
        else:
            ET.SubElement(case, "system-out").text = mk.message()
    ET.indent(suites)
    Path(path).write_bytes(ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n")


def render(result: CheckResult) -> str:
    """Human-readable summary lines."""
    f = result.metrics
    lines = [f"tinygru-edge check: {result.bundle} ({result.task}, {result.backend})"]
    if result.task == "classification":
        p = f["parity_vs_float"]
        lines.append(
            f"  {f['windows']} windows: accuracy {f['accuracy']:.4f}, macro-F1 "
            f"{f['macro_f1']:.4f}, agreement with float {_fmt(f['argmax_agreement'])}, "
            f"max |p - p_float| {p['max_abs_err']:.4f}"
        )
    else:
        p = f["parity_vs_float"]
        lines.append(
            f"  {f['samples']} samples: hit {f['hit']} (peak {f['peak']}), margin "
            f"{_fmt(f['margin'])}, point AUC {_fmt(f['point_auc'])}, window AUC "
            f"{_fmt(f['window_auc'])}, false alarms {f.get('false_alarms')} (alarm events "
            f"{f.get('alarm_events')}), forecast vs float max abs {p['max_abs_err']:.4g}"
        )
    ident = f.get("engine_identity")
    if ident is not None and ident.get("mismatches") is None:
        lines.append(f"  bit-identity with {contract.ENGINE_OUTPUTS}: not judged, {ident['error']}")
    elif ident is not None:
        first = ident.get("first_mismatch")
        lines.append(
            f"  bit-identity with {contract.ENGINE_OUTPUTS} (tolerance 0): "
            f"{ident['compared'] - ident['mismatches']} of {ident['compared']} outputs equal"
            + (f"; first difference at {first['index']}: device {first['device']}, engine "
               f"{first['engine']}" if first else "")
        )  # fmt: skip
    if not result.marks:
        lines.append(
            "  no pass marks: the manifest has no thresholds.device (run `python -m quantize "
            "check`) and none were given"
        )
    for mk in result.marks:
        lines.append(f"  [{'PASS' if mk.passed else 'FAIL'}] {mk.name}: {mk.message()}")
    lines.append(f"  {'PASSED' if result.passed else 'FAILED'} in {result.seconds:.1f} s")
    return "\n".join(lines)
