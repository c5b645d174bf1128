"""The tinygru C engine of an export, built for this host and driven with ctypes.

A bundle's export (``<bundle>/firmware/``: ``engine/*.c`` and ``<prefix>_model.c``) is
compiled with the host's C compiler on first use (:mod:`edge_runtime.cbuild`, cached by
the sources' sha256) together with a small shim that gives the library fixed entry
points over ``<prefix>_model``, so one binding serves every prefix. It is the same C the
Cortex-M firmware runs, so its outputs equal the device's bit for bit.

``debug=True`` builds with ``TG_DEBUG``: every op output of a step is recorded and
:meth:`Engine.trace` returns them by role (which pins a mismatch to a gate).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
from pathlib import Path

import numpy as np

from edge_runtime import cbuild
from edge_runtime.contract import FIRMWARE_DIR

__all__ = ["GATE_OPS", "Engine", "EngineError", "build", "export_of", "load"]

# Roles of a GRU layer's op outputs in TG_TRACE order (TG_OP_GX .. TG_OP_OUT_ADD in tinygru.h).
GATE_OPS = ("gx", "gh", "zr_add", "sigmoid", "r_mul", "h_add", "tanh", "h_sub", "z_mul", "out_add")
MAX_LAYERS = 2  # TG_MAX_LAYERS

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
int32_t host_dim(int32_t i)
{{
    const tg_model_params *m = &{prefix}_model;
    switch (i) {{
    case 0: return m->channels;
    case 1: return m->kernel;
    case 2: return m->stride;
    case 3: return m->n_outputs;
    case 4: return m->n_layers;
    default: return (i - 5 < m->n_layers) ? m->gru[i - 5].units : -1;
    }}
}}
"""


class EngineError(RuntimeError):
    """The engine cannot be built or refuses its inputs."""


def build(firmware_dir: Path, prefix: str, *, debug: bool = False, sanitize: bool = False) -> Path:
    """Compile ``firmware_dir/engine/*.c`` + ``<prefix>_model.c`` + the shim into a cached .so."""
    firmware_dir = Path(firmware_dir)
    shim_text = _SHIM.format(prefix=prefix, P=prefix.upper())
    key = hashlib.sha256(shim_text.encode() + str(firmware_dir.resolve()).encode()).hexdigest()[:16]
    shim_dir = cbuild.cache_root() / "cbuild" / "shims" / key
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / f"{prefix}_host.c"
    if not shim.is_file() or shim.read_text() != shim_text:
        shim.write_text(shim_text)
    sources = [*_listed_sources(firmware_dir, prefix), shim]
    # cbuild adds -I and hashes the headers of every source's folder
    flags = ["-DTG_DEBUG"] if debug else []
    return cbuild.build_shared(sources, sanitize=sanitize, extra_flags=flags)


