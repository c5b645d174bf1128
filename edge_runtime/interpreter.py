"""The int8 GRU step in a TFLite interpreter, addressed by tensor name.

::

    from edge_runtime.bundle import Bundle
    from edge_runtime.interpreter import StepInterpreter

    step = StepInterpreter.from_bundle(Bundle.open("build/har"))    # sha256 verified
    states = step.zero_states()
    states, y = step.run(x, states)       # x: int8 (1, k*C); states: [int8 (1, U), ...]

Backends:

- ``"litert"``: ai-edge-litert with its built-in kernels
  (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``), the reference the host
  parity check uses;
- ``"xnnpack"``: ai-edge-litert as it runs by default (XNNPACK delegate);
- ``"auto"``: the built-in kernels of whichever interpreter runs the model
  (ai-edge-litert here, or ``tflite_runtime`` in a worker, see below).

Where the interpreter runs: in this process with ai-edge-litert when it is
importable and no other Python is named; otherwise in a worker process
(:mod:`edge_runtime.worker`, one per interpreter) started with the Python named
by ``python=`` (``--interpreter-python``) or the environment variable
``TINYGRU_INTERPRETER_PYTHON``, else with this Python. That is how
``tflite_runtime``, whose wheels need numpy<2, serves a runtime that has numpy 2.
The worker speaks a small binary protocol over pipes;
:meth:`StepInterpreter.close` (or exit) stops it, and a failing worker raises
:class:`InterpreterError` naming the child and quoting its stderr.

Tensors are found by name: the model's signature when the interpreter exposes
it, else the tensor names recorded by the quantize stage
(``manifest["quantization"]["step"]``), else the logical name at the end of a
tensor name (``serving_default_x:0`` -> ``x``). Every tensor found is checked
against the manifest (shape, int8, scale, zero point) before the first step.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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

BACKENDS = ("litert", "xnnpack", "auto")
STEP_FILE = "step_int8.tflite"
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


class _Remote:
    """A worker seen through the few interpreter calls the loader needs."""

    def __init__(self, client: WorkerClient) -> None:
        self.client = client
        self.info = client.info

    def get_input_details(self) -> list[dict[str, Any]]:
        return list(self.info["inputs"])

    def get_output_details(self) -> list[dict[str, Any]]:
        return list(self.info["outputs"])

    def _get_full_signature_list(self) -> dict[str, dict[str, dict[str, int]]]:
        sig = self.info.get("signature") or {}
        return {"worker": sig} if sig.get("inputs") or sig.get("outputs") else {}


def _make_remote(
    python: str, model_content: bytes, backend: str, num_threads: int | None
) -> tuple[_Remote, str]:
    if backend not in BACKENDS:
        raise InterpreterError(f"backend: expected one of {BACKENDS}, found {backend!r}")
    client = WorkerClient(
        python, model_content, backend=backend, num_threads=num_threads, error=InterpreterError
    )
    return _Remote(client), _label(backend, client.info.get("library")) + "_worker"


def _label(backend: str, lib: str | None) -> str:
    if backend == "xnnpack":
        return "litert_xnnpack"
    return "litert" if lib == "ai_edge_litert" else "tflite_runtime"


def _make(model_content: bytes, backend: str, num_threads: int | None) -> tuple[Any, str]:
    """In this process: only reached when ai_edge_litert imports (see :func:`worker_python`)."""
    if backend not in BACKENDS:
        raise InterpreterError(f"backend: expected one of {BACKENDS}, found {backend!r}")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw: dict[str, Any] = {"model_content": model_content}
    if num_threads is not None:
        kw["num_threads"] = int(num_threads)
    kw["experimental_op_resolver_type"] = (
        OpResolverType.AUTO
        if backend == "xnnpack"
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        it = Interpreter(**kw)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise InterpreterError(f"{STEP_FILE}: the interpreter refused the model: {e}") from None
    return it, _label(backend, "ai_edge_litert")


def _signature_indices(it: Any) -> dict[str, dict[str, int]]:
    """``{"inputs": {name: index}, "outputs": {...}}`` of the first signature, if exposed."""
    with contextlib.suppress(Exception):
        sigs = it._get_full_signature_list()
        if sigs:
            sig = next(iter(sigs.values()))
            return {
                "inputs": {str(k): int(v) for k, v in sig.get("inputs", {}).items()},
                "outputs": {str(k): int(v) for k, v in sig.get("outputs", {}).items()},
            }
    return {"inputs": {}, "outputs": {}}


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


class StepInterpreter:
    """One int8 step model, run by logical tensor name with a fixed, minimal call sequence.

    ``step`` is the manifest's ``quantization.step`` section (names, shapes,
    scales and zero points the quantize stage recorded); the model must agree
    with it. ``python``: run the model in a worker under that Python (see the
    module doc).

    The streaming call is ``y = interp.step(x, states)``: ``states`` (a list)
    is replaced in place by the new states, ``y`` is a fresh int8 ``(1, n_out)``
    array; ``x`` may be a view of any buffer, nothing is kept from it.
    """

    def __init__(
        self,
        model_content: bytes,
        step: dict[str, Any],
        *,
        backend: str = "litert",
        num_threads: int | None = None,
        python: str | None = None,
    ) -> None:
        try:
            expected_in: dict[str, dict[str, Any]] = dict(step["inputs"])
            expected_out: dict[str, dict[str, Any]] = dict(step["outputs"])
        except (KeyError, TypeError):
            raise InterpreterError(
                "manifest quantization.step has no inputs/outputs: run `python -m quantize int8`"
            ) from None
        state_pairs = step.get("state", {}).get("names")
        if state_pairs:
            self.state_in = [str(a) for a, _ in state_pairs]
            self.state_out = [str(b) for _, b in state_pairs]
        else:
            self.state_in = sorted(n for n in expected_in if n != "x")
            self.state_out = [n[: -len("_in")] + "_out" for n in self.state_in]
        if "x" not in expected_in or "y" not in expected_out:
            raise InterpreterError("manifest quantization.step: inputs need x, outputs need y")
        self.backend = backend
        self.python = worker_python(python)
        self._it: Any
        if self.python is None:
            self._it, self.backend_label = _make(model_content, backend, num_threads)
        else:
            self._it, self.backend_label = _make_remote(
                self.python, model_content, backend, num_threads
            )
        try:
            sig = _signature_indices(self._it)
            self.inputs = _resolve(
                self._it.get_input_details(),
                ["x", *self.state_in],
                sig["inputs"],
                expected_in,
                "inputs",
            )
            self.outputs = _resolve(
                self._it.get_output_details(),
                [*self.state_out, "y"],
                sig["outputs"],
                expected_out,
                "outputs",
            )
            for a, b in zip(self.state_in, self.state_out, strict=True):
                qi, qo = self.inputs[a], self.outputs[b]
                if (qi.shape, qi.scale, qi.zero_point) != (qo.shape, qo.scale, qo.zero_point):
                    raise InterpreterError(
                        f"{STEP_FILE}: {a} and {b} differ in shape or quantization; the runtime "
                        "carries the state with a plain copy (state mode 'unit')"
                    )
        except BaseException:
            self.close()
            raise
        self._x_idx = self.inputs["x"].index
        self._h_in_idx = [self.inputs[n].index for n in self.state_in]
        self._h_out_idx = [self.outputs[n].index for n in self.state_out]
        self._y_idx = self.outputs["y"].index
        self.step: Callable[[np.ndarray, list[np.ndarray]], np.ndarray]
        # (set_tensor, get_tensor, invoke, x, h_in, h_out, y) of an in-process
        # one-state model, for callers that inline ``step``; else None.
        self.fast_path: tuple[Any, ...] | None = None
        if isinstance(self._it, _Remote):
            self.step = self._remote_step()
        else:
            self.step = self._local_step()

    def _local_step(self) -> Callable[[np.ndarray, list[np.ndarray]], np.ndarray]:
        it = self._it
        set_tensor, get_tensor, invoke = it.set_tensor, it.get_tensor, it.invoke
        x_idx, y_idx = self._x_idx, self._y_idx
        if len(self._h_in_idx) == 1:
            (h_in,), (h_out,) = self._h_in_idx, self._h_out_idx
            self.fast_path = (set_tensor, get_tensor, invoke, x_idx, h_in, h_out, y_idx)

            def step1(x: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
                set_tensor(x_idx, x)
                set_tensor(h_in, states[0])
                invoke()
                states[0] = get_tensor(h_out)
                return get_tensor(y_idx)

            return step1
        pairs = list(enumerate(zip(self._h_in_idx, self._h_out_idx, strict=True)))

        def step(x: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
            set_tensor(x_idx, x)
            for j, (i, _) in pairs:
                set_tensor(i, states[j])
            invoke()
            for j, (_, o) in pairs:
                states[j] = get_tensor(o)
            return get_tensor(y_idx)

        return step

    def _remote_step(self) -> Callable[[np.ndarray, list[np.ndarray]], np.ndarray]:
        client = self._it.client
        ins = [self.inputs["x"], *(self.inputs[n] for n in self.state_in)]
        outs = [*(self.outputs[n] for n in self.state_out), self.outputs["y"]]
        client.bind([(t.index, t.shape) for t in ins], [t.index for t in outs])
        cuts: list[tuple[int, int, tuple[int, ...]]] = []
        off = 0
        for t in outs:
            cuts.append((off, t.width, t.shape))
            off += t.width
        total = off
        n_states = len(self.state_in)
        call = client.step
        name = client.name

        def step(x: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
            data = call(b"".join([x.tobytes(), *(h.tobytes() for h in states)]))
            if len(data) != total:
                raise InterpreterError(f"{name}: {len(data)} output bytes, expected {total}")
            buf = bytearray(data)  # writable arrays, as get_tensor gives
            got = [np.frombuffer(buf, np.int8, n, o).reshape(s) for o, n, s in cuts]
            states[:] = got[:n_states]
            return got[n_states]

        return step

    def close(self) -> None:
        """Stop the worker process, if the interpreter runs in one (idempotent)."""
        if isinstance(self._it, _Remote):
            self._it.client.close()

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
        """The bundle's ``step_int8.tflite`` (sha256 verified) checked against its manifest."""
        q = bundle.manifest.get("quantization") or {}
        if "step" not in q or not bundle.has(STEP_FILE):
            raise InterpreterError(
                f"{bundle.root}: no {STEP_FILE} in the bundle: run `python -m quantize int8`"
            )
        return cls(
            bundle.read_bytes(STEP_FILE),
            q["step"],
            backend=backend,
            num_threads=num_threads,
            python=python,
        )

    @property
    def x(self) -> TensorSpec:
        return self.inputs["x"]

    @property
    def y(self) -> TensorSpec:
        return self.outputs["y"]

    @property
    def raw(self) -> Any:
        """The underlying interpreter object (in this process), else None."""
        return None if isinstance(self._it, _Remote) else self._it

    @property
    def worker(self) -> WorkerClient | None:
        """The worker process's client when the interpreter runs in one."""
        return self._it.client if isinstance(self._it, _Remote) else None

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
