"""The one step interpreter: the int8 GRU step run by tensor name, on any backend.

::

    from edge_runtime.bundle import Bundle
    from edge_runtime.interpreter import StepInterpreter

    step = StepInterpreter.from_bundle(Bundle.open("build/har"))    # sha256 verified
    states = step.zero_states()
    states, y = step.run(x, states)       # x: int8 (1, k*C); states: [int8 (1, U), ...]

Backends (:mod:`edge_runtime.backends`): ``litert`` (ai-edge-litert, built-in
kernels: the reference the host parity check uses), ``xnnpack`` (ai-edge-litert
with its default XNNPACK delegate), ``auto`` (the built-in kernels of whichever
interpreter runs the model), ``tflm`` (the TFLM kernels through ``tflite_micro``)
and ``engine`` (the bundle's exported C engine built for this host). Every row of
the parity table, the device checks and the Pi runtime run through this class.

Where a LiteRT interpreter runs: in this process with ai-edge-litert when it is
importable and no other Python is named; otherwise in a worker process
(:mod:`edge_runtime.worker`, one per interpreter) started with the Python named
by ``python=`` (``--interpreter-python``) or the environment variable
``TINYGRU_INTERPRETER_PYTHON``, else with this Python. That is how
``tflite_runtime``, whose wheels need numpy<2, serves a runtime that has numpy 2.
The worker speaks a small binary protocol over pipes;
:meth:`StepInterpreter.close` (or exit) stops it, and a failing worker raises
:class:`InterpreterError` naming the child and quoting its stderr.

Tensors are found by name: the model's signature when the backend exposes it,
else the tensor names recorded by the quantize stage
(``manifest["quantization"]["step"]``), else the logical name at the end of a
tensor name (``serving_default_x:0`` -> ``x``). With the manifest's section every
tensor found is checked against it (shape, int8, scale, zero point) before the
first step.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.backends import LITERT_BACKENDS, Backend, Step, canonical
from edge_runtime.bundle import Bundle
from edge_runtime.worker import ENV_PYTHON, WorkerClient

__all__ = [
    "BACKENDS",
    "InterpreterError",
    "StepInterpreter",
    "TensorSpec",
    "litert_importable",
    "logical_name",
    "worker_python",
]

BACKENDS = ("litert", "xnnpack", "auto", "tflm", "engine")
STEP_FILE = contract.STEP_MODEL
# Scales are stored as float32 in the model and as float64 in the manifest.
SCALE_RTOL = 1e-6


class InterpreterError(Exception):
    """The step model cannot be loaded or does not match the bundle's manifest."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the step model."""

    name: str  # logical name: x, h1_in, h1_out, y, ...
    index: int  # interpreter tensor index
    tensor_name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @property
    def width(self) -> int:
        return int(math.prod(self.shape))


def logical_name(tensor_name: str, known: Sequence[str]) -> str | None:
    """``serving_default_h1_in:0`` -> ``h1_in`` when ``h1_in`` is in ``known``, else None.

    An exact match wins; otherwise the longest known name the tensor name ends
    with (``:N`` removed) right after a ``_`` or ``/``.
    """
    base = tensor_name.split(":")[0]
    if base in known:
        return base
    best = None
    for k in known:
        if base.endswith(k) and (len(base) == len(k) or base[-len(k) - 1] in "_/"):
            if best is None or len(k) > len(best):
                best = k
    return best


def litert_importable() -> bool:
    """True when ai_edge_litert imports in this process."""
    try:
        importlib.import_module("ai_edge_litert.interpreter")
    except ImportError:
        return False
    return True


def worker_python(python: str | None = None) -> str | None:
    """The Python a worker runs under, or None for an in-process interpreter.

    ``python`` if given, else ``$TINYGRU_INTERPRETER_PYTHON``, else this Python
    when ai_edge_litert is not importable here.
    """
    if python:
        return str(python)
    env = os.environ.get(ENV_PYTHON, "").strip()
    if env:
        return env
    return None if litert_importable() else sys.executable


