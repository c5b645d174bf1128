"""Anomaly scoring figures, the same for the float model, int8 backends and devices.

Definitions (scores: one value per sample, higher = more anomalous):

- zone: the labelled anomaly extended by ``zone`` samples on each side (the UCR
  archive's ±100 rule); a detection *hits* when the highest score lies in it.
- margin: highest score inside the zone ÷ highest score outside it (> 1 means
  the anomaly stands out).
- point ROC-AUC: every sample scored, positive when inside the labelled anomaly.
- window ROC-AUC: windows of ``window`` samples with hop ``hop``, scored by their
  maximum, positive when they overlap the zone.
- at a threshold: alarm events are maximal runs of samples above it; false
  alarms are events entirely outside the zone; the detection delay is the first
  sample above the threshold inside the zone minus the labelled start (None when
  none is).
- without any labelled anomaly (a series brought without labels) only the peak and,
  at a threshold, the alarm events are figures; hit, margin, AUCs, false alarms and
  delay are None.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.metrics import roc_auc


def device_threshold(thresholds: dict | None) -> float | None:
    """The threshold an int8 chain (a device, the C engine, a Pi) flags at: the int8
    chain's own ``anomaly_score_int8`` when the bundle has one, else the float model's
    ``anomaly_score``; None for a classifier."""
    th = thresholds or {}
    value = th.get("anomaly_score_int8", th.get("anomaly_score"))
    return None if value is None else float(value)


def persistence_scores(x: np.ndarray) -> np.ndarray:
    """Naive baseline |x_t − x_{t−1}| (summed over channels), 0 at t = 0."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    s = np.zeros(len(x))
    s[1:] = np.abs(np.diff(x, axis=0)).sum(axis=1)
    return s


def forecast_scores(x: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Score at t = |x_t − forecast made at t−1| summed over channels; 0 at t = 0.

    ``forecast[t]`` is the prediction of ``x[t+1]``, both in sensor units.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    f = np.asarray(forecast, dtype=np.float64).reshape(len(forecast), -1)
    s = np.zeros(len(x))
    s[1:] = np.abs(x[1:] - f[:-1]).sum(axis=1)
    return s


def _events(above: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [start, end) where ``above`` is true."""
    d = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def anomaly_report(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    zone: int = 100,
    window: int = 128,
    hop: int = 64,
    threshold: float | None = None,
    ignore_first: int = 0,
) -> dict:
    """Hit, margin, AUCs and (with a threshold) false alarms and delay; see module doc.

    ``ignore_first`` samples (a state warm-up) are scored as 0.
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    scores[:ignore_first] = 0.0
    if not labels.any():
        out: dict = {"labelled": None, "zone": None, "peak": int(np.argmax(scores)),
                     "hit": None, "margin": None, "point_auc": None, "window_auc": None}  # fmt: skip
        if threshold is not None:
            out.update({"threshold": float(threshold),
                        "alarm_events": len(_events(scores > threshold)),
                        "false_alarms": None, "detection_delay": None})  # fmt: skip
        return out
    idx = np.flatnonzero(labels)
    a0, a1 = int(idx[0]), int(idx[-1])
    z0, z1 = max(0, a0 - zone), min(len(scores) - 1, a1 + zone)
    in_zone = np.zeros(len(scores), bool)
    in_zone[z0 : z1 + 1] = True
    peak = int(np.argmax(scores))
    inside, outside = scores[in_zone].max(), scores[~in_zone].max()
    starts = np.arange(0, len(scores) - window + 1, hop)
    w_score = np.array([scores[s : s + window].max() for s in starts])
    w_label = np.array([in_zone[s : s + window].any() for s in starts])
    out = {
        "labelled": [a0, a1],
        "zone": [z0, z1],
        "peak": peak,
        "hit": bool(in_zone[peak]),
        "margin": float(inside / outside) if outside > 0 else float("inf"),
        "point_auc": roc_auc(labels.astype(np.int8), scores),
        "window_auc": roc_auc(w_label.astype(np.int8), w_score),
    }
    if threshold is not None:
        events = _events(scores > threshold)
        false = [e for e in events if not in_zone[e[0] : e[1]].any()]
        hits = np.flatnonzero((scores > threshold) & in_zone)
        out.update(
            {
                "threshold": float(threshold),
                "alarm_events": len(events),
                "false_alarms": len(false),
                "detection_delay": int(hits[0] - a0) if len(hits) else None,
            }
        )
    return out


def describe(rep: dict) -> str:
    """One line of an :func:`anomaly_report`'s figures (an unlabelled series: peak and alarms)."""
    if rep.get("hit") is None:
        alarms = "" if rep.get("alarm_events") is None else f", {rep['alarm_events']} alarm events"
        return f"peak {rep['peak']} (no labelled anomaly){alarms}"
    return (
        f"peak {rep['peak']} (labelled {rep['labelled']}) hit={rep['hit']} "
        f"margin {rep['margin']:.2f} point AUC {rep['point_auc']:.3f} "
        f"window AUC {rep['window_auc']:.3f}"
    )
