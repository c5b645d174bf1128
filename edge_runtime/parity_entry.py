"""One backend's outputs on the reference data, as an entry of ``reports/parity.json``.

``python -m quantize parity`` builds the entries of its backends with these
functions, and so does every later stage that reports a backend of its own
(the C engine on the host, on an emulated Cortex-M, this runtime), so every
row of the comparison carries the same keys computed by the same code.

The float reference is the ``float`` backend of the parity check: the float step
chain of the converted model, written by ``quantize parity`` to
``float_outputs.npz`` (``y``: classifier probabilities of each reference
window's last step ``(N, n_classes)``, or the forecaster's forecast of every
step of the test series in sensor units ``(n_steps, C)``; float64). A bundle
without it has not been through ``quantize parity``.

Classification entry keys: ``n``, ``accuracy``, ``macro_f1``, ``confusion``
(rows = true class), ``per_class_f1`` (label → F1 or null), the
:func:`edge_runtime.metrics.parity` keys against the float probabilities
(``argmax_agreement``, ``max_abs_err``, ``mean_abs_err``, ``rmse``, ``l2r``,
``cosine``) and ``argmax_agreement_vs_reference`` (against
``reference.npz``'s ``probs``, the float window model a device check compares
with). Forecast entry keys: ``n``, ``hit``, ``peak``, ``labelled``,
``margin``, ``point_auc``, ``window_auc``, ``threshold``, ``alarm_events``,
``false_alarms``, ``detection_delay`` (:mod:`edge_runtime.anomaly`),
``forecast_mae`` / ``forecast_max_abs_err`` (against the next sample, sensor
units) and the parity keys against the float forecast (sensor units). Every
entry also has ``description``, ``model_file`` and ``model_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime import anomaly, contract, metrics
from edge_runtime.bundle import Bundle, BundleError

__all__ = [
    "FLOAT_OUTPUTS",
    "Reference",
    "classification_entry",
    "dequantize",
    "forecast_entry",
]

FLOAT_OUTPUTS = contract.FLOAT_OUTPUTS


def classification_entry(
    probs: np.ndarray, ref_probs: np.ndarray, y: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, confusion and per-class F1 against ``y``; parity against ``ref_probs``."""
    k = len(labels)
    yhat = np.argmax(probs, axis=1).astype(np.int64)
    f1 = metrics.per_class_f1(y, yhat, k)
    return {
        "n": int(len(y)),
        "accuracy": metrics.accuracy(y, yhat),
        "macro_f1": metrics.macro_f1(y, yhat, k),
        "confusion": metrics.confusion_matrix(y, yhat, k).tolist(),
        "per_class_f1": dict(zip(labels, f1, strict=True)),
        **metrics.parity(ref_probs, probs),
    }


def forecast_entry(
    forecast: np.ndarray,
    ref_forecast: np.ndarray,
    x_phys: np.ndarray,
    labels01: np.ndarray,
    *,
    zone: int,
    threshold: float | None,
    warmup: int = 0,
) -> dict[str, Any]:
    """Anomaly figures of the scores ``|x_t - forecast_{t-1}|``; parity against ``ref_forecast``."""
    scores = anomaly.forecast_scores(x_phys, forecast)
    rep = anomaly.anomaly_report(
        scores, labels01 > 0, zone=zone, threshold=threshold, ignore_first=warmup
    )
    err = np.abs(x_phys[1:] - forecast[:-1])
    return {
        "n": int(len(forecast)),
        "hit": rep["hit"],
        "peak": rep["peak"],
        "labelled": rep["labelled"],
        "margin": rep["margin"],
        "point_auc": rep["point_auc"],
        "window_auc": rep["window_auc"],
        "threshold": rep.get("threshold"),
        "alarm_events": rep.get("alarm_events"),
        "false_alarms": rep.get("false_alarms"),
        "detection_delay": rep.get("detection_delay"),
        "forecast_mae": float(err.mean()),
        "forecast_max_abs_err": float(err.max()),
        **metrics.parity(ref_forecast, forecast),
        "argmax_agreement": None,  # a forecaster has no classes, whatever its channel count
    }


