"""What streaming reads from a bundle, checked once, and the Result it emits.

:class:`StreamConfig` is the manifest's part (channels, k, s, T, H, the ring
buffer fill, normalization, thresholds); :func:`input_quant` is the device
input contract, checked against the step model's ``x`` tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime import anomaly, contract
from edge_runtime.interpreter import InterpreterError, StepInterpreter
from edge_runtime.preprocess import InputQuant

__all__ = ["MODES", "Result", "StreamConfig", "input_quant"]

MODES = ("window-exact", "continuous")


@dataclass(slots=True)
class Result:
    """One prediction. Classifier fields or forecaster fields are set, the others are None."""

    sample: int  # index of the sample that produced it (counted from the Streamer's creation)
    mode: str
    y_int8: np.ndarray  # the head's raw int8 output, (n_outputs,)
    latency_us: float
    window_start: int | None = None  # window-exact: the window's first sample
    label: str | None = None
    label_index: int | None = None
    probabilities: np.ndarray | None = None  # smoothed when smoothing is on
    raw_probabilities: np.ndarray | None = None
    forecast: np.ndarray | None = None  # sensor units, the prediction of sample + 1
    score: float | None = None
    anomaly: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, labels: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready fields (None values left out)."""
        d: dict[str, Any] = {"sample": self.sample, "mode": self.mode}
        if self.window_start is not None:
            d["window_start"] = self.window_start
        if self.label is not None:
            d["label"] = self.label
            d["label_index"] = self.label_index
        if self.probabilities is not None:
            probs = [round(float(p), 6) for p in self.probabilities]
            d["probabilities"] = dict(zip(labels, probs, strict=True)) if labels else probs
        if self.forecast is not None:
            d["forecast"] = [float(v) for v in self.forecast]
            d["score"] = None if self.score is None else float(self.score)
            d["anomaly"] = bool(self.anomaly)
        d["y_int8"] = [int(v) for v in self.y_int8]
        d["latency_us"] = round(self.latency_us, 1)
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class StreamConfig:
    """What streaming needs from the manifest."""

    task: str
    labels: list[str]
    channels: int
    kernel: int  # k
    stride: int  # s
    window: int  # T
    hop: int  # H
    fill: int
    scale_c: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    anomaly_threshold: float | None
    warmup: int

    @property
    def classify(self) -> bool:
        return self.task == "classification"

    @property
    def steps_per_window(self) -> int:
        return contract.steps_per_window(self.window, self.stride)

    @property
    def last_step(self) -> int:
        return contract.last_step(self.window, self.stride)

    @classmethod
    def from_manifest(cls, m: dict[str, Any], hop: int | None = None) -> StreamConfig:
        try:
            mc = m["model"]["config"]
            pre = m["preprocess"]
            ring = m["quantization"]["step"]["ring_buffer"]
            th = m.get("thresholds") or {}
            thr = anomaly.device_threshold(th)
            cfg = cls(
                task=str(m["task"]),
                labels=[str(v) for v in m.get("labels", [])],
                channels=int(mc["n_channels"]),
                kernel=int(mc.get("front_end_kernel", 1)),
                stride=int(mc.get("front_end_stride", 1)),
                window=int(pre["window"]),
                hop=int(hop if hop is not None else pre["hop"]),
                fill=int(ring["fill"]),
                scale_c=np.array([float(c["scale"]) for c in m["dataset"]["channels"]]),
                mean=np.asarray(pre["mean"], np.float64),
                std=np.asarray(pre["std"], np.float64),
                anomaly_threshold=None if thr is None else float(thr),
                warmup=int(th.get("anomaly_warmup_samples", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InterpreterError(
                f"manifest: cannot stream this bundle ({type(e).__name__}: {e}); "
                "run `python -m quantize int8` first"
            ) from None
        if min(cfg.kernel, cfg.stride, cfg.window, cfg.hop, cfg.channels) < 1:
            raise InterpreterError(f"manifest: invalid streaming parameters {cfg}")
        if len(cfg.scale_c) != cfg.channels:
            raise InterpreterError(
                f"manifest: {len(cfg.scale_c)} dataset channels, model expects {cfg.channels}"
            )
        return cfg


def input_quant(m: dict[str, Any], cfg: StreamConfig, interp: StepInterpreter) -> InputQuant:
    """The manifest's ``preprocess.input_quant``, checked against the step model's ``x``."""
    x = interp.x
    if x.width != cfg.kernel * cfg.channels:
        raise InterpreterError(
            f"step_int8.tflite: x has {x.width} values, manifest model.config says "
            f"k*C = {cfg.kernel}*{cfg.channels}"
        )
    if x.zero_point != cfg.fill:
        raise InterpreterError(
            f"manifest: ring_buffer.fill {cfg.fill} is not the x zero point {x.zero_point}"
        )
    try:
        iq = InputQuant.from_dict(m["preprocess"]["input_quant"])
    except (KeyError, ValueError) as e:
        raise InterpreterError(f"manifest preprocess.input_quant: {e}") from None
    if iq.channels != cfg.channels:
        raise InterpreterError(
            f"manifest preprocess.input_quant has {iq.channels} channels, "
            f"model expects {cfg.channels}"
        )
    if not math.isclose(iq.scale, x.scale, rel_tol=1e-6) or iq.zero_point != x.zero_point:
        raise InterpreterError(
            "manifest preprocess.input_quant does not match step_int8.tflite's x input: "
            "rerun `python -m quantize int8`"
        )
    return iq
