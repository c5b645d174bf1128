"""Every integer parameter of a matched step graph, computed once at export.

The float scales of the .tflite become multipliers, shifts, folded biases and
256-entry tables exactly as TFLM's Prepare computes them (``tflm_ref``); the C
engine then runs integer-only. ``run_step`` evaluates the lowered model in numpy
op by op (the same order as ``tg_gru_step.c``) and returns every intermediate,
which is how a C/TFLM mismatch is traced to one gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime import tflm_ref as ref
from firmware_export.pattern import Bound, StepGraph


@dataclass
class Fc:
    rows: int
    cols: int
    weights: np.ndarray  # (rows, cols) int8
    bias: np.ndarray  # (rows,) int32, input zero point folded in
    mult: np.ndarray  # (rows,) int32
    shift: np.ndarray  # (rows,) int32
    output_offset: int
    act_min: int
    act_max: int

    def run(self, x: np.ndarray) -> np.ndarray:
        return ref.fully_connected(x, self.weights, self.bias, 0, self.mult, self.shift,
                                   self.output_offset, self.act_min, self.act_max)[0]  # fmt: skip


@dataclass
class Gru:
    units: int
    input_size: int
    gx: Fc
    gh: Fc
    zr_add: dict[str, int]
    sigmoid: np.ndarray  # (256,) int8
    r_mul: dict[str, int]
    h_add: dict[str, int]
    tanh: np.ndarray  # (256,) int8
    h_sub: dict[str, int]
    z_mul: dict[str, int]
    out_add: dict[str, int]
    h_zero_point: int


@dataclass
class Lowered:
    channels: int
    kernel: int
    stride: int
    front_end: Fc | None
    layers: list[Gru]
    head: Fc
    softmax_exp: np.ndarray | None  # (256,) int32
    softmax_scale_beta: tuple[float, float]  # input scale and beta of SOFTMAX
    x_scale: float
    x_zero_point: int
    y_scale: float
    y_zero_point: int
    opcodes: list[str] = field(default_factory=list)

    @property
    def step_inputs(self) -> int:
        return self.kernel * self.channels

    @property
    def n_outputs(self) -> int:
        return self.head.rows

    @property
    def units(self) -> list[int]:
        return [g.units for g in self.layers]


def _sz(g: StepGraph, t: int) -> tuple[float, int]:
    tensor = g.tensor(t)
    return float(tensor.scale[0]), int(tensor.zero_point[0])


def _fc(g: StepGraph, b: Bound) -> Fc:
    x_t, w_t, bias_t = b.inputs
    w_tensor = g.tensor(w_t)
    w = w_tensor.array()
    rows, cols = w.shape
    if any(z != 0 for z in w_tensor.zero_point):
        raise ValueError(f"{b.op}: weights must be symmetric (zero point 0)")
    if len(w_tensor.scale) not in (1, rows) or w_tensor.quantized_dimension != 0:
        raise ValueError(f"{b.op}: expected per-row or per-tensor weight scales")
    bias = None
    if bias_t >= 0:
        bt = g.tensor(bias_t)
        if bt.dtype != "INT32" or bt.shape != (rows,):
            raise ValueError(f"{b.op}: expected an INT32 bias of shape ({rows},)")
        bias = bt.array()
    in_s, in_zp = _sz(g, x_t)
    out_s, out_zp = _sz(g, b.outputs[0])
    if g.tensor(x_t).shape[-1] != cols or g.tensor(b.outputs[0]).shape != (1, rows):
        raise ValueError(f"{b.op}: shapes do not match the weights {w.shape}")
    mult, shift = ref.fc_multipliers(in_s, w_tensor.scale, out_s)
    lo, hi = ref.activation_range(
        int(b.op.options.get("fused_activation_function", 0)), out_s, out_zp
    )
    return Fc(
        rows=rows,
        cols=cols,
        weights=np.ascontiguousarray(w, np.int8),
        bias=ref.fold_input_zero_point(w, bias, in_zp),
        mult=np.broadcast_to(mult, (rows,)).astype(np.int32),
        shift=np.broadcast_to(shift, (rows,)).astype(np.int32),
        output_offset=out_zp,
        act_min=lo,
        act_max=hi,
    )


def _binary(g: StepGraph, b: Bound, kind: str) -> dict[str, int]:
    (s1, z1), (s2, z2) = _sz(g, b.inputs[0]), _sz(g, b.inputs[1])
    so, zo = _sz(g, b.outputs[0])
    shapes = {g.tensor(t).shape for t in (*b.inputs, b.outputs[0])}
    if len(shapes) != 1:
        raise ValueError(f"{b.op}: inputs and output must have one shape, found {sorted(shapes)}")
    fn = {"add": ref.add_params, "sub": ref.sub_params, "mul": ref.mul_params}[kind]
    p = fn(s1, z1, s2, z2, so, zo)
    act = int(b.op.options.get("fused_activation_function", 0))
    p["act_min"], p["act_max"] = ref.activation_range(act, so, zo)
    return {k: int(v) for k, v in p.items()}


def _table(g: StepGraph, b: Bound, fn: Any) -> np.ndarray:
    (si, zi), (so, zo) = _sz(g, b.inputs[0]), _sz(g, b.outputs[0])
    try:
        return fn(si, zi, so, zo)
    except ValueError as e:
        raise ValueError(f"{b.op}: {e}") from None


def _gru(g: StepGraph, roles: dict[str, Bound], h_in: int) -> Gru:
    gx, gh = _fc(g, roles["gx"]), _fc(g, roles["gh"])
    units = g.tensor(h_in).shape[-1]
    return Gru(
        units=units,
        input_size=gx.cols,
        gx=gx,
        gh=gh,
        zr_add=_binary(g, roles["zr_add"], "add"),
        sigmoid=_table(g, roles["sigmoid"], ref.logistic_table),
        r_mul=_binary(g, roles["r_mul"], "mul"),
        h_add=_binary(g, roles["h_add"], "add"),
        tanh=_table(g, roles["tanh"], ref.tanh_table),
        h_sub=_binary(g, roles["h_sub"], "sub"),
        z_mul=_binary(g, roles["z_mul"], "mul"),
        out_add=_binary(g, roles["out_add"], "add"),
        h_zero_point=_sz(g, h_in)[1],
    )


def lower(g: StepGraph, channels: int, kernel: int, stride: int) -> Lowered:
    """Integer parameters of ``g``; ``channels``, ``kernel`` (k) and ``stride`` (s) from the manifest."""
    x_width = g.tensor(g.x).shape[-1]
    if x_width != kernel * channels:
        raise ValueError(f"input x has {x_width} values, expected k·C = {kernel}·{channels}")
    softmax = None
    scale_beta = (0.0, 1.0)
    if g.softmax is not None:
        b = g.softmax
        so, zo = _sz(g, b.outputs[0])
        if zo != -128 or np.float32(so) != np.float32(1 / 256):
            raise ValueError(f"{b.op}: int8 SOFTMAX output must have scale 1/256, zero point -128")
        beta = float(b.op.options.get("beta", 1.0))
        scale_beta = (_sz(g, b.inputs[0])[0], beta)
        softmax = ref.softmax_exp_table(*scale_beta)
    xs, xz = _sz(g, g.x)
    ys, yz = _sz(g, g.y)
    return Lowered(
        channels=channels,
        kernel=kernel,
        stride=stride,
        front_end=None if g.front_end is None else _fc(g, g.front_end),
        layers=[_gru(g, r, h) for r, h in zip(g.layers, g.h_in, strict=True)],
        head=_fc(g, g.head),
        softmax_exp=softmax,
        softmax_scale_beta=scale_beta,
        x_scale=xs,
        x_zero_point=xz,
        y_scale=ys,
        y_zero_point=yz,
        opcodes=list(g.opcodes),
    )


# ----------------------------------------------------------------------------------
# numpy evaluation of the lowered model, every intermediate kept (op order of the C engine)


def gru_step(p: Gru, x: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
    """One layer step; returns each op's output by role (``out_add`` is the new state)."""
    u = p.units
    o: dict[str, np.ndarray] = {}
    o["gx"] = p.gx.run(x)  # x·W + b_in                     (3U)
    o["gh"] = p.gh.run(h)  # h·U + b_rec                    (3U)
    o["zr_add"] = ref.add(o["gx"][: 2 * u], o["gh"][: 2 * u], p.zr_add)
    o["sigmoid"] = p.sigmoid[o["zr_add"].astype(np.int64) + 128]  # [z | r]
    z, r = o["sigmoid"][:u], o["sigmoid"][u:]
    o["r_mul"] = ref.mul(r, o["gh"][2 * u :], p.r_mul)  # r ⊙ (h·Uh + bh)
    o["h_add"] = ref.add(o["gx"][2 * u :], o["r_mul"], p.h_add)
    o["tanh"] = p.tanh[o["h_add"].astype(np.int64) + 128]  # h̃
    o["h_sub"] = ref.sub(h, o["tanh"], p.h_sub)  # h − h̃
    o["z_mul"] = ref.mul(z, o["h_sub"], p.z_mul)  # z ⊙ (h − h̃)
    o["out_add"] = ref.add(o["tanh"], o["z_mul"], p.out_add)  # h' = h̃ + z ⊙ (h − h̃)
    return o


