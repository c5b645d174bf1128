"""What a search varies: one :class:`Candidate` per trial, drawn from a :class:`Space`.

A candidate is a member of the model family (``train.model``) plus the settings
that change its device cost or its training: window length, front end (none, or
a causal Conv1D with filters / kernel k / stride s), GRU units per layer (1 or 2
layers), pruning sparsity and granularity, and the learning rate. Everything
else (dropout, batch size, augmentation, ...) is the config's.

Optuna parameters (define-by-run, conditional):

    window          categorical, around the config's window (½, ¾, 1, 1½ ×)
    front_end       "none" | "conv" (``filters = [0]``: none only)
    filters, kernel, stride          only with "conv"; stride is capped at kernel
    layers          1 | 2
    units1, units2  units of GRU layer 1 (and 2)
    sparsity        0 | 0.5 | 0.75 | 0.9 of the pruned kernels
    granularity     "weight" | "block4", only with sparsity > 0
    learning_rate   log-uniform

A forecaster steps on every sample (stride 1) and keeps the config's hop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FILTERS = (8, 16, 32, 64)
KERNELS = (2, 3, 4, 5, 6, 8)
STRIDES = (1, 2, 3, 4)
UNITS = (8, 16, 24, 32, 48, 64)
LAYERS = (1, 2)
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
GRANULARITIES = ("weight", "block4")
LEARNING_RATE = (1e-3, 1e-2)
WINDOW_FACTORS = (0.5, 0.75, 1.0, 1.5)


@dataclass(frozen=True)
class Candidate:
    """One point of the search space, in the config's terms."""

    window: int  # samples per window (classifier) or training sequence (forecaster)
    hop: int
    front_end_filters: int  # 0 = no front end
    front_end_kernel: int
    front_end_stride: int
    gru_units: tuple[int, ...]
    sparsity: float  # of the pruned kernels; 0 = not pruned
    granularity: str  # "weight" | "block4" (meaningful with sparsity > 0)
    learning_rate: float

    def model(self) -> dict[str, Any]:
        """``[model]`` fields for :meth:`train.config.Config.model_config`."""
        return {
            "front_end_filters": self.front_end_filters,
            "front_end_kernel": self.front_end_kernel,
            "front_end_stride": self.front_end_stride,
            "gru_units": list(self.gru_units),
        }

    def shape_key(self) -> str:
        """What the device cost depends on: the step's shapes, the pruning and the window."""
        units = "-".join(map(str, self.gru_units))
        fe = (
            f"c{self.front_end_filters}k{self.front_end_kernel}s{self.front_end_stride}"
            if self.front_end_filters
            else "none"
        )
        pr = f"{self.sparsity:g}{self.granularity}" if self.sparsity > 0 else "dense"
        return f"{fe}_g{units}_{pr}_w{self.window}"

    def label(self) -> str:
        """Short readable name: ``conv32k5s2-gru32 w128 75%block4 lr0.002``."""
        fe = (
            f"conv{self.front_end_filters}k{self.front_end_kernel}s{self.front_end_stride}-"
            if self.front_end_filters
            else ""
        )
        gru = "gru" + "x".join(map(str, self.gru_units))
        pr = f" {round(100 * self.sparsity)}%{self.granularity}" if self.sparsity > 0 else ""
        return f"{fe}{gru} w{self.window}{pr} lr{self.learning_rate:.2g}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gru_units"] = list(self.gru_units)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        d = dict(d)
        d["gru_units"] = tuple(int(u) for u in d["gru_units"])
        return cls(**d)


