"""Stage configuration: a TOML file read into typed sections, saved into the bundle."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.model import ModelConfig


class ConfigError(ValueError):
    """A config file is missing, malformed or has a bad value; the message names it."""


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    epochs: int = 80
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 12
    clipnorm: float = 1.0
    class_weights: bool = True
    warmup: int = 0  # forecaster: leading steps of each sequence left out of the loss
    augment_rotate_deg: float = 0.0  # random sensor rotation, degrees (0 = off)
    augment_scale: float = 0.0  # random gain ±fraction (0 = off)
    augment_groups: tuple[tuple[int, ...], ...] = ()  # channel triads rotated together


@dataclass(frozen=True)
class Candidate:
    name: str
    model: dict[str, Any]  # ModelConfig fields other than n_channels / n_outputs


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
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> int:
        return int(self.data["window"])

    @property
    def hop(self) -> int:
        return int(self.data["hop"])

    def model_config(
        self, n_channels: int, n_outputs: int, overrides: dict | None = None
    ) -> ModelConfig:
        fields = {**self.model, **(overrides or {})}
        if "gru_units" in fields:
            fields["gru_units"] = tuple(fields["gru_units"])
        try:
            return ModelConfig(n_channels=n_channels, n_outputs=n_outputs, **fields)
        except TypeError as e:
            raise ConfigError(f"{self.path}: [model]: {e}") from e
        except ValueError as e:
            raise ConfigError(f"{self.path}: {e}") from e


# [prune] (sparsity, granularity) pins the prune stage; read by the stages that prune.
_TOP = {"name", "data", "model", "train", "select", "threshold", "prune"}


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: str | Path) -> Config:
    """The typed config of a parsed TOML table (or of the copy a bundle's manifest keeps
    under ``stages.train.config``); ``path`` names it in errors."""
    unknown = set(raw) - _TOP
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; expected {sorted(_TOP)}")
    for key in ("name", "data"):
        if key not in raw:
            raise ConfigError(f"{path}: missing '{key}'")
    for key in ("window", "hop"):
        v = raw["data"].get(key)
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{path}: [data].{key}: expected a positive integer, found {v!r}")
    try:
        train = TrainSettings(**raw.get("train", {}))
    except TypeError as e:
        raise ConfigError(f"{path}: [train]: {e}") from e
    select = raw.get("select", {})
    candidates = []
    for i, c in enumerate(select.get("candidates", [])):
        c = dict(c)
        if "name" not in c:
            raise ConfigError(f"{path}: [[select.candidates]] #{i + 1} has no name")
        name = c.pop("name")
        candidates.append(Candidate(name=name, model=c))
    return Config(
        name=raw["name"],
        path=str(path),
        data=raw["data"],
        model=raw.get("model", {}),
        train=train,
        select_enabled=bool(select.get("enabled", False)) and bool(candidates),
        select_metric=select.get("metric", "val_macro_f1"),
        candidates=candidates,
        threshold=raw.get("threshold", {}),
        raw=raw,
    )
