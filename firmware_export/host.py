"""The engine and one model's generated data as a host shared library, driven with ctypes.

A small C shim (written next to the generated files in the build cache) gives the
library fixed entry points over ``<prefix>_model``, so the same binding serves
every prefix. ``debug=True`` builds with ``TG_DEBUG``: every op output of a step
is recorded, and ``trace()`` returns them by role (which is how a mismatch is
pinned to a gate).
"""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import numpy as np

from firmware_export import cbuild
from firmware_export.lower import GATE_OPS, Lowered

_SHIM = """#include "{prefix}_model.h"

static tg_stream host_stream;
static int8_t host_state[{P}_STATE_BYTES];
static int8_t host_scratch[{P}_SCRATCH_BYTES];

int32_t host_init(void)
{{
    return (int32_t)tg_stream_init(&host_stream, &{prefix}_model, host_state, {P}_STATE_BYTES,
                                   host_scratch, {P}_SCRATCH_BYTES);
}}
int32_t host_push(const int16_t *counts, int8_t *out)
{{
    return (int32_t)tg_push_sample(&host_stream, counts, out);
}}
int32_t host_window(const int16_t *counts, int32_t n, int8_t *out)
{{
    return (int32_t)tg_window(&host_stream, counts, n, out);
}}
void host_reset(void) {{ tg_reset(&host_stream); }}
int8_t *host_h(void) {{ return host_stream.h; }}
int8_t *host_ring(void) {{ return host_stream.ring; }}
void host_step(const int8_t *x, int8_t *h, int8_t *out)
{{
    tg_model_step(&{prefix}_model, x, h, out, host_scratch);
}}
void host_quantize(const int16_t *counts, int8_t *q) {{ tg_quantize_sample(&{prefix}_model, counts, q); }}
int32_t host_state_bytes(void) {{ return tg_state_buffer_size(&{prefix}_model); }}
int32_t host_scratch_bytes(void) {{ return tg_scratch_buffer_size(&{prefix}_model); }}
"""


def build(firmware_dir: Path, prefix: str, *, debug: bool = False, sanitize: bool = False) -> Path:
    """Compile ``firmware_dir/engine/*.c`` + ``<prefix>_model.c`` + a shim into a cached .so."""
    firmware_dir = Path(firmware_dir)
    shim_text = _SHIM.format(prefix=prefix, P=prefix.upper())
    key = hashlib.sha256(shim_text.encode() + str(firmware_dir.resolve()).encode()).hexdigest()[:16]
    shim_dir = cbuild.DEFAULT_CACHE / "shims" / key
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / f"{prefix}_host.c"
    if not shim.is_file() or shim.read_text() != shim_text:
        shim.write_text(shim_text)
    engine = firmware_dir / "engine"
    sources = [*sorted(engine.glob("*.c")), firmware_dir / f"{prefix}_model.c", shim]
    # cbuild adds -I and hashes the headers of every source's folder
    flags = ["-DTG_DEBUG"] if debug else []
    return cbuild.build_shared(sources, sanitize=sanitize, extra_flags=flags)


def load(fw: Path, prefix: str, model: Lowered, debug: bool = False) -> Engine:
    """Build the engine exported in ``fw`` and open it for ``model`` (a lowered model)."""
    lib = build(fw, prefix, debug=debug)
    return Engine(lib, model.channels, model.n_outputs, model.units, model.step_inputs, debug=debug)