@dataclass(frozen=True)
class Space:
    """The choices of every parameter (see the module doc)."""

    windows: tuple[int, ...]
    config_window: int
    config_hop: int
    forecast: bool = False
    filters: tuple[int, ...] = FILTERS
    kernels: tuple[int, ...] = KERNELS
    strides: tuple[int, ...] = STRIDES
    units: tuple[int, ...] = UNITS
    layers: tuple[int, ...] = LAYERS
    sparsities: tuple[float, ...] = SPARSITIES
    granularities: tuple[str, ...] = GRANULARITIES
    learning_rate: tuple[float, float] = LEARNING_RATE
    notes: dict[str, Any] = field(default_factory=dict)

    def front_ends(self) -> list[str]:
        """Always "none"; "conv" unless ``filters = [0]`` (0 is not a filter count)."""
        return ["none", "conv"] if any(f > 0 for f in self.filters) else ["none"]

    def hop_for(self, window: int) -> int:
        """The config's hop for a forecaster; the config's hop/window ratio for a classifier."""
        if self.forecast:
            return self.config_hop
        return max(1, round(window * self.config_hop / self.config_window))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def default_space(window: int, hop: int, forecast: bool, max_window: int | None = None) -> Space:
    """The search space around a config's window; ``max_window`` caps it (shortest series)."""
    wins = sorted({max(4, round(f * window)) for f in WINDOW_FACTORS})
    if max_window is not None:
        wins = [w for w in wins if w <= max_window] or [min(window, max_window)]
    return Space(
        windows=tuple(wins),
        config_window=window,
        config_hop=hop,
        forecast=forecast,
        strides=(1,) if forecast else STRIDES,
    )


def sample(trial: Any, space: Space) -> Candidate:
    """Draw a candidate through an Optuna trial (define-by-run, conditional parameters)."""
    window = int(trial.suggest_categorical("window", list(space.windows)))
    front = trial.suggest_categorical("front_end", space.front_ends())
    filters, kernel, stride = 0, 1, 1
    if front == "conv":
        filters = int(trial.suggest_categorical("filters", [f for f in space.filters if f > 0]))
        kernel = int(trial.suggest_categorical("kernel", list(space.kernels)))
        stride = int(trial.suggest_categorical("stride", list(space.strides)))
        stride = min(stride, kernel)  # a stride beyond the kernel would skip samples
    layers = int(trial.suggest_categorical("layers", list(space.layers)))
    units = [int(trial.suggest_categorical("units1", list(space.units)))]
    if layers == 2:
        units.append(int(trial.suggest_categorical("units2", list(space.units))))
    sparsity = float(trial.suggest_categorical("sparsity", list(space.sparsities)))
    granularity = "weight"
    if sparsity > 0:
        granularity = str(trial.suggest_categorical("granularity", list(space.granularities)))
    lr = float(trial.suggest_float("learning_rate", *space.learning_rate, log=True))
    return Candidate(
        window=window,
        hop=space.hop_for(window),
        front_end_filters=filters,
        front_end_kernel=kernel,
        front_end_stride=stride,
        gru_units=tuple(units),
        sparsity=sparsity,
        granularity=granularity,
        learning_rate=lr,
    )


def params_of(c: Candidate, space: Space) -> dict[str, Any] | None:
    """The Optuna parameters that draw ``c`` (to enqueue it), or None when ``c`` lies outside."""
    p: dict[str, Any] = {"window": c.window, "layers": len(c.gru_units)}
    p["front_end"] = "conv" if c.front_end_filters else "none"
    if p["front_end"] not in space.front_ends():
        return None
    if c.front_end_filters:
        p.update(filters=c.front_end_filters, kernel=c.front_end_kernel, stride=c.front_end_stride)
    p["units1"] = c.gru_units[0]
    if len(c.gru_units) == 2:
        p["units2"] = c.gru_units[1]
    p["sparsity"] = c.sparsity
    if c.sparsity > 0:
        p["granularity"] = c.granularity
    p["learning_rate"] = c.learning_rate
    choices = {
        "window": space.windows, "layers": space.layers, "filters": space.filters,
        "kernel": space.kernels, "stride": space.strides, "units1": space.units,
        "units2": space.units, "sparsity": space.sparsities, "granularity": space.granularities,
    }  # fmt: skip
    for k, v in p.items():
        if k in choices and v not in choices[k]:
            return None
    lo, hi = space.learning_rate
    if not lo <= c.learning_rate <= hi or c.hop != space.hop_for(c.window):
        return None
    return p
