"""The ``[qat]`` section of a stage config: the switch and the settings of one QAT run.

Read strictly (:mod:`edge_runtime.settings`): an unknown key, a value of the wrong type
or out of range is one line naming the file, ``[qat]`` and the field. This module
imports no TensorFlow, so ``pipeline`` can ask :func:`qat_enabled` cheaply.

``enabled`` (default false) is the pipeline's switch: ``make demo`` runs the qat
stage only when it is true. ``python -m quantize qat`` runs whenever it is called.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge_runtime.settings import SettingsError, check_keys, number, read_toml

RANGES = ("frozen", "recalibrate")
SECTION = "qat"


class QATError(SettingsError):
    """Bad QAT settings; the message names file and field."""


@dataclass(frozen=True)
class QATSettings:
    """Settings of one QAT run (defaults measured on HAPT validation; see docs/architecture.md)."""

    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-4
    distill: float = 1.0  # α: weight of the teacher term (1 = the teacher alone, no labels)
    temperature: float = 2.0
    float_weight: float = 1.0  # weight of the float path's loss beside the fake-quant one
    consistency: float = 1.0  # weight of the int8-vs-float term (same weights, both paths)
    ranges: str = "recalibrate"
    calibration_samples: int = 1000  # as the int8 stage
    calibration_seed: int = 0  # as the int8 stage
    clipnorm: float = 1.0
    seed: int = 0
    max_train_windows: int = 0  # 0 = every training window each epoch
    augment: bool = True  # the train stage's augmentation (rotation, gain), when it had one
    # XLA-compile the step chain: faster per batch on a large data set (HAPT), slower to
    # start (a tiny one runs sooner without); the integer arithmetic is the same either way
    jit: bool = True

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> QATSettings:
        """Settings from a ``[qat]`` table; ``enabled`` is checked and ignored here.

        Errors name ``source``, ``[qat]`` and the field: ``c.toml: [qat]: epochs:
        expected an integer, found '3'``.
        """
        where = f"{source}: [{SECTION}]"
        if not isinstance(d, dict):
            raise QATError(f"{where}: expected a table, found {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        try:
            check_keys(d, [*sorted(known), "enabled"], where)
            _flag(d, "enabled", where)
            kw: dict[str, Any] = {}
            for key, (kind, lo, hi) in _LIMITS.items():
                if key in d:
                    kw[key] = number(d, key, where, kind=kind, lo=lo, hi=hi)
            for key in ("augment", "jit"):
                if key in d:
                    kw[key] = _flag(d, key, where)
            if "ranges" in d:
                v = d["ranges"]
                if v not in RANGES:
                    raise QATError(f"{where}: ranges: expected one of {list(RANGES)}, found {v!r}")
                kw["ranges"] = v
        except SettingsError as e:
            raise QATError(str(e)) from None
        for key, (_, lo, _) in _LIMITS.items():
            if key in _OPEN and key in kw and kw[key] <= lo:
                raise QATError(f"{where}: {key}: expected a value > {lo}, found {kw[key]!r}")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# field: (type, lowest, highest); the fields in _OPEN must be strictly above their lowest
_LIMITS: dict[str, tuple[type, float | None, float | None]] = {
    "epochs": (int, 0, 1000),
    "batch_size": (int, 1, 1 << 16),
    "learning_rate": (float, 0.0, 1.0),
    "distill": (float, 0.0, 1.0),
    "temperature": (float, 0.0, 100.0),
    "float_weight": (float, 0.0, None),
    "consistency": (float, 0.0, None),
    "calibration_samples": (int, 1, 1 << 20),
    "calibration_seed": (int, 0, None),
    "clipnorm": (float, 0.0, None),
    "seed": (int, 0, None),
    "max_train_windows": (int, 0, None),
}
_OPEN = ("learning_rate", "temperature", "clipnorm")


def _flag(d: dict[str, Any], key: str, where: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise QATError(f"{where}: {key}: expected true or false, found {v!r}")
    return v


def read_qat_config(path: str | Path) -> tuple[bool, QATSettings]:
    """``(enabled, settings)`` of a config file's ``[qat]`` section (absent: off, defaults)."""
    raw = read_toml(path)
    table = raw.get(SECTION, {})
    settings = QATSettings.from_dict(table, str(path))
    return bool(table.get("enabled", False)), settings


def qat_enabled(path: str | Path) -> bool:
    """Whether a config file switches the qat stage on (``[qat] enabled = true``)."""
    return read_qat_config(path)[0]
