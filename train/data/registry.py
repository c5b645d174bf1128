"""Dataset names used in configs (``[data].dataset``) and their loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from train.data import DataError, SensorData


def _hapt() -> SensorData:
    from train.data.hapt import load_hapt

    return load_hapt()


def _kdd() -> SensorData:
    from train.data.kdd_tsad import load_kdd_tsad_135

    return load_kdd_tsad_135()


def _basic_motions() -> SensorData:
    from train.data.basic_motions import load_basic_motions

    return load_basic_motions()


_TASK_WORDS = {"classification": "for a classifier", "forecast": "a series for a forecaster"}
_HEADS = {"classification": "softmax", "forecast": "forecast"}

DATASETS: dict[str, Callable[[], SensorData]] = {
    "hapt": _hapt,
    "kdd_tsad_135": _kdd,
    "basic_motions": _basic_motions,
}


def load_dataset(
    name_or_path: str | Path,
    window: int | None = None,
    sample_rate: float | None = None,
    *,
    task: str | None = None,
    series: Any = None,
) -> SensorData:
    """A packaged data set by name (see :data:`DATASETS`), else a bring-your-own file.

    ``task`` (``classification`` or ``forecast``, from the config's head) is what the
    data must be: a packaged set of the other task is refused, a bring-your-own file is
    read as that task (default classification). ``window``, ``sample_rate`` and
    ``series`` (:class:`train.data.byo.SeriesSplit`) apply to bring-your-own files only.
    """
    key = str(name_or_path)
    if key in DATASETS:
        data = DATASETS[key]()
        if task is not None and data.task != task:
            raise DataError(
                f"data set {key!r} is {_TASK_WORDS[data.task]}, but the config's [model] head "
                f"makes the model {_TASK_WORDS[task]}; expected head = "
                f"{_HEADS[data.task]!r}"
            )
        return data
    if Path(key).suffix.lower() in (".npz", ".csv"):
        from train.data.byo import load_byo

        return load_byo(
            key, window=window, sample_rate=sample_rate, task=task or "classification",
            series=series,
        )  # fmt: skip
    raise DataError(
        f"{key}: unknown data set, expected one of {sorted(DATASETS)} or a .npz / .csv file"
    )