class Engine:
    """ctypes handle of a built engine library (one stream, static buffers)."""

    def __init__(self, lib_path: Path, channels: int, n_outputs: int, units: list[int],
                 step_inputs: int, debug: bool = False) -> None:  # fmt: skip
        self.lib = cbuild.load(lib_path)
        self.channels, self.n_outputs, self.units = channels, n_outputs, list(units)
        self.step_inputs = step_inputs
        vp, i32 = ctypes.c_void_p, ctypes.c_int32
        sig = {
            "host_init": ([], i32), "host_push": ([vp, vp], i32), "host_window": ([vp, i32, vp], i32),
            "host_reset": ([], None), "host_h": ([], vp), "host_ring": ([], vp),
            "host_step": ([vp, vp, vp], None), "host_quantize": ([vp, vp], None),
            "host_state_bytes": ([], i32), "host_scratch_bytes": ([], i32),
        }  # fmt: skip
        if debug:
            sig.update({"tg_debug_reset": ([], None), "tg_debug_count": ([], i32),
                        "tg_debug_entry": ([i32, vp, vp], i32), "tg_debug_data": ([], vp)})  # fmt: skip
        for name, (args, res) in sig.items():
            f = getattr(self.lib, name)
            f.argtypes, f.restype = args, res
        status = self.lib.host_init()
        if status != 0:
            raise RuntimeError(f"tg_stream_init failed with status {status}")

    @staticmethod
    def _p(a: np.ndarray) -> ctypes.c_void_p:
        return ctypes.c_void_p(a.ctypes.data)

    def state(self) -> list[np.ndarray]:
        total = sum(self.units)
        buf = (ctypes.c_int8 * total).from_address(self.lib.host_h())
        flat = np.frombuffer(buf, np.int8).copy()
        return np.split(flat, np.cumsum(self.units)[:-1])

    def reset(self) -> None:
        self.lib.host_reset()

    def push(self, sample: np.ndarray) -> np.ndarray | None:
        s = np.ascontiguousarray(sample, np.int16).reshape(self.channels)
        out = np.zeros(self.n_outputs, np.int8)
        status = self.lib.host_push(self._p(s), self._p(out))
        if status < 0:
            raise RuntimeError(f"tg_push_sample failed with status {status}")
        return out if status == 1 else None

    def window(self, counts: np.ndarray) -> np.ndarray:
        c = np.ascontiguousarray(counts, np.int16).reshape(-1, self.channels)
        out = np.zeros(self.n_outputs, np.int8)
        status = self.lib.host_window(self._p(c), len(c), self._p(out))
        if status < 0:
            raise RuntimeError(f"tg_window failed with status {status}")
        return out

    def windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`window` on each window: head outputs ``(n, n_outputs)`` and the final
        states, concatenated, ``(n, sum(units))`` (what the emulated runner records)."""
        y, h = [], []
        for w in windows:
            y.append(self.window(w))
            h.append(np.concatenate(self.state()))
        return np.stack(y), np.stack(h)

    def step(self, x: np.ndarray, h: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        xs = np.ascontiguousarray(x, np.int8).reshape(self.step_inputs)
        hs = np.ascontiguousarray(np.concatenate([np.asarray(v, np.int8).reshape(-1) for v in h]))
        out = np.zeros(self.n_outputs, np.int8)
        self.lib.host_step(self._p(xs), self._p(hs), self._p(out))
        return out, np.split(hs, np.cumsum(self.units)[:-1])

    def quantize(self, counts: np.ndarray) -> np.ndarray:
        c = np.ascontiguousarray(counts, np.int16).reshape(self.channels)
        q = np.zeros(self.channels, np.int8)
        self.lib.host_quantize(self._p(c), self._p(q))
        return q

    def buffer_sizes(self) -> tuple[int, int]:
        return int(self.lib.host_state_bytes()), int(self.lib.host_scratch_bytes())

    def trace_reset(self) -> None:
        self.lib.tg_debug_reset()

    def trace(self) -> dict[str, np.ndarray]:
        """Op outputs recorded since trace_reset(), named as lower.run_step names them."""
        data_ptr = self.lib.tg_debug_data()
        out: dict[str, np.ndarray] = {}
        layer, k = 0, 0
        off, size = ctypes.c_int32(), ctypes.c_int32()
        for i in range(self.lib.tg_debug_count()):
            op = self.lib.tg_debug_entry(i, ctypes.byref(off), ctypes.byref(size))
            data = np.frombuffer(
                (ctypes.c_int8 * size.value).from_address(data_ptr + off.value), np.int8
            ).copy()
            if op == 0:
                out["front_end"] = data
            elif op == 1:
                out["head"] = data
            elif op == 2:
                out["softmax"] = data
            else:
                role = GATE_OPS[op - 3]
                if role == "gx":
                    layer, k = layer + 1, 0
                out[f"layer{layer}.{role}"] = data
                k += 1
        return out
