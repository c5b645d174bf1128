"""Recognize the int8 GRU step graph and refuse anything else.

The accepted family (quantize/step_model.py, ``form="split"``, ``update="lerp"``)::

    [fe  = FULLY_CONNECTED(x) with fused RELU]                front end over k·C inputs
    per layer l (input t = fe, x or h_{l-1}_out, state h = h_l_in):
      gx          = FULLY_CONNECTED(t)          x·W + b_in      (3U)
      gx_zr, gx_h = SPLIT_V(gx, [2U, U])
      gh          = FULLY_CONNECTED(h)          h·U + b_rec     (3U)
      gh_zr, gh_h = SPLIT_V(gh, [2U, U])
      a           = ADD(gx_zr, gh_zr)
      s           = LOGISTIC(a)                 σ -> [z | r]
      z, r        = SPLIT(s, 2)
      m           = MUL(r, gh_h)                r ⊙ (h·Uh + bh_rec)
      c           = ADD(gx_h, m)
      h̃           = TANH(c)
      d           = SUB(h, h̃)
      e           = MUL(z, d)
      h_l_out     = ADD(h̃, e)                   h' = h̃ + z ⊙ (h − h̃)
    y = SOFTMAX(FULLY_CONNECTED(h_L_out))  or  y = FULLY_CONNECTED(h_L_out) (forecast)

The graph is matched by its wiring, from the outputs back to the inputs, so the
converter's choice among valid execution orders does not matter. ADD and MUL are
commutative: their inputs are put in the order above (bit-exact, see tflm_ref).
Every op must belong to the pattern exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_runtime.tflite_reader import Model, Operator, Tensor

ALLOWED_OPS = ("FULLY_CONNECTED", "SPLIT_V", "SPLIT", "ADD", "SUB", "MUL", "LOGISTIC", "TANH",
               "SOFTMAX")  # fmt: skip
ACT_NONE, ACT_RELU = 0, 1

# role -> what it computes, used in messages and in the generated C comments
GRU_ROLES: dict[str, str] = {
    "gx": "gx = x·W + b_in (FULLY_CONNECTED, 3U)",
    "split_gx": "gx -> gx_zr | gx_h (SPLIT_V)",
    "gh": "gh = h·U + b_rec (FULLY_CONNECTED, 3U)",
    "split_gh": "gh -> gh_zr | gh_h (SPLIT_V)",
    "zr_add": "gx_zr + gh_zr (ADD)",
    "sigmoid": "[z | r] = σ(gx_zr + gh_zr) (LOGISTIC)",
    "split_zr": "z | r (SPLIT)",
    "r_mul": "r ⊙ gh_h (MUL)",
    "h_add": "gx_h + r ⊙ gh_h (ADD)",
    "tanh": "h̃ = tanh(gx_h + r ⊙ gh_h) (TANH)",
    "h_sub": "h − h̃ (SUB)",
    "z_mul": "z ⊙ (h − h̃) (MUL)",
    "out_add": "h' = h̃ + z ⊙ (h − h̃) (ADD)",
}


class PatternError(ValueError):
    """The .tflite is not a tinygru GRU step graph; the message names the op or tensor."""


@dataclass
class Bound:
    """One matched op with its inputs in canonical order."""

    op: Operator
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class StepGraph:
    model: Model
    x: int
    h_in: list[int]
    h_out: list[int]
    y: int
    front_end: Bound | None
    layers: list[dict[str, Bound]]
    head: Bound
    softmax: Bound | None
    opcodes: list[str] = field(default_factory=list)  # distinct ops, first-use order

    @property
    def units(self) -> list[int]:
        return [self.model.tensors[t].shape[-1] for t in self.h_in]

    def tensor(self, i: int) -> Tensor:
        return self.model.tensors[i]


_LOGICAL = ("x", "h1_in", "h2_in", "h1_out", "h2_out", "y")


def _logical(tensor_name: str) -> str | None:
    """``serving_default_h1_in:0`` -> ``h1_in``: the longest logical name the base name ends with."""
    base = tensor_name.split(":")[0]
    hits = [k for k in _LOGICAL if base == k or base.endswith("_" + k) or base.endswith("/" + k)]
    return max(hits, key=len) if hits else None


def _io_names(model: Model) -> tuple[dict[str, int], dict[str, int]]:
    """Logical input/output names (x, h1_in, …, h1_out, …, y) -> tensor index."""
    ins, outs = dict(model.signature_inputs), dict(model.signature_outputs)
    for listed, target in ((model.inputs, ins), (model.outputs, outs)):
        for i in listed:
            name = _logical(model.tensors[i].name)
            if name is not None and name not in target:
                target[name] = i
    return ins, outs


class _Matcher:
    def __init__(self, model: Model) -> None:
        self.m = model
        self.prod: dict[int, Operator] = {}
        for op in model.operators:
            for t in op.outputs:
                self.prod[t] = op
        self.used: set[int] = set()

    def name(self, t: int) -> str:
        return f"tensor #{t} {self.m.tensors[t].name!r}"

    def opcode_of(self, t: int) -> str | None:
        op = self.prod.get(t)
        return None if op is None else op.opcode

    def take(self, t: int, opcode: str, what: str, n_in: int | None = None) -> Operator:
        op = self.prod.get(t)
        if op is None:
            raise PatternError(f"{what}: expected {opcode} producing {self.name(t)}, found none")
        if op.opcode != opcode:
            raise PatternError(f"{op}: expected {opcode} here ({what})")
        if op.index in self.used:
            raise PatternError(f"{op}: used twice in the pattern ({what})")
        if n_in is not None and len(op.inputs) != n_in:
            raise PatternError(f"{op}: expected {n_in} inputs ({what}), found {len(op.inputs)}")
        self.used.add(op.index)
        return op

    def order(self, op: Operator, first: str, what: str) -> tuple[int, int]:
        """The two inputs of a commutative op, the one produced by ``first`` first."""
        a, b = op.inputs
        if self.opcode_of(a) == first:
            return a, b
        if self.opcode_of(b) == first:
            return b, a
        found = ", ".join(str(self.prod[t]) if t in self.prod else self.name(t) for t in (a, b))
        raise PatternError(
            f"{op}: expected one input produced by {first} ({what}); inputs come from {found}"
        )

    def expect(self, cond: bool, op: Operator, msg: str) -> None:
        if not cond:
            raise PatternError(f"{op}: {msg}")

    def const_ints(self, t: int) -> list[int]:
        tensor = self.m.tensors[t]
        if tensor.data is None:
            raise PatternError(f"{self.name(t)}: expected a constant")
        return [int(v) for v in tensor.array().reshape(-1)]


def _fc(mt: _Matcher, t: int, what: str, act: tuple[int, ...] = (ACT_NONE,)) -> Bound:
    op = mt.take(t, "FULLY_CONNECTED", what)
    mt.expect(len(op.inputs) in (2, 3), op, f"expected input, weights[, bias] ({what})")
    w = mt.m.tensors[op.inputs[1]]
    mt.expect(
        w.data is not None and len(w.shape) == 2, op, f"weights must be a 2-D constant ({what})"
    )
    bias = op.inputs[2] if len(op.inputs) == 3 else -1
    mt.expect(
        bias == -1 or mt.m.tensors[bias].data is not None, op, f"bias must be constant ({what})"
    )
    opts = op.options
    mt.expect(opts.get("fused_activation_function", 0) in act, op,
              f"fused activation {opts.get('fused_activation_function')} not allowed ({what})")  # fmt: skip
    mt.expect(opts.get("weights_format", 0) == 0 and not opts.get("keep_num_dims", 0), op,
              f"expected default weights format and keep_num_dims false ({what})")  # fmt: skip
    return Bound(op, (op.inputs[0], op.inputs[1], bias), op.outputs)


def _split_v(mt: _Matcher, t: int, units: int, what: str) -> Bound:
    op = mt.take(t, "SPLIT_V", what, n_in=3)
    sizes = mt.const_ints(op.inputs[1])
    axis = mt.const_ints(op.inputs[2])
    mt.expect(
        sizes == [2 * units, units], op, f"expected sizes [{2 * units}, {units}], found {sizes}"
    )
    mt.expect(axis in ([1], [-1]), op, f"expected a split on the last axis, found axis {axis}")
    mt.expect(len(op.outputs) == 2, op, "expected 2 outputs")
    return Bound(op, (op.inputs[0],), op.outputs)


def _layer(mt: _Matcher, h_in: int, h_out: int, units: int, tag: str) -> tuple[dict, int]:
    """Match one GRU layer backwards from its state output; returns roles and the layer input."""
    roles: dict[str, Bound] = {}
    w = {k: f"{tag} {v}" for k, v in GRU_ROLES.items()}
    out_add = mt.take(h_out, "ADD", w["out_add"], n_in=2)
    ht, e = mt.order(out_add, "TANH", w["out_add"])
    roles["out_add"] = Bound(out_add, (ht, e), out_add.outputs)
    tanh = mt.take(ht, "TANH", w["tanh"], n_in=1)
    roles["tanh"] = Bound(tanh, tanh.inputs, tanh.outputs)
    z_mul = mt.take(e, "MUL", w["z_mul"], n_in=2)
    z, d = mt.order(z_mul, "SPLIT", w["z_mul"])
    roles["z_mul"] = Bound(z_mul, (z, d), z_mul.outputs)
    sub = mt.take(d, "SUB", w["h_sub"], n_in=2)
    mt.expect(sub.inputs == (h_in, ht), sub, f"expected inputs (h_in, h̃) ({w['h_sub']})")
    roles["h_sub"] = Bound(sub, sub.inputs, sub.outputs)
    h_add = mt.take(tanh.inputs[0], "ADD", w["h_add"], n_in=2)
    gx_h, m = mt.order(h_add, "SPLIT_V", w["h_add"])
    roles["h_add"] = Bound(h_add, (gx_h, m), h_add.outputs)
    r_mul = mt.take(m, "MUL", w["r_mul"], n_in=2)
    r, gh_h = mt.order(r_mul, "SPLIT", w["r_mul"])
    roles["r_mul"] = Bound(r_mul, (r, gh_h), r_mul.outputs)
    split_zr = mt.take(z, "SPLIT", w["split_zr"], n_in=2)
    mt.expect(
        split_zr.outputs == (z, r), split_zr, "expected outputs (z, r) feeding z ⊙ … and r ⊙ …"
    )
    mt.expect(mt.const_ints(split_zr.inputs[0]) in ([1], [-1]), split_zr, "expected the last axis")
    roles["split_zr"] = Bound(split_zr, (split_zr.inputs[1],), split_zr.outputs)
    sig = mt.take(split_zr.inputs[1], "LOGISTIC", w["sigmoid"], n_in=1)
    roles["sigmoid"] = Bound(sig, sig.inputs, sig.outputs)
    zr_add = mt.take(sig.inputs[0], "ADD", w["zr_add"], n_in=2)
    split_gx = _split_v(mt, gx_h, units, w["split_gx"])
    mt.expect(split_gx.outputs[1] == gx_h, split_gx.op, "expected gx_h as second output")
    split_gh = _split_v(mt, gh_h, units, w["split_gh"])
    mt.expect(split_gh.outputs[1] == gh_h, split_gh.op, "expected gh_h as second output")
    gx_zr, gh_zr = split_gx.outputs[0], split_gh.outputs[0]
    mt.expect(
        set(zr_add.inputs) == {gx_zr, gh_zr},
        zr_add,
        f"expected inputs gx_zr, gh_zr ({w['zr_add']})",
    )
    roles["zr_add"] = Bound(zr_add, (gx_zr, gh_zr), zr_add.outputs)
    roles["split_gx"], roles["split_gh"] = split_gx, split_gh
    roles["gh"] = _fc(mt, split_gh.inputs[0], w["gh"])
    mt.expect(roles["gh"].inputs[0] == h_in, roles["gh"].op, f"expected input {tag}_in ({w['gh']})")
    roles["gx"] = _fc(mt, split_gx.inputs[0], w["gx"])
    return roles, roles["gx"].inputs[0]


def _check_tensors(model: Model) -> None:
    for t in model.tensors:
        if t.dtype == "FLOAT32":
            raise PatternError(
                f"tensor #{t.index} {t.name!r} is FLOAT32: the step model must be full int8"
            )
        if t.data is None and t.dtype != "INT8":
            raise PatternError(
                f"tensor #{t.index} {t.name!r}: activations must be INT8, found {t.dtype}"
            )
        if t.data is None and (len(t.scale) != 1 or len(t.zero_point) != 1):
            raise PatternError(f"tensor #{t.index} {t.name!r}: expected per-tensor quantization")


def match(model: Model) -> StepGraph:
    """Match ``model`` against the GRU step family; raise ``PatternError`` otherwise."""
    if model.n_subgraphs != 1:
        raise PatternError(f"expected one subgraph, found {model.n_subgraphs}")
    for op in model.operators:
        if op.opcode not in ALLOWED_OPS:
            raise PatternError(
                f"{op}: not an op of the GRU step pattern (allowed: {', '.join(ALLOWED_OPS)})"
            )
    _check_tensors(model)
    ins, outs = _io_names(model)
    n_layers = sum(1 for k in ins if k.startswith("h") and k.endswith("_in"))
    need = ["x", *[f"h{i}_in" for i in range(1, n_layers + 1)]]
    need_out = [*[f"h{i}_out" for i in range(1, n_layers + 1)], "y"]
    missing = [n for n in need if n not in ins] + [n for n in need_out if n not in outs]
    if n_layers not in (1, 2) or missing:
        raise PatternError(f"expected inputs {need} and outputs {need_out}; missing {missing}, "
                           f"found inputs {sorted(ins)} outputs {sorted(outs)}")  # fmt: skip
    mt = _Matcher(model)
    h_in = [ins[f"h{i}_in"] for i in range(1, n_layers + 1)]
    h_out = [outs[f"h{i}_out"] for i in range(1, n_layers + 1)]
    for a, b in zip(h_in, h_out, strict=True):
        ta, tb = model.tensors[a], model.tensors[b]
        if (ta.shape, ta.scale, ta.zero_point) != (tb.shape, tb.scale, tb.zero_point):
            raise PatternError(f"{ta.name!r} and {tb.name!r}: state input and output must share "
                               "shape and quantization (the device copies h_out into h_in)")  # fmt: skip
    y = outs["y"]
    softmax = None
    head_t = y
    if mt.opcode_of(y) == "SOFTMAX":
        op = mt.take(y, "SOFTMAX", "y = softmax(head)", n_in=1)
        softmax = Bound(op, op.inputs, op.outputs)
        head_t = op.inputs[0]
    head = _fc(mt, head_t, "head = h·W + b (FULLY_CONNECTED)")
    if head.inputs[0] != h_out[-1]:
        raise PatternError(f"{head.op}: expected the last state h{n_layers}_out as head input")
    layers = []
    for i in range(n_layers, 0, -1):
        units = model.tensors[h_in[i - 1]].shape[-1]
        roles, t_in = _layer(mt, h_in[i - 1], h_out[i - 1], units, f"layer {i}")
        layers.insert(0, roles)
        if i > 1 and t_in != h_out[i - 2]:
            raise PatternError(f"{roles['gx'].op}: expected h{i - 1}_out as the input of layer {i}")
    front_end = None
    if t_in != ins["x"]:
        front_end = _fc(
            mt, t_in, "front end = relu(x·W + b) (FULLY_CONNECTED)", (ACT_NONE, ACT_RELU)
        )
        if front_end.inputs[0] != ins["x"]:
            raise PatternError(f"{front_end.op}: expected the model input x as front-end input")
    for op in model.operators:
        if op.index not in mt.used:
            raise PatternError(f"{op}: not part of the GRU step pattern (an extra op)")
    opcodes: list[str] = []
    for op in model.operators:
        if op.opcode not in opcodes:
            opcodes.append(op.opcode)
    return StepGraph(model, ins["x"], h_in, h_out, y, front_end, layers, head, softmax, opcodes)
