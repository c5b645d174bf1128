"""The public API for programs on a Raspberry Pi (or any host): no TensorFlow needed.

One line, from a bundle to predictions::

    from edge_runtime.api import open_bundle, Streamer
    for r in Streamer(open_bundle("build/har")).push_many(counts): print(r.sample, r.label)

``counts`` is int16 ``(n, C)`` sensor counts (one row per sample, channels in
the manifest's order); :meth:`Streamer.push` takes one sample at a time and
returns the Results it completes. See :mod:`edge_runtime.stream` for the modes
(``"window-exact"``, ``"continuous"``), smoothing and the Result fields, and
:mod:`edge_runtime.interpreter` for the backends (``"litert"``, ``"xnnpack"``).
``Streamer(b, interpreter_python="/path/to/python")`` runs the step model in a
worker process under that Python (tflite-runtime with numpy<2, see
:mod:`edge_runtime.worker`); ``Streamer.close()`` stops it.
"""

from __future__ import annotations

import os

from edge_runtime import contract
from edge_runtime.bundle import Bundle, BundleError
from edge_runtime.interpreter import InterpreterError, StepInterpreter
from edge_runtime.stream import MODES, Result, Streamer

__all__ = [
    "MODES",
    "Bundle",
    "BundleError",
    "InterpreterError",
    "Result",
    "StepInterpreter",
    "Streamer",
    "open_bundle",
]

STEP_FILE = contract.STEP_MODEL


def open_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open a bundle for streaming: manifest validated, ``step_int8.tflite`` sha256 verified."""
    b = Bundle.open(path)
    if not b.has(STEP_FILE) or "step" not in (b.manifest.get("quantization") or {}):
        raise BundleError(f"{b.root}: no {STEP_FILE} in the bundle: run `python -m quantize int8`")
    b.path(STEP_FILE)
    return b