def _listed_sources(firmware_dir: Path, prefix: str) -> list[Path]:
    """The engine and model C files the export lists in ``files.json`` (a file an older
    export left in the folder is not one of them)."""
    index = firmware_dir / "files.json"
    try:
        listed = [str(f["path"]) for f in json.loads(index.read_text(encoding="utf-8"))["files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EngineError(
            f"{index}: no readable export index ({type(e).__name__}): run `python -m firmware_export`"
        ) from None
    model_c = f"{prefix}_model.c"
    if model_c not in listed or "engine/tinygru.h" not in listed:
        raise EngineError(
            f"{index}: no exported engine for prefix {prefix!r} (expected {model_c} and "
            "engine/tinygru.h): run `python -m firmware_export`"
        )
    c_files = sorted(p for p in listed if p.startswith("engine/") and p.endswith(".c"))
    return [firmware_dir / p for p in [*c_files, model_c]]


def export_of(bundle_root: Path) -> tuple[Path, str]:
    """The export folder of a bundle and its prefix, from ``firmware/files.json``."""
    fw = Path(bundle_root) / FIRMWARE_DIR
    index = fw / "files.json"
    try:
        prefix = str(json.loads(index.read_text(encoding="utf-8"))["prefix"])
    except (OSError, ValueError, KeyError) as e:
        raise EngineError(
            f"{index}: no readable export index ({type(e).__name__}): "
            f"run `python -m firmware_export --bundle {bundle_root}`"
        ) from None
    return fw, prefix


def load(firmware_dir: Path | str, prefix: str, *, debug: bool = False) -> Engine:
    """Build the engine exported in ``firmware_dir`` (cached) and open it."""
    return Engine(build(Path(firmware_dir), prefix, debug=debug), debug=debug)


class Engine:
    """ctypes handle of a built engine library: one stream, static buffers.

    Sizes come from the model data itself: ``channels``, ``kernel``, ``stride``,
    ``n_outputs``, ``units`` (per layer) and ``step_inputs`` (k·C).
    """

    def __init__(self, lib_path: Path, *, debug: bool = False) -> None:
        self.lib = cbuild.load(lib_path)
        vp, i32 = ctypes.c_void_p, ctypes.c_int32
        sig = {
            "host_init": ([], i32), "host_push": ([vp, vp], i32), "host_window": ([vp, i32, vp], i32),
            "host_reset": ([], None), "host_h": ([], vp), "host_ring": ([], vp),
            "host_step": ([vp, vp, vp], None), "host_quantize": ([vp, vp], None),
            "host_state_bytes": ([], i32), "host_scratch_bytes": ([], i32), "host_dim": ([i32], i32),
        }  # fmt: skip
        if debug:
            sig.update({"tg_debug_reset": ([], None), "tg_debug_count": ([], i32),
                        "tg_debug_entry": ([i32, vp, vp], i32), "tg_debug_data": ([], vp)})  # fmt: skip
        for name, (args, res) in sig.items():
            f = getattr(self.lib, name)
            f.argtypes, f.restype = args, res
        status = self.lib.host_init()
        if status != 0:
            raise EngineError(f"tg_stream_init failed with status {status}")
        dim = self.lib.host_dim
        self.channels, self.kernel, self.stride, self.n_outputs = (dim(i) for i in range(4))
        self.units = [int(dim(5 + i)) for i in range(dim(4))]
        self.step_inputs = self.kernel * self.channels

    @staticmethod
    def _p(a: np.ndarray) -> ctypes.c_void_p:
        return ctypes.c_void_p(a.ctypes.data)

    def state(self) -> list[np.ndarray]:
        """The stream's GRU states, one array per layer (copies)."""
        total = sum(self.units)
        buf = (ctypes.c_int8 * total).from_address(self.lib.host_h())
        flat = np.frombuffer(buf, np.int8).copy()
        return np.split(flat, np.cumsum(self.units)[:-1])

    def reset(self) -> None:
        self.lib.host_reset()

    def push(self, sample: np.ndarray) -> np.ndarray | None:
        """One sample of int16 counts; the head output when a step ran, else None."""
        s = np.ascontiguousarray(sample, np.int16).reshape(self.channels)
        out = np.zeros(self.n_outputs, np.int8)
        status = self.lib.host_push(self._p(s), self._p(out))
        if status < 0:
            raise EngineError(f"tg_push_sample failed with status {status}")
        return out if status == 1 else None

    def window(self, counts: np.ndarray) -> np.ndarray:
        """A window of counts ``(T, C)`` from a zero state: the last step's head output."""
        c = np.ascontiguousarray(counts, np.int16).reshape(-1, self.channels)
        out = np.zeros(self.n_outputs, np.int8)
        status = self.lib.host_window(self._p(c), len(c), self._p(out))
        if status < 0:
            raise EngineError(f"tg_window failed with status {status}")
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
        """One model step on a quantized input ``(k·C,)``; returns ``y`` and the new states."""
        xs = np.ascontiguousarray(x, np.int8).reshape(self.step_inputs)
        hs = np.ascontiguousarray(np.concatenate([np.asarray(v, np.int8).reshape(-1) for v in h]))
        out = np.zeros(self.n_outputs, np.int8)
        self.lib.host_step(self._p(xs), self._p(hs), self._p(out))
        return out, np.split(hs, np.cumsum(self.units)[:-1])

    def quantize(self, counts: np.ndarray) -> np.ndarray:
        """One sample's counts → int8 inputs, by the engine's own integer formula."""
        c = np.ascontiguousarray(counts, np.int16).reshape(self.channels)
        q = np.zeros(self.channels, np.int8)
        self.lib.host_quantize(self._p(c), self._p(q))
        return q

    def buffer_sizes(self) -> tuple[int, int]:
        """``(state bytes, scratch bytes)`` the stream needs."""
        return int(self.lib.host_state_bytes()), int(self.lib.host_scratch_bytes())

    def trace_reset(self) -> None:
        self.lib.tg_debug_reset()

    def trace(self) -> dict[str, np.ndarray]:
        """Op outputs recorded since trace_reset() (debug builds), named by role:
        ``front_end``, ``layer1.gx`` … ``layer1.out_add``, ``head``, ``softmax``."""
        data_ptr = self.lib.tg_debug_data()
        out: dict[str, np.ndarray] = {}
        layer = 0
        off, size = ctypes.c_int32(), ctypes.c_int32()
        fixed = {0: "front_end", 1: "head", 2: "softmax"}
        for i in range(self.lib.tg_debug_count()):
            op = self.lib.tg_debug_entry(i, ctypes.byref(off), ctypes.byref(size))
            data = np.frombuffer(
                (ctypes.c_int8 * size.value).from_address(data_ptr + off.value), np.int8
            ).copy()
            if op in fixed:
                out[fixed[op]] = data
                continue
            role = GATE_OPS[op - 3]
            if role == "gx":
                layer += 1
            out[f"layer{layer}.{role}"] = data
        return out
