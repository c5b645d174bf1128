"""Stage configuration: a TOML file read strictly into typed sections, saved into the bundle.

Every key of every section is known here (:data:`SECTIONS`): an unknown key is refused
with the nearest valid key suggested, a value of the wrong type or outside its range
is refused naming ``file: [section].key``, what was expected and what was found.
A section another stage reads is registered in :data:`SECTIONS` with its keys; the
train stage reads what it needs and keeps the whole table in ``Config.raw``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_runtime.settings import SettingsError, check_keys, number, read_toml
from train.model import ModelConfig


class ConfigError(SettingsError):
    """A config file is missing, malformed or has a bad value; the message names it."""


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    epochs: int = 80
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 12
    clipnorm: float = 1.0
    # "constant" (early stopping on validation loss, best epoch kept), or "cosine":
    # epoch e of E runs at learning_rate · ½(1 + cos(π e / E)), all E run, last kept
    lr_schedule: str = "constant"
    class_weights: bool = True
    warmup: int = 0  # forecaster: leading steps of each sequence left out of the loss
    augment_rotate_deg: float = 0.0  # random sensor rotation, degrees (0 = off)
    augment_scale: float = 0.0  # random gain ±fraction (0 = off)
    augment_groups: tuple[tuple[int, ...], ...] = ()  # channel triads rotated together


@dataclass(frozen=True)
class Candidate:
    name: str
    model: dict[str, Any]  # ModelConfig fields other than n_channels / n_outputs


@dataclass(frozen=True)
class PruneConfig:
    """``[prune]``: how the prune stage picks the deployed sparsity.

    ``sparsity`` pins one sparsity (0 = no pruning); without it the stage sweeps
    ``sweep`` and deploys the sparsest point whose validation score stays within
    ``max_val_drop`` of the dense model's and whose model fits the target.
    ``max_val_drop`` is in points of validation macro-F1 (%) for a classifier and a
    fraction of the dense validation anomaly margin for a forecaster (None: the
    head's default).
    """

    sparsity: float | None = None
    granularity: str = "block4"
    sweep: tuple[float, ...] = (0.5, 0.75, 0.9)
    max_val_drop: float | None = None


@dataclass
class Config:
    name: str
    path: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: TrainSettings
    select_enabled: bool = False
    select_metric: str = "val_macro_f1"
    candidates: list[Candidate] = field(default_factory=list)
    threshold: dict[str, Any] = field(default_factory=dict)
    prune: PruneConfig = field(default_factory=PruneConfig)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> int:
        return int(self.data["window"])

    @property
    def hop(self) -> int:
        return int(self.data["hop"])

    @property
    def head(self) -> str:
        """``softmax`` (a classifier) or ``forecast`` (an anomaly forecaster): the task."""
        return str(self.model.get("head", "softmax"))

    @property
    def task(self) -> str:
        return "forecast" if self.head == "forecast" else "classification"

    def model_config(
        self, n_channels: int, n_outputs: int, overrides: dict | None = None
    ) -> ModelConfig:
        fields_ = {**self.model, **(overrides or {})}
        if "gru_units" in fields_:
            fields_["gru_units"] = tuple(fields_["gru_units"])
        try:
            return ModelConfig(n_channels=n_channels, n_outputs=n_outputs, **fields_)
        except TypeError as e:
            raise ConfigError(f"{self.path}: [model]: {e}") from e
        except ValueError as e:
            raise ConfigError(f"{self.path}: {e}") from e


# The keys of every section. [data] holds the loader's and the split's keys:
#   dataset, window, hop        every task
#   sample_rate                 bring-your-own data that does not state its rate (Hz)
#   val_fraction, zone          forecaster: validation tail of the anomaly-free part, hit zone
#   train_end, margin           forecaster: end of the anomaly-free training part (sample
#                               index), else the first labelled anomaly minus `margin`
DATA_KEYS = ("dataset", "window", "hop", "sample_rate", "val_fraction", "zone", "train_end",
             "margin")  # fmt: skip
MODEL_KEYS = tuple(f.name for f in fields(ModelConfig) if f.name not in ("n_channels", "n_outputs"))
TRAIN_KEYS = tuple(f.name for f in fields(TrainSettings))
SELECT_KEYS = ("enabled", "metric", "candidates")
SELECT_METRICS = ("val_macro_f1", "val_accuracy")
LR_SCHEDULES = ("constant", "cosine")
THRESHOLD_KEYS = ("method", "factor")
PRUNE_KEYS = tuple(f.name for f in fields(PruneConfig))
SECTIONS: dict[str, tuple[str, ...]] = {
    "data": DATA_KEYS,
    "model": MODEL_KEYS,
    "train": TRAIN_KEYS,
    "select": SELECT_KEYS,
    "threshold": THRESHOLD_KEYS,
    "prune": PRUNE_KEYS,
}
_TOP = ("name", *SECTIONS, "qat")  # [qat]: read by quantize/qat_config.py


def load_config(path: str | Path) -> Config:
    """Read and check a config file (UTF-8 TOML); :class:`ConfigError` names file and field."""
    try:
        raw = read_toml(path)
    except SettingsError as e:
        raise ConfigError(str(e)) from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: str | Path) -> Config:
    """The typed config of a parsed TOML table (or of the copy a bundle's manifest keeps
    under ``stages.train.config``); ``path`` names it in errors."""
    try:
        return _parse(raw, str(path))
    except ConfigError:
        raise
    except SettingsError as e:
        raise ConfigError(str(e)) from None


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    t = raw.get(key, {})
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: [{key}]: expected a table, found {t!r}")
    check_keys(t, SECTIONS[key], f"{where}: [{key}]")
    return t


def _flag(table: dict[str, Any], key: str, where: str, default: bool) -> bool:
    v = table.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: {key}: expected true or false, found {v!r}")
    return v


def _parse(raw: dict[str, Any], p: str) -> Config:
    check_keys(raw, _TOP, p)
    for key in ("name", "data"):
        if key not in raw:
            raise ConfigError(f"{p}: missing '{key}'")
    if not isinstance(raw["name"], str) or not raw["name"].strip():
        raise ConfigError(f"{p}: name: expected a non-empty string, found {raw['name']!r}")
    data = _table(raw, "data", p)
    wd = f"{p}: [data]"
    for key in ("window", "hop"):
        v = data.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{wd}: {key}: expected a positive integer, found {v!r}")
    if "dataset" in data and not isinstance(data["dataset"], str):
        raise ConfigError(f"{wd}: dataset: expected a name or a file, found {data['dataset']!r}")
    for key, kind, lo, hi in (("sample_rate", float, 1e-3, 1e6), ("val_fraction", float, 0.01, 0.9),
                              ("zone", int, 0, None), ("train_end", int, 1, None),
                              ("margin", int, 0, None)):  # fmt: skip
        if key in data:
            number(data, key, wd, kind=kind, lo=lo, hi=hi)

    model = _table(raw, "model", p)
    if "head" in model and model["head"] not in ("softmax", "forecast"):
        raise ConfigError(
            f"{p}: [model]: head: expected 'softmax' or 'forecast', found {model['head']!r}"
        )
    train = _train(_table(raw, "train", p), f"{p}: [train]")

    select = _table(raw, "select", p)
    ws = f"{p}: [select]"
    metric = select.get("metric", "val_macro_f1")
    if metric not in SELECT_METRICS:
        raise ConfigError(f"{ws}: metric: expected one of {list(SELECT_METRICS)}, found {metric!r}")
    candidates = []
    for i, c in enumerate(select.get("candidates", [])):
        wc = f"{p}: [[select.candidates]] #{i + 1}"
        if not isinstance(c, dict):
            raise ConfigError(f"{wc}: expected a table, found {c!r}")
        c = dict(c)
        check_keys(c, ("name", *MODEL_KEYS), wc)
        if "name" not in c:
            raise ConfigError(f"{wc}: has no name")
        name = c.pop("name")
        candidates.append(Candidate(name=name, model=c))

    threshold = _table(raw, "threshold", p)
    wt = f"{p}: [threshold]"
    if threshold.get("method", "val_max") != "val_max":
        raise ConfigError(f"{wt}: method: expected 'val_max', found {threshold['method']!r}")
    if "factor" in threshold:
        number(threshold, "factor", wt, lo=0.1, hi=100.0)

    return Config(
        name=raw["name"],
        path=p,
        data=data,
        model=model,
        train=train,
        select_enabled=_flag(select, "enabled", ws, False) and bool(candidates),
        select_metric=metric,
        candidates=candidates,
        threshold=threshold,
        prune=_prune(_table(raw, "prune", p), f"{p}: [prune]"),
        raw=raw,
    )


def _train(t: dict[str, Any], w: str) -> TrainSettings:
    d = TrainSettings()
    kw: dict[str, Any] = {
        "seed": number(t, "seed", w, kind=int, lo=0, hi=2**31 - 1, default=d.seed),
        "epochs": number(t, "epochs", w, kind=int, lo=1, hi=100_000, default=d.epochs),
        "batch_size": number(t, "batch_size", w, kind=int, lo=1, hi=1 << 20, default=d.batch_size),
        "learning_rate": number(t, "learning_rate", w, lo=1e-9, hi=10.0, default=d.learning_rate),
        "patience": number(t, "patience", w, kind=int, lo=0, hi=100_000, default=d.patience),
        "clipnorm": number(t, "clipnorm", w, lo=1e-6, hi=1e6, default=d.clipnorm),
        "lr_schedule": t.get("lr_schedule", d.lr_schedule),
        "class_weights": _flag(t, "class_weights", w, d.class_weights),
        "warmup": number(t, "warmup", w, kind=int, lo=0, hi=1 << 20, default=d.warmup),
        "augment_rotate_deg": number(t, "augment_rotate_deg", w, lo=0.0, hi=180.0,
                                     default=d.augment_rotate_deg),
        "augment_scale": number(t, "augment_scale", w, lo=0.0, hi=0.9, default=d.augment_scale),
    }  # fmt: skip
    if kw["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(
            f"{w}: lr_schedule: expected one of {list(LR_SCHEDULES)}, found {kw['lr_schedule']!r}"
        )
    if kw["lr_schedule"] == "cosine" and "patience" in t:
        raise ConfigError(
            f"{w}: patience: has no effect with lr_schedule = 'cosine' (every epoch runs and "
            f"the last weights are kept); remove it or use lr_schedule = 'constant'"
        )
    groups = t.get("augment_groups", [])
    ok = isinstance(groups, list) and all(
        isinstance(g, list) and len(g) == 3 and all(isinstance(i, int) and i >= 0 for i in g)
        for g in groups
    )
    if not ok:
        raise ConfigError(
            f"{w}: augment_groups: expected a list of channel triads such as [[0, 1, 2]], "
            f"found {groups!r}"
        )
    if kw["augment_rotate_deg"] > 0 and not groups:
        raise ConfigError(f"{w}: augment_rotate_deg > 0 needs augment_groups (channel triads)")
    # Integral floats (epochs = 80.0) are refused by `number`; keep the dataclass types.
    kw["augment_groups"] = tuple(tuple(g) for g in groups)
    return TrainSettings(**kw)


def _prune(t: dict[str, Any], w: str) -> PruneConfig:
    from_table: dict[str, Any] = {}
    if "sparsity" in t:
        from_table["sparsity"] = number(t, "sparsity", w, lo=0.0, hi=0.99)
    if "granularity" in t:
        g = t["granularity"]
        if g not in ("weight", "block4"):
            raise ConfigError(f"{w}: granularity: expected 'weight' or 'block4', found {g!r}")
        from_table["granularity"] = g
    if "sweep" in t:
        s = t["sweep"]
        if not isinstance(s, list) or not s or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and 0.0 < v < 1.0 for v in s
        ):  # fmt: skip
            raise ConfigError(f"{w}: sweep: expected a list of sparsities in (0, 1), found {s!r}")
        from_table["sweep"] = tuple(sorted({float(v) for v in s}))
    if "max_val_drop" in t:
        from_table["max_val_drop"] = number(t, "max_val_drop", w, lo=0.0, hi=100.0)
    return PruneConfig(**from_table)