class InterpreterPythonAction(argparse.Action):
    """``--interpreter-python PATH``: sets ``TINYGRU_INTERPRETER_PYTHON`` for this process,
    so every step interpreter it opens runs in a worker under that Python."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        os.environ[ENV_PYTHON] = str(values)
        setattr(namespace, self.dest, str(values))


INTERPRETER_PYTHON_HELP = (
    "run the step model in a worker process under this Python (one with tflite-runtime "
    f"and numpy<2, or ai-edge-litert); default ${ENV_PYTHON}"
)


def _resolve(
    details: list[dict[str, Any]],
    names: list[str],
    signature: dict[str, int],
    expected: dict[str, dict[str, Any]],
    kind: str,
) -> dict[str, TensorSpec]:
    by_index = {int(d["index"]): d for d in details}
    by_tname = {str(d["name"]): d for d in details}
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        idx = signature.get(name)
        if idx is not None and idx in by_index:
            found[name] = by_index[idx]
            continue
        tname = expected.get(name, {}).get("tensor_name")
        if tname in by_tname:
            found[name] = by_tname[tname]
            continue
        for d in details:
            if logical_name(str(d["name"]), names) == name:
                found[name] = d
                break
    missing = [n for n in names if n not in found]
    if missing:
        listed = [str(d["name"]) for d in details]
        raise InterpreterError(f"{STEP_FILE}: {kind}: cannot find {missing} among {listed}")
    specs: dict[str, TensorSpec] = {}
    for name in names:
        d = found[name]
        scale, zp = d["quantization"]
        spec = TensorSpec(
            name=name,
            index=int(d["index"]),
            tensor_name=str(d["name"]),
            shape=tuple(int(v) for v in d["shape"]),
            scale=float(scale),
            zero_point=int(zp),
        )
        if np.dtype(d["dtype"]) != np.int8:
            raise InterpreterError(
                f"{STEP_FILE}: {kind} {name} ({spec.tensor_name}) is {np.dtype(d['dtype'])}, "
                "expected int8"
            )
        want = expected.get(name)
        if want is not None:
            problems = []
            if list(spec.shape) != [int(v) for v in want["shape"]]:
                problems.append(f"shape {list(spec.shape)} vs {want['shape']}")
            if not math.isclose(spec.scale, float(want["scale"]), rel_tol=SCALE_RTOL):
                problems.append(f"scale {spec.scale} vs {want['scale']}")
            if spec.zero_point != int(want["zero_point"]):
                problems.append(f"zero point {spec.zero_point} vs {want['zero_point']}")
            if problems:
                raise InterpreterError(
                    f"{STEP_FILE}: {kind} {name} ({spec.tensor_name}) does not match "
                    f"manifest quantization.step.{kind}: " + "; ".join(problems)
                )
        specs[name] = spec
    return specs


def _open_backend(
    model_content: bytes,
    backend: str,
    *,
    num_threads: int | None,
    python: str | None,
    engine: tuple[Path, str] | None,
) -> Backend:
    """Load the model into ``backend`` (a canonical name); errors become InterpreterError."""
    if backend in LITERT_BACKENDS and python is not None:
        from edge_runtime.backends.remote import Remote

        return Remote(python, model_content, backend, num_threads, InterpreterError)
    try:
        if backend in LITERT_BACKENDS:
            from edge_runtime.backends.litert import LiteRT

            return LiteRT(model_content, backend, num_threads)
        if backend == "tflm":
            from edge_runtime.backends.tflm import Tflm

            return Tflm(model_content)
        from edge_runtime.backends.c_engine import CEngine

        if engine is None:
            raise InterpreterError("backend 'engine' needs the export folder and prefix")
        return CEngine(model_content, *engine)
    except (ValueError, RuntimeError) as e:
        if isinstance(e, InterpreterError):
            raise
        raise InterpreterError(f"{STEP_FILE}: backend {backend} refused the model: {e}") from None


class StepInterpreter:
    """One int8 step model on one backend, run by logical tensor name with a fixed call.

    ``step`` is the manifest's ``quantization.step`` section (names, shapes, scales
    and zero points the quantize stage recorded); the model must agree with it.
    Without it (a model not yet in a bundle) the names are found in the model alone.
    ``python``: run a LiteRT backend in a worker under that Python (see the module
    doc). ``engine``: ``(export folder, prefix)`` for the ``engine`` backend.

    The streaming call is ``y = interp.step(x, states)``: ``states`` (a list)
    is replaced in place by the new states, ``y`` is a fresh int8 ``(1, n_out)``
    array; ``x`` may be a view of any buffer, nothing is kept from it.
    """

    def __init__(
        self,
        model_content: bytes,
        step: dict[str, Any] | None = None,
        *,
        backend: str = "litert",
        num_threads: int | None = None,
        python: str | None = None,
        engine: tuple[Path, str] | None = None,
    ) -> None:
        try:
            self.backend = canonical(backend)
        except ValueError as e:
            raise InterpreterError(str(e)) from None
        self.python = worker_python(python) if self.backend in LITERT_BACKENDS else None
        self._be: Backend = _open_backend(
            model_content, self.backend, num_threads=num_threads, python=self.python,
            engine=engine,
        )  # fmt: skip
        self.backend_label = self._be.label
        try:
            ins, outs, sig = self._be.details()
            expected_in, expected_out = _expected(step)
            if step is None:
                n_layers = len(ins) - 1
                expected_in = dict.fromkeys(contract.input_names(n_layers), {})
                expected_out = dict.fromkeys(contract.output_names(n_layers), {})
            self.state_in, self.state_out = _state_names(step, expected_in)
            if contract.X not in expected_in or contract.Y not in expected_out:
                raise InterpreterError("manifest quantization.step: inputs need x, outputs need y")
            want_in = {k: v for k, v in expected_in.items() if v}
            want_out = {k: v for k, v in expected_out.items() if v}
            names_in = [contract.X, *self.state_in]
            names_out = [*self.state_out, contract.Y]
            self.inputs = _resolve(ins, names_in, sig["inputs"], want_in, "inputs")
            self.outputs = _resolve(outs, names_out, sig["outputs"], want_out, "outputs")
            self._check_state_pairs()
            self.step: Step
            self.step, self.fast_path = self._be.stepper(
                self.inputs[contract.X].index,
                [self.inputs[n].index for n in self.state_in],
                [self.outputs[n].index for n in self.state_out],
                self.outputs[contract.Y].index,
            )
        except BaseException:
            self.close()
            raise

    def _check_state_pairs(self) -> None:
        for a, b in zip(self.state_in, self.state_out, strict=True):
            qi, qo = self.inputs[a], self.outputs[b]
            if (qi.shape, qi.scale, qi.zero_point) != (qo.shape, qo.scale, qo.zero_point):
                raise InterpreterError(
                    f"{STEP_FILE}: {a} and {b} differ in shape or quantization; the runtime "
                    "carries the state with a plain copy (state mode 'unit')"
                )

    def close(self) -> None:
        """Release the backend; stops a worker process (idempotent)."""
        be = getattr(self, "_be", None)
        if be is not None:
            be.close()

    def __enter__(self) -> StepInterpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        backend: str = "litert",
        num_threads: int | None = None,
        python: str | None = None,
    ) -> StepInterpreter:
        """The bundle's ``step_int8.tflite`` (sha256 verified) checked against its manifest;
        for ``backend="engine"`` the bundle's export (``firmware/``) built for this host."""
        q = bundle.manifest.get("quantization") or {}
        if "step" not in q or not bundle.has(STEP_FILE):
            raise InterpreterError(
                f"{bundle.root}: no {STEP_FILE} in the bundle: run `python -m quantize int8`"
            )
        engine = None
        if canonical_or_none(backend) == "engine":
            from edge_runtime.backends.engine import EngineError, export_of

            try:
                engine = export_of(bundle.root)
            except EngineError as e:
                raise InterpreterError(str(e)) from None
        return cls(
            bundle.read_bytes(STEP_FILE),
            q["step"],
            backend=backend,
            num_threads=num_threads,
            python=python,
            engine=engine,
        )

    @property
    def x(self) -> TensorSpec:
        return self.inputs[contract.X]

    @property
    def y(self) -> TensorSpec:
        return self.outputs[contract.Y]

    @property
    def raw(self) -> Any:
        """The backend's own object in this process (LiteRT or TFLM interpreter, the C
        engine), or None for a worker."""
        return getattr(self._be, "raw", None)

    @property
    def worker(self) -> WorkerClient | None:
        """The worker process's client when the interpreter runs in one."""
        return getattr(self._be, "client", None)

    def zero_states(self) -> list[np.ndarray]:
        """The int8 encoding of h = 0 for every state input, ``(1, U)`` each."""
        return [
            np.full(self.inputs[n].shape, self.inputs[n].zero_point, np.int8) for n in self.state_in
        ]

    def run(
        self, x: np.ndarray, states: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """One step. ``x`` int8 ``(1, k*C)``, ``states`` int8 ``(1, U)`` each, contiguous.

        Returns the new states (pass them straight back in) and ``y`` int8 ``(1, n_out)``.
        """
        new = list(states)
        y = self.step(x, new)
        return new, y

    def chain(self, xs: np.ndarray) -> dict[str, np.ndarray]:
        """Every step of series ``xs`` ``(N, S, k·C)`` int8, each from a zero state.

        Returns the int8 outputs of every step by name, ``{"h1_out": (N, S, U), …,
        "y": (N, S, n_out)}``.
        """
        xs = np.ascontiguousarray(xs, np.int8)
        n, s, _ = xs.shape
        names = [*self.state_out, contract.Y]
        out = {nm: np.empty((n, s, self.outputs[nm].width), np.int8) for nm in names}
        step = self.step
        for w in range(n):
            states = self.zero_states()
            for j in range(s):
                y = step(xs[w, j : j + 1], states)
                for nm, v in zip(self.state_out, states, strict=True):
                    out[nm][w, j] = v.reshape(-1)
                out[contract.Y][w, j] = y.reshape(-1)
        return out


def canonical_or_none(name: str) -> str | None:
    """:func:`edge_runtime.backends.canonical`, or None for an unknown name."""
    try:
        return canonical(name)
    except ValueError:
        return None


def _expected(
    step: dict[str, Any] | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    if step is None:
        return {}, {}
    try:
        return dict(step["inputs"]), dict(step["outputs"])
    except (KeyError, TypeError):
        raise InterpreterError(
            "manifest quantization.step has no inputs/outputs: run `python -m quantize int8`"
        ) from None


def _state_names(
    step: dict[str, Any] | None, expected_in: dict[str, Any]
) -> tuple[list[str], list[str]]:
    pairs = (step or {}).get("state", {}).get("names")
    if pairs:
        return [str(a) for a, _ in pairs], [str(b) for _, b in pairs]
    ins = sorted(n for n in expected_in if n != contract.X)
    return ins, [n[: -len("_in")] + "_out" for n in ins]
