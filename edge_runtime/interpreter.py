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
- ``"auto"``: ``"litert"``, or ``tflite_runtime`` with the same built-in
  resolver where ai-edge-litert is not installed.

``tflite_runtime.interpreter`` is used in place of ai-edge-litert whenever the
latter is absent. Tensors are found by name: the model's signature when the
interpreter exposes it, else the tensor names recorded by the quantize stage
(``manifest["quantization"]["step"]``), else the logical name at the end of a
tensor name (``serving_default_x:0`` -> ``x``). Every tensor found is checked
against the manifest (shape, int8, scale, zero point) before the first step.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.bundle import Bundle

__all__ = [
    "BACKENDS",
    "InterpreterError",
    "StepInterpreter",
    "TensorSpec",
    "interpreter_module",
    "logical_name",
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


def interpreter_module() -> tuple[Any, str]:
    """The interpreter module in use and its name: ai-edge-litert, else tflite-runtime."""
    try:
        return importlib.import_module("ai_edge_litert.interpreter"), "ai_edge_litert"
    except ImportError:
        pass
    try:
        return importlib.import_module("tflite_runtime.interpreter"), "tflite_runtime"
    except ImportError:
        raise InterpreterError(
            "no TFLite interpreter: install ai-edge-litert (pip install ai-edge-litert) "
            "or tflite-runtime"
        ) from None


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


def _make(model_content: bytes, backend: str, num_threads: int | None) -> tuple[Any, str]:
    if backend not in BACKENDS:
        raise InterpreterError(f"backend: expected one of {BACKENDS}, found {backend!r}")
    mod, lib = interpreter_module()
    resolver = getattr(mod, "OpResolverType", None)
    kw: dict[str, Any] = {"model_content": model_content}
    if num_threads is not None:
        kw["num_threads"] = int(num_threads)
    if backend == "xnnpack":
        if lib != "ai_edge_litert":
            raise InterpreterError("backend 'xnnpack' needs ai-edge-litert")
        if resolver is not None:
            kw["experimental_op_resolver_type"] = resolver.AUTO
        label = "litert_xnnpack"
    else:
        if resolver is not None:
            kw["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        label = "litert" if lib == "ai_edge_litert" else "tflite_runtime"
    try:
        it = mod.Interpreter(**kw)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise InterpreterError(f"{STEP_FILE}: the interpreter refused the model: {e}") from None
    return it, label


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
    with it.
    """

    def __init__(
        self,
        model_content: bytes,
        step: dict[str, Any],
        *,
        backend: str = "litert",
        num_threads: int | None = None,
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
        self._it, self.backend_label = _make(model_content, backend, num_threads)
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
        self._x_idx = self.inputs["x"].index
        self._h_in_idx = [self.inputs[n].index for n in self.state_in]
        self._h_out_idx = [self.outputs[n].index for n in self.state_out]
        self._y_idx = self.outputs["y"].index
        self._set = self._it.set_tensor
        self._get = self._it.get_tensor
        self._invoke = self._it.invoke

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, *, backend: str = "litert", num_threads: int | None = None
    ) -> StepInterpreter:
        """The bundle's ``step_int8.tflite`` (sha256 verified) checked against its manifest."""
        q = bundle.manifest.get("quantization") or {}
        if "step" not in q or not bundle.has(STEP_FILE):
            raise InterpreterError(
                f"{bundle.root}: no {STEP_FILE} in the bundle: run `python -m quantize int8`"
            )
        return cls(
            bundle.read_bytes(STEP_FILE), q["step"], backend=backend, num_threads=num_threads
        )

    @property
    def x(self) -> TensorSpec:
        return self.inputs["x"]

    @property
    def y(self) -> TensorSpec:
        return self.outputs["y"]

    @property
    def raw(self) -> Any:
        """The underlying interpreter object."""
        return self._it

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
        s = self._set
        s(self._x_idx, x)
        for idx, h in zip(self._h_in_idx, states, strict=True):
            s(idx, h)
        self._invoke()
        g = self._get
        return [g(i) for i in self._h_out_idx], g(self._y_idx)
