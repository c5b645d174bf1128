"""Sweep points of the prune stage trained side by side, one worker process each.

Training one point keeps about one core busy (HAPT, 0.75 block4: 41 CPU-seconds in
41 s of wall time with TensorFlow's two intra-op threads), so on a machine with N
cores N points train in about the time of one: two HAPT points took 43.6 s side by
side against 41 s for one alone. A worker opens the bundle, rebuilds the training
arrays and prunes the float model with the point's settings, as the stage does in its
own process; :func:`quantize.prune.prune_model` seeds every point from its settings and
runs with the same thread budget, so a point's weights are the same whichever process
trains it (``tests/test_prune_choice.py`` compares them).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import keras
import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle
from quantize.bundle_io import load_keras
from quantize.prune import PruneSettings, prune_model
from train.arrays import TrainingArrays, training_arrays
from train.fit import configure_tf

Point = tuple[keras.Model, dict[str, Any]]


def default_jobs() -> int:
    """The CPU cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def fit_arrays(d: TrainingArrays) -> tuple[np.ndarray, ...]:
    """The positional data arguments of :func:`quantize.prune.prune_model`."""
    return d.x_train, d.y_train, d.x_val, d.y_val


def fit_weights(d: TrainingArrays) -> dict[str, Any]:
    """The keyword data arguments of :func:`quantize.prune.prune_model`."""
    return {"sample_weight": d.sample_weight, "class_weight": d.class_weight, "augment": d.augment}


def train_points(
    bundle_dir: str | Path,
    model: keras.Model,
    d: TrainingArrays,
    points: list[PruneSettings],
    *,
    jobs: int,
    data_path: str | None = None,
) -> list[Point]:
    """``(pruned model, prune report)`` of every point, in the order given.

    With ``jobs`` > 1 and more than one point, up to ``jobs`` points train at once in
    worker processes (each rebuilds ``model`` and ``d`` from the bundle); otherwise they
    train one after the other in this process on ``model`` and ``d``.
    """
    if jobs <= 1 or len(points) <= 1:
        return [prune_model(model, s, *fit_arrays(d), **fit_weights(d)) for s in points]
    spawn = get_context("spawn")  # TensorFlow's threads do not survive a fork
    with tempfile.TemporaryDirectory(prefix="tinygru-prune-") as tmp:
        outs = [str(Path(tmp) / f"point{i}.keras") for i in range(len(points))]
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(points)),
            mp_context=spawn,
            initializer=end_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = [
                pool.submit(_point, str(bundle_dir), data_path, s.to_dict(), out, i)
                for i, (s, out) in enumerate(zip(points, outs, strict=True))
            ]
            reports = [f.result() for f in futures]
        return [
            (keras.models.load_model(out, safe_mode=True, compile=False), rep)
            for out, rep in zip(outs, reports, strict=True)
        ]


def end_with_parent(parent: int) -> None:
    """Worker initializer: the worker ends when the process that started it does.

    A stage killed by a signal it cannot handle (SIGTERM from a job runner, SIGKILL)
    would otherwise leave its workers training to the end of their point on the
    cores the next job needs. On Linux the kernel sends the worker SIGTERM when its
    parent dies (``prctl(PR_SET_PDEATHSIG)``); a parent gone before that call is
    noticed by the worker's parent pid. Elsewhere only the second check applies.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() != parent:
        os._exit(1)


def _point(
    bundle_dir: str, data_path: str | None, settings: dict[str, Any], out: str, slot: int
) -> dict[str, Any]:
    """Worker: prune the bundle's float model with ``settings``, save it to ``out``."""
    configure_tf()
    b = Bundle.open(bundle_dir)
    d = training_arrays(b, data_path)
    model = load_keras(b, contract.FLOAT_MODEL)
    s = PruneSettings(**settings)
    pruned, report = prune_model(model, s, *fit_arrays(d), **fit_weights(d), bar_position=slot)
    pruned.save(out)
    return report