def run_step(m: Lowered, x: np.ndarray, h: list[np.ndarray]) -> dict[str, Any]:
    """One model step on int8 ``x`` (k·C,) and states; returns ``h_out``, ``y`` and ``trace``."""
    t = np.asarray(x, np.int8).reshape(-1)
    trace: dict[str, np.ndarray] = {}
    if m.front_end is not None:
        t = m.front_end.run(t)
        trace["front_end"] = t
    h_out = []
    for i, (p, hi) in enumerate(zip(m.layers, h, strict=True), start=1):
        o = gru_step(p, t, np.asarray(hi, np.int8).reshape(-1))
        trace.update({f"layer{i}.{k}": v for k, v in o.items()})
        t = o["out_add"]
        h_out.append(t)
    y = m.head.run(t)
    trace["head"] = y
    if m.softmax_exp is not None:
        y = ref.softmax(y, m.softmax_scale_beta[0], m.softmax_scale_beta[1])
        trace["softmax"] = y
    return {"h_out": h_out, "y": y, "trace": trace}


# ----------------------------------------------------------------------------------
# weight storage: dense rows, or kept groups of 4 columns per row (tg_fc_sparse)

GROUP = 4
MAX_GROUPS = 255  # group counts and indices are uint8
SPARSE_SHORT = 8  # rows of up to this many kept groups: ctl = n (tinygru.h, tg_fc_sparse)


