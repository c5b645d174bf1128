"""The tinygru model family: every member is expressible as one streaming step.

    last k samples ──► [front end: causal Conv1D, k taps, stride s] ──► GRU 1 ──► [GRU 2] ──► head

- Front end: ``Conv1D(filters, k, strides=s, padding="causal", activation="relu")``.
  Output j covers input samples ``j·s − (k−1) … j·s`` (zeros before the start),
  so a device keeps a ring buffer of the last k samples and runs one step at
  every sample index t with ``t % s == 0``. ``k = s = 1`` with ``filters = 0``
  means no front end: the GRU sees every sample.
- GRU layers: Keras 3 ``GRU`` (reset_after=True, gate order z, r, h̃; bias stored
  as (2, 3·units): input and recurrent biases), trained with ``unroll=False``.
- Head: ``softmax`` classifier on the last state (activity) or a linear
  next-sample forecaster on every state (anomaly).

Layer names are fixed (``front_end``, ``gru_1``, ``gru_2``, ``head``) because
the quantize stage copies weights by name into the single-step model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import keras


@dataclass(frozen=True)
class ModelConfig:
    n_channels: int
    n_outputs: int  # classes, or channels forecast
    head: str = "softmax"  # "softmax" (classifier) | "forecast" (linear next sample)
    front_end_filters: int = 0  # 0 = no front end
    front_end_kernel: int = 1  # k: samples per step input
    front_end_stride: int = 1  # s: a step every s samples
    gru_units: tuple[int, ...] = (32,)
    dropout: float = 0.0  # on the GRU input, training only
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head not in ("softmax", "forecast"):
            raise ValueError(f"model.head: expected 'softmax' or 'forecast', found {self.head!r}")
        if not 1 <= len(self.gru_units) <= 2:
            raise ValueError(f"model.gru_units: 1 or 2 layers, found {list(self.gru_units)}")
        if any(not 1 <= u <= 64 for u in self.gru_units):
            raise ValueError(f"model.gru_units: each 1..64, found {list(self.gru_units)}")
        if self.front_end_filters == 0 and (self.front_end_kernel, self.front_end_stride) != (1, 1):
            raise ValueError("model: front_end_kernel/stride need front_end_filters > 0")
        if self.front_end_stride > self.front_end_kernel:
            raise ValueError(
                f"model: front_end_stride {self.front_end_stride} > kernel "
                f"{self.front_end_kernel} would skip samples"
            )
        if self.head == "forecast" and self.front_end_stride != 1:
            raise ValueError(
                "model: a forecaster needs front_end_stride 1 (one forecast per sample)"
            )

    @property
    def has_front_end(self) -> bool:
        return self.front_end_filters > 0

    @property
    def step_inputs(self) -> int:
        """Width of the step model's x input: the last k samples, k·C values."""
        return self.front_end_kernel * self.n_channels

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gru_units"] = list(self.gru_units)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["gru_units"] = tuple(d["gru_units"])
        return cls(**d)


def build_model(cfg: ModelConfig, *, unroll: bool = False) -> keras.Model:
    """The trainable window model: input (batch, T, C) normalized floats.

    Output: (batch, n_outputs) class probabilities for ``softmax``;
    (batch, T, n_outputs) next-sample forecasts for ``forecast``.
    """
    inp = keras.Input((None, cfg.n_channels), name="x")
    x = inp
    if cfg.has_front_end:
        x = keras.layers.Conv1D(
            cfg.front_end_filters,
            cfg.front_end_kernel,
            strides=cfg.front_end_stride,
            padding="causal",
            activation="relu",
            name="front_end",
        )(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    n_layers = len(cfg.gru_units)
    for i, units in enumerate(cfg.gru_units, start=1):
        last = i == n_layers
        x = keras.layers.GRU(
            units,
            return_sequences=(not last) or cfg.head == "forecast",
            reset_after=True,
            unroll=unroll,
            name=f"gru_{i}",
        )(x)
    activation = "softmax" if cfg.head == "softmax" else None
    out = keras.layers.Dense(cfg.n_outputs, activation=activation, name="head")(x)
    return keras.Model(inp, out, name="tinygru")


def count_params(model: keras.Model) -> int:
    return int(sum(w.numpy().size for w in model.weights))
