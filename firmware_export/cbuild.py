"""The hand-written engine kernels as a host library, called from Python with numpy arrays.

Building is :mod:`edge_runtime.cbuild` (cached by the sources' sha256, sanitizers in a
child process); this module names the kernel sources and binds their C functions
(``engine/tinygru_kernels.h``) for the kernel tests.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from edge_runtime.cbuild import ROOT, build_shared, load, sanitizer_env

__all__ = ["ROOT", "EngineKernels", "build_shared", "engine_kernels", "engine_sources",
           "load", "sanitizer_env"]  # fmt: skip

ENGINE_DIR = Path(__file__).resolve().parent / "engine"


def engine_sources() -> list[Path]:
    """The hand-written kernel sources shipped with every export."""
    return sorted(ENGINE_DIR.glob("*.c"))


# ----------------------------------------------------------------------------------
# ctypes bindings of the engine kernels (engine/tinygru_kernels.h), numpy in and out


class _Struct(ctypes.Structure):
    @classmethod
    def of(cls, values: dict) -> _Struct:
        return cls(**{name: int(values[name]) for name, _ in cls._fields_})


class FcParams(_Struct):
    _fields_ = [
        (n, ctypes.c_int32)
        for n in ("batches", "rows", "cols", "input_offset", "output_offset", "act_min", "act_max")
    ]


class AddSubParams(_Struct):
    _fields_ = [
        (n, ctypes.c_int32)
        for n in (
            "input1_offset", "input1_multiplier", "input1_shift",
            "input2_offset", "input2_multiplier", "input2_shift", "left_shift",
            "output_offset", "output_multiplier", "output_shift", "act_min", "act_max",
        )
    ]  # fmt: skip


class MulParams(_Struct):
    _fields_ = [
        (n, ctypes.c_int32)
        for n in (
            "input1_offset", "input2_offset", "output_offset",
            "output_multiplier", "output_shift", "act_min", "act_max",
        )
    ]  # fmt: skip


def _ptr(a: np.ndarray | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if a is None else a.ctypes.data)


def _c(a, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


class EngineKernels:
    """The engine kernels of one built library, called with numpy arrays.

    Inputs are copied to exact-size contiguous arrays, so a sanitized build sees any
    read or write past the end of a buffer.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        vp, i32 = ctypes.c_void_p, ctypes.c_int32
        lib.tg_fully_connected_s8.argtypes = [vp] * 7
        for name in ("tg_add_s8", "tg_sub_s8", "tg_mul_s8"):
            getattr(lib, name).argtypes = [vp, vp, i32, vp, i32, vp, i32]
        lib.tg_lut_s8.argtypes = [vp, vp, vp, i32]
        lib.tg_softmax_s8.argtypes = [vp, vp, vp, i32, i32]
        for f in (lib.tg_fully_connected_s8, lib.tg_add_s8, lib.tg_sub_s8, lib.tg_mul_s8,
                  lib.tg_lut_s8, lib.tg_softmax_s8):  # fmt: skip
            f.restype = None

    def fully_connected(self, x, w, bias, input_offset, mult, shift, output_offset,
                        act_min=-128, act_max=127) -> np.ndarray:  # fmt: skip
        w = _c(w, np.int8)
        rows, cols = w.shape
        x = _c(x, np.int8).reshape(-1, cols)
        out = np.empty((x.shape[0], rows), np.int8)
        p = FcParams(x.shape[0], rows, cols, int(input_offset), int(output_offset),
                     int(act_min), int(act_max))  # fmt: skip
        b = None if bias is None else _c(bias, np.int32)
        m = _c(np.broadcast_to(mult, (rows,)), np.int32)
        s = _c(np.broadcast_to(shift, (rows,)), np.int32)
        self.lib.tg_fully_connected_s8(
            ctypes.byref(p), _ptr(x), _ptr(w), _ptr(b), _ptr(m), _ptr(s), _ptr(out)
        )
        return out

    def _binary(self, fn, params: ctypes.Structure, x1, x2) -> np.ndarray:
        a, b = _c(x1, np.int8).ravel(), _c(x2, np.int8).ravel()
        size = max(a.size, b.size)
        if {a.size, b.size} - {1, size}:
            raise ValueError("inputs must have equal sizes or one must be a scalar")
        out = np.empty(size, np.int8)
        sa, sb = int(a.size > 1 or size == 1), int(b.size > 1 or size == 1)
        fn(ctypes.byref(params), _ptr(a), sa, _ptr(b), sb, _ptr(out), size)
        return out

    def add(self, x1, x2, p: dict) -> np.ndarray:
        return self._binary(self.lib.tg_add_s8, AddSubParams.of(p), x1, x2)

    def sub(self, x1, x2, p: dict) -> np.ndarray:
        return self._binary(self.lib.tg_sub_s8, AddSubParams.of(p), x1, x2)

    def mul(self, x1, x2, p: dict) -> np.ndarray:
        return self._binary(self.lib.tg_mul_s8, MulParams.of(p), x1, x2)

    def lut(self, table, x) -> np.ndarray:
        t, xx = _c(table, np.int8), _c(x, np.int8).ravel()
        if t.size != 256:
            raise ValueError("table must have 256 entries")
        out = np.empty_like(xx)
        self.lib.tg_lut_s8(_ptr(t), _ptr(xx), _ptr(out), xx.size)
        return out

    def softmax(self, exp_table, x) -> np.ndarray:
        t, xx = _c(exp_table, np.int32), _c(x, np.int8)
        if t.size != 256:
            raise ValueError("table must have 256 entries")
        depth = xx.shape[-1]
        out = np.empty_like(xx)
        self.lib.tg_softmax_s8(_ptr(t), _ptr(xx), _ptr(out), xx.size // depth, depth)
        return out


def engine_kernels(*, sanitize: bool = False) -> EngineKernels:
    """Build (or reuse) the engine library and bind its kernels."""
    return EngineKernels(load(build_shared(engine_sources(), sanitize=sanitize)))