@dataclass
class BlockSparse:
    group_count: np.ndarray  # (rows,) uint8
    group_index: np.ndarray  # (kept,) uint8, ascending within a row, row after row
    values: np.ndarray  # (kept, 4) int8, zero past the last column

    @property
    def nbytes(self) -> int:
        """Flash bytes of the stored layout (sparse_arrays) beyond what a dense layer stores
        per row too (start, mult, add, shift): the group stream (a count for each row of
        more than SPARSE_SHORT groups), two words per kept group, a ctl word per row."""
        long_rows = int(np.count_nonzero(self.group_count > SPARSE_SHORT))
        return int(long_rows + 9 * self.group_index.size + 4 * self.group_count.size)


def pack_blocks(w: np.ndarray) -> BlockSparse | None:
    """Kept groups of 4 columns per row of an int8 (rows, cols) matrix; None when a row
    has more than MAX_GROUPS groups (indices would not fit uint8)."""
    w = np.asarray(w, np.int8)
    rows, cols = w.shape
    n_groups = -(-cols // GROUP)
    if n_groups > MAX_GROUPS:
        return None
    padded = np.zeros((rows, n_groups * GROUP), np.int8)
    padded[:, :cols] = w
    groups = padded.reshape(rows, n_groups, GROUP)
    kept = np.any(groups != 0, axis=2)
    r_idx, g_idx = np.nonzero(kept)  # row-major: row after row, groups ascending
    return BlockSparse(
        group_count=kept.sum(axis=1).astype(np.uint8),
        group_index=g_idx.astype(np.uint8),
        values=groups[r_idx, g_idx].reshape(-1, GROUP),
    )


def unpack_blocks(s: BlockSparse, rows: int, cols: int) -> np.ndarray:
    """The dense int8 (rows, cols) matrix a BlockSparse describes."""
    n_groups = -(-cols // GROUP)
    out = np.zeros((rows, n_groups, GROUP), np.int8)
    r_idx = np.repeat(np.arange(rows), s.group_count.astype(np.int64))
    out[r_idx, s.group_index.astype(np.int64)] = s.values
    return out.reshape(rows, -1)[:, :cols]


def zero_pattern(w: np.ndarray) -> str:
    """ "dense" (no zero), "block4" (zeros only in whole groups of 4 columns) or "weight"."""
    w = np.asarray(w)
    if not np.any(w == 0):
        return "dense"
    rows, cols = w.shape
    n_groups = -(-cols // GROUP)
    z = np.zeros((rows, n_groups * GROUP), np.int64)
    z[:, :cols] = w == 0
    size = np.minimum(GROUP, cols - GROUP * np.arange(n_groups))  # the last group may be short
    zeros = z.reshape(rows, n_groups, GROUP).sum(axis=2)
    partial = (zeros > 0) & (zeros < size[None, :])
    return "weight" if partial.any() else "block4"


SPARSE_MODES = ("auto", "never", "always")


def choose_storage(
    f: Fc, mode: str, dense_bytes: int | None = None
) -> tuple[BlockSparse | None, dict[str, Any]]:
    """Dense or block-sparse storage of one layer's weights, and the decision record.

    Rule ("auto"): block-sparse when its bytes (BlockSparse.nbytes: group indices, two
    words per kept group, a ctl word per row) are fewer than the dense bytes (``dense_bytes``: what the dense
    storage takes, rows·cols by default; the packed layout pads to 4-row blocks and
    4-column groups), else dense. "never": dense. "always": block-sparse whenever the
    layout allows (≤ MAX_GROUPS groups per row). ``csr_bytes`` (int8 value + uint8
    column index per nonzero, plus a uint8 count per row) is recorded for comparison only.
    """
    if mode not in SPARSE_MODES:
        raise ValueError(f"sparse mode: expected one of {list(SPARSE_MODES)}, found {mode!r}")
    w = np.asarray(f.weights, np.int8)
    packed = pack_blocks(w)
    dense_bytes = int(w.size) if dense_bytes is None else int(dense_bytes)
    nnz = int(np.count_nonzero(w))
    info: dict[str, Any] = {
        "rows": f.rows,
        "cols": f.cols,
        "zero_fraction": round(1 - nnz / w.size, 6),
        "zero_pattern": zero_pattern(w),
        "dense_bytes": dense_bytes,
        "block_sparse_bytes": packed.nbytes if packed is not None else None,
        "kept_groups": int(packed.group_index.size) if packed is not None else None,
        "csr_bytes": 2 * nnz + f.rows,
    }
    use = packed is not None and (
        mode == "always" or (mode == "auto" and packed.nbytes < dense_bytes)
    )
    info["stored"] = "block_sparse" if use else "dense"
    info["stored_bytes"] = packed.nbytes if use and packed is not None else dense_bytes
    return (packed if use else None), info


# ----------------------------------------------------------------------------------
# packed weights (tg_fc_packed_s8) and one-step requantization (tg_fc_rq)

BLOCK = 4  # rows per block of the packed layout
MAX_PACKED_COLS = 256  # the portable kernel's 24-bit lanes hold sum x (w + 128) up to here
ACC_LIMIT = 1 << 22  # |bias + dot| of a requantized row: 256 acc stays below 2^30
RQ_SHIFTS = (-22, -1)  # shifts tg_rq_apply takes (tg_requantize.h, tg_rq_fits)
HALF = 1 << 30


@dataclass
class RowRq:
    """tg_fc_rq of every row: y = sat8((smmlar(2 acc, mult, add) + sign(acc)) >> shift)."""

    mult: np.ndarray  # (rows,) int32
    add: np.ndarray  # (rows,) int32
    shift: np.ndarray  # (rows,) int32
    constant: np.ndarray  # (rows,) bool: the same output for every input

    def padded(self, rows: int) -> RowRq:
        n = rows - self.mult.size
        pad = lambda a, v: np.concatenate([a, np.full(n, v, a.dtype)])  # noqa: E731
        return RowRq(pad(self.mult, 0), pad(self.add, 1), pad(self.shift, 1),
                     pad(self.constant, True))  # fmt: skip


def dot_range(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least and greatest sum_c w[r, c] x[c] over all int8 inputs x, per row (int64)."""
    w = np.asarray(w, np.int64)
    pos, neg = np.where(w > 0, w, 0).sum(axis=1), np.where(w < 0, w, 0).sum(axis=1)
    return -128 * pos + 127 * neg, 127 * pos - 128 * neg


def _fc_out(f: Fc, acc: np.ndarray) -> np.ndarray:
    y = ref.requantize(acc, f.mult.astype(np.int64), f.shift.astype(np.int64)) + f.output_offset
    return np.clip(y, f.act_min, f.act_max)


def one_step_rq(f: Fc) -> RowRq | None:
    """The one-step requantization of every row, or None when a row is outside its ranges.

    A row is constant when its output is the same at both ends of its accumulator range
    (bias + dot_range; TFLM's requantization is monotone there as nothing wraps): it gets
    mult 0, add 2 y + 1, shift 1. Any other row needs a multiplier in [2^30, 2^31), a
    shift in [-22, -1] and |acc| < 2^22 over its range (tg_fc_rq's ranges).
    """
    lo_d, hi_d = dot_range(f.weights)
    bias = f.bias.astype(np.int64)
    lo, hi = bias + lo_d, bias + hi_d
    shift = f.shift.astype(np.int64)
    scale = np.int64(1) << np.maximum(shift, 0)
    i32 = (np.int64(-(2**31)), np.int64(2**31 - 1))
    no_wrap = (lo * scale >= i32[0]) & (hi * scale <= i32[1])
    y_lo = _fc_out(f, np.clip(lo, *i32))
    y_hi = _fc_out(f, np.clip(hi, *i32))
    constant = no_wrap & (y_lo == y_hi)
    ok = (
        (f.mult >= HALF)
        & (shift >= RQ_SHIFTS[0])
        & (shift <= RQ_SHIFTS[1])
        & (np.maximum(np.abs(lo), np.abs(hi)) < ACC_LIMIT)
    )
    if not np.all(constant | ok) or not -128 <= f.output_offset <= 127:
        return None
    e = -shift
    add = np.where(constant, 2 * y_lo + 1, (1 << np.maximum(e - 1, 0)) + f.output_offset * (1 << e))
    return RowRq(mult=np.where(constant, 0, f.mult).astype(np.int32), add=add.astype(np.int32),
                 shift=np.where(constant, 1, e).astype(np.int32), constant=constant)  # fmt: skip


@dataclass
class Packed:
    """A dense layer in tg_fc_packed_s8's layout, both word orders (TG_USE_DSP 1 / 0)."""

    rows4: int
    cols4: int
    words_dsp: np.ndarray  # (rows4 * cols4 / 4,) uint32: block, group, row
    words_portable: np.ndarray  # (rows4 * cols4 / 4,) uint32: block, column
    bias_dsp: np.ndarray  # (rows4,) int32: 256 bias - 127 (even-column weights) - 32512 groups
    bias_portable: np.ndarray  # (rows4,) int32: bias
    rq: RowRq  # padded to rows4

    @property
    def nbytes(self) -> int:
        """Flash bytes of the weights, one word order (the build holds one)."""
        return int(self.words_dsp.nbytes)


def _words(b: np.ndarray) -> np.ndarray:
    """uint8 bytes (..., 4) as little-endian uint32 words."""
    return (
        np.ascontiguousarray(b, np.uint8).reshape(-1, 4).view("<u4").reshape(-1).astype(np.uint32)
    )


def pack_dense(f: Fc, rq: RowRq | None) -> Packed | None:
    """f's weights in the packed layout, or None (too many columns, or no one-step rq)."""
    if rq is None or f.cols > MAX_PACKED_COLS:
        return None
    rows4, cols4 = -(-f.rows // BLOCK) * BLOCK, -(-f.cols // BLOCK) * BLOCK
    w = np.zeros((rows4, cols4), np.int8)
    w[: f.rows, : f.cols] = f.weights
    u = w.view(np.uint8)
    even_cols, even_rows = u.copy(), u.copy()
    even_cols[:, 0::2] ^= 0x80  # bytes 0 and 2 of a word of 4 columns hold w + 128
    even_rows[0::2] ^= 0x80  # bytes 0 and 2 of a word of 4 rows hold w + 128
    blocks = even_cols.reshape(rows4 // BLOCK, BLOCK, cols4 // BLOCK, BLOCK)  # (b, i, g, j)
    words_dsp = _words(blocks.transpose(0, 2, 1, 3))  # word: row 4b+i, columns 4g..4g+3
    by_col = even_rows.reshape(rows4 // BLOCK, BLOCK, cols4).transpose(0, 2, 1)  # (b, c, i)
    words_portable = _words(by_col)  # word: column c, rows 4b..4b+3
    pad = np.zeros(rows4, np.int64)
    pad[: f.rows] = np.where(rq.constant, 0, f.bias)
    even = w[:, 0::2].astype(np.int64).sum(axis=1)
    bias_dsp = 256 * pad - 127 * even - 32512 * (cols4 // BLOCK)
    return Packed(rows4=rows4, cols4=cols4, words_dsp=words_dsp, words_portable=words_portable,
                  bias_dsp=bias_dsp.astype(np.int32), bias_portable=pad.astype(np.int32),
                  rq=rq.padded(rows4))  # fmt: skip


@dataclass
class SparseArrays:
    """A block-sparse layer in tg_fully_connected_sparse_s8's layout (both builds)."""

    stream: np.ndarray  # uint8: per row its group numbers; a long row's count n first
    values: np.ndarray  # (2 kept,) uint32: halfwords (2 w0, 2 w2), then (2 w1, 2 w3)
    values_portable: np.ndarray  # (2 kept,) uint32: bytes w0, w1, w2, w3, then 0
    rows: np.ndarray  # (rows, 5) int32: ctl, accumulator start 2 bias, mult, add, shift
    counts: np.ndarray  # (rows,) kept groups per row

    def offsets(self, row: int) -> tuple[int, int]:
        """Where row ``row`` starts in the group stream and in the values (words)."""
        n = int(self.counts[:row].sum())
        long_rows = int(np.count_nonzero(self.counts[:row] > SPARSE_SHORT))
        return n + long_rows, 2 * n


def sparse_arrays(f: Fc, s: BlockSparse, rq: RowRq) -> SparseArrays:
    """The arrays of a block-sparse layer requantized in one step (rq)."""
    stream: list[int] = []
    at = 0
    counts = s.group_count.astype(np.int64)
    index = s.group_index.astype(int).tolist()
    for n in counts.tolist():
        stream += ([n] if n > SPARSE_SHORT else []) + index[at : at + n]
        at += n
    v = 2 * s.values.astype(np.int64)  # (kept, 4): 2 w, int16 halfwords
    h = lambda a, b: (v[:, a] & 0xFFFF) | ((v[:, b] & 0xFFFF) << 16)  # noqa: E731
    values = np.stack([h(0, 2), h(1, 3)], axis=1).reshape(-1).astype(np.uint32)
    words = _words(s.values.view(np.uint8)) if len(v) else np.zeros(0, np.uint32)
    portable = np.stack([words, np.zeros_like(words)], axis=1).reshape(-1)
    bias = np.where(rq.constant, 0, f.bias).astype(np.int64)
    ctl = np.where(counts > SPARSE_SHORT, SPARSE_SHORT + 1, counts)
    rows = np.stack([ctl, 2 * bias, rq.mult, rq.add, rq.shift], axis=1).astype(np.int32)
    return SparseArrays(stream=np.asarray(stream, np.uint8), values=values,
                        values_portable=portable, rows=rows, counts=counts)  # fmt: skip