def dequantize(q: np.ndarray, quant: dict[str, Any]) -> np.ndarray:
    """int8 values to real ones: ``(q - zero_point) * scale`` in float64."""
    return (np.asarray(q).astype(np.float64) - quant["zero_point"]) * quant["scale"]


@dataclass
class Reference:
    """What a backend's int8 head outputs are judged against, read from a bundle."""

    bundle: Bundle
    task: str
    float_y: np.ndarray  # float_outputs.npz "y"
    ref: dict[str, np.ndarray]  # reference.npz

    @classmethod
    def from_bundle(cls, b: Bundle, ref: dict[str, np.ndarray] | None = None) -> Reference:
        """Load ``reference.npz`` (unless given as ``ref``) and ``float_outputs.npz``; refuse
        ones that do not fit together."""
        if not b.has(FLOAT_OUTPUTS):
            raise BundleError(
                f"{b.root / FLOAT_OUTPUTS}: not in the bundle (the float reference of the parity "
                "entries): run `python -m quantize parity`"
            )
        float_y = b.load_npz(FLOAT_OUTPUTS).get("y")
        ref = b.load_npz(contract.REFERENCE) if ref is None else ref
        if b.task == "classification":
            want = (len(ref["x_counts"]), len(b.manifest["labels"]))
        else:
            want = ref["series_counts"].shape
        if float_y is None or float_y.shape != tuple(want):
            found = "no array y" if float_y is None else f"y of shape {float_y.shape}"
            raise BundleError(
                f"{b.root / FLOAT_OUTPUTS}: expected y of shape {tuple(want)} (the reference "
                f"data), found {found}: rerun `python -m quantize parity`"
            )
        return cls(b, b.task, float_y.astype(np.float64), ref)

    @property
    def y_quant(self) -> dict[str, Any]:
        return self.bundle.manifest["quantization"]["step"]["outputs"]["y"]

    def entry(
        self, y_int8: np.ndarray, *, description: str, model_file: str, model_bytes: int | None
    ) -> dict[str, Any]:
        """The entry of int8 head outputs: classifier ``(n, n_classes)``, the last step of the
        first ``n`` reference windows; forecaster ``(n_steps, C)``, every step of the series."""
        m = self.bundle.manifest
        y = dequantize(y_int8, self.y_quant)
        common = {"description": description, "model_file": model_file, "model_bytes": model_bytes}
        if self.task == "classification":
            n = len(y)
            labels = list(m["labels"])
            if n == 0 or n > len(self.float_y) or y.shape[1:] != self.float_y.shape[1:]:
                raise ValueError(
                    f"parity entry: outputs of shape {y.shape}, the reference has "
                    f"{self.float_y.shape}"
                )
            entry = classification_entry(
                y, self.float_y[:n], self.ref["y"][:n].astype(np.int64), labels
            )
            ref_arg = self.ref["probs"][:n].argmax(axis=1)
            entry["argmax_agreement_vs_reference"] = float(np.mean(y.argmax(axis=1) == ref_arg))
            return {**common, **entry}
        if y.shape != self.float_y.shape:
            raise ValueError(
                f"parity entry: forecasts of shape {y.shape}, the series needs {self.float_y.shape}"
            )
        mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
        scale = np.array([float(c["scale"]) for c in m["dataset"]["channels"]])
        th = m.get("thresholds") or {}
        entry = forecast_entry(
            y * std + mean,
            self.float_y,
            self.ref["series_counts"].astype(np.float64) * scale,
            self.ref["labels"].astype(np.int64),
            zone=int(m["stages"]["train"]["config"]["data"].get("zone", 100)),
            threshold=anomaly.device_threshold(th),  # int8 outputs: the int8 chain's threshold
            warmup=int(th.get("anomaly_warmup_samples", 0)),
        )
        return {**common, **entry}
