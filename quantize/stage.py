"""The quantize stage on a bundle: ``prune`` and ``int8`` (``check`` lives in ``quantize.parity``).

``int8`` reads ``model_pruned.keras`` when the bundle has one, else
``model_float.keras``, and writes

- ``step_int8.tflite``: the single GRU step, full int8, converted in a fresh
  Python process with ``PYTHONHASHSEED=0`` (the converter's output depends on
  the hash seed; a fresh process makes the bytes a function of the inputs only);
- ``window_int8.tflite`` with ``window_model=True``;
- ``reports/quantize.json``;
- the manifest's ``quantization`` section (the step model's ops, tensors, size,
  inputs and outputs with their quantization, the state handling, the ring
  buffer fill value, the calibration, the smallest host TFLM arena) and
  ``preprocess.input_quant``: the device input contract, derived from the
  channel scales, the normalization and the int8 ``x`` input's scale and zero
  point (:meth:`edge_runtime.preprocess.InputQuant.derive`).

The ring buffer of the front end is zero-filled before the first sample in the
float model, i.e. filled with the *normalized* value 0.0. TFLite's quantizer
always makes 0.0 exactly representable, so that value is the ``x`` zero point
exactly (``zp + rhaz(0 / s) = zp``); it is *not* the quantized count 0, which is
``quantize_counts(0)`` and in general differs from ``zp`` by ``rhaz(-mean_c /
(std_c · s))``. A device fills its ring buffer with ``zp``, recorded as
``quantization.step.ring_buffer.fill``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle, BundleError, npz_bytes, stage_writer
from edge_runtime.preprocess import InputQuant, quantize_counts

ROOT = Path(__file__).resolve().parents[1]
STEP_FILE = contract.STEP_MODEL
WINDOW_FILE = contract.WINDOW_MODEL
FLOAT_FILE = contract.FLOAT_MODEL
PRUNED_FILE = contract.PRUNED_MODEL
ARENA_LABEL = "host (x86-64) TFLM arena"
UNIT_SCALE = contract.STATE_SCALE
MAX_ARENA = 16 * 2**20

# The arena search, run in a process of its own: tflite_micro is imported once and
# every probe (allocate with the given arena, invoke once on zero inputs) runs in a
# forked child, because a failed allocation can crash the process (segmentation
# fault). Doubles from 1 KiB until a size works, then bisects to the byte; finally
# prints the recording allocator's report for the smallest size to stderr and
# "<bytes> <probes>" to stdout.
_ARENA_SEARCH = """
import os
import sys
import numpy as np
from tflite_micro import runtime

data = open(sys.argv[1], "rb").read()
n_inputs, limit = int(sys.argv[2]), int(sys.argv[3])


def run(arena):
    it = runtime.Interpreter.from_bytes(data, arena_size=arena)
    for i in range(n_inputs):
        d = it.get_input_details(i)
        it.set_input(np.zeros(d["shape"], d["dtype"]), i)
    it.invoke()
    return it


def ok(arena):
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            run(arena)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


probes = 1
lo, hi = 0, 1024
while not ok(hi):
    probes += 1
    lo, hi = hi, hi * 2
    if hi > limit:
        print(0, probes)
        sys.exit(0)
while hi - lo > 1:
    mid = (lo + hi) // 2
    probes += 1
    if ok(mid):
        hi = mid
    else:
        lo = mid
run(hi).print_allocations()
print(hi, probes)
"""


class StageError(Exception):
    """A stage cannot run on this bundle; the message names the file."""


# --------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    return env


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def open_bundle(bundle_dir: str | os.PathLike[str]) -> Bundle:
    """Open and validate a bundle that the train stage has written."""
    b = Bundle.open(bundle_dir)
    m = b.manifest
    missing = [k for k in ("model", "preprocess", "dataset", "stages") if k not in m]
    if "train" not in m.get("stages", {}):
        missing.append("stages.train")
    if missing:
        raise StageError(
            f"{b.root / 'manifest.json'}: no {', '.join(missing)}: run `python -m train` first"
        )
    return b


def model_config(b: Bundle) -> Any:
    from train.model import ModelConfig

    try:
        return ModelConfig.from_dict(b.manifest["model"]["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise StageError(f"{b.root / 'manifest.json'}: model.config: {e}") from None


def source_model(b: Bundle) -> str:
    """The model the int8 stage converts: the pruned one when present."""
    return PRUNED_FILE if b.has(PRUNED_FILE) else FLOAT_FILE


def load_keras(b: Bundle, name: str) -> Any:
    """A bundle's Keras model: sha256 verified, loaded with ``safe_mode=True``."""
    import keras

    path = b.path(name)
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        raise StageError(f"{path}: cannot load the Keras model: {e}") from None


def channel_scales(b: Bundle) -> np.ndarray:
    return np.array([float(c["scale"]) for c in b.manifest["dataset"]["channels"]])


def int8_step_inputs(cfg: Any, samples_q: np.ndarray, fill: int) -> np.ndarray:
    """The int8 ``x`` of every step over int8 samples ``(N, T, C)``: ``(N, n_steps, k·C)``,
    ``fill`` (the ``x`` zero point) before sample 0 (:func:`edge_runtime.contract.step_inputs`)."""
    q = np.asarray(samples_q, np.int8)
    return contract.step_inputs(q, cfg.front_end_kernel, cfg.front_end_stride, fill)


# --------------------------------------------------------------------------- prune


def prune(
    bundle_dir: str | os.PathLike[str],
    *,
    sparsity: float = 0.75,
    granularity: str = "weight",
    sweep: list[float] | None = None,
    sweep_granularities: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    frequency: int | None = None,
    finetune_learning_rate: float | None = None,
    patience: int | None = None,
    distill: float | None = None,
    temperature: float | None = None,
    augment: bool = True,
    seed: int = 0,
    data_path: str | None = None,
) -> dict[str, Any]:
    """``model_float.keras`` → ``model_pruned.keras`` (see :func:`quantize.prune.run`).

    The batch size defaults to the one the train stage used (its config is in
    the manifest); the other settings default to :class:`quantize.prune.PruneSettings`.
    """
    from quantize.prune import PruneSettings, run

    b = open_bundle(bundle_dir)
    b.path(FLOAT_FILE)
    kw: dict[str, Any] = {
        "target": float(sparsity),
        "granularity": granularity,
        "seed": seed,
        "augment": augment,
    }
    if batch_size is None:
        batch_size = b.manifest["stages"]["train"]["config"].get("train", {}).get("batch_size")
    for key, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("learning_rate", learning_rate),
        ("frequency", frequency),
        ("finetune_learning_rate", finetune_learning_rate),
        ("patience", patience),
        ("distill", distill),
        ("temperature", temperature),
    ):
        if value is not None:
            kw[key] = value
    try:
        settings = PruneSettings(**kw)
    except ValueError as e:
        raise StageError(str(e)) from None
    if sweep and any(not 0.0 <= s < 1.0 for s in sweep):
        raise StageError(f"--sweep: every sparsity must lie in [0, 1), found {sweep}")
    run(
        bundle_dir,
        settings,
        sweep_targets=sweep or None,
        sweep_granularities=tuple(sweep_granularities) if sweep_granularities else None,
        data_path=data_path,
    )
    return Bundle.open(bundle_dir).manifest.get("sparsity", {})


# --------------------------------------------------------------------------- int8


def convert_in_subprocess(
    model_path: Path, cfg: Any, calibration: dict[str, np.ndarray], *, timeout: float = 600
) -> bytes:
    """Run ``python -m quantize.convert step …`` in a fresh process with PYTHONHASHSEED=0."""
    with tempfile.TemporaryDirectory(prefix="tinygru-int8-") as tmp:
        t = Path(tmp)
        (t / "config.json").write_text(json.dumps(cfg.to_dict()))
        (t / "calibration.npz").write_bytes(npz_bytes(calibration))
        out = t / "step.tflite"
        cmd = [
            sys.executable,
            "-m",
            "quantize.convert",
            "step",
            str(model_path),
            str(t / "config.json"),
            str(t / "calibration.npz"),
            str(out),
        ]
        try:
            r = subprocess.run(
                cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise StageError(
                f"{model_path.name}: conversion took longer than {timeout} s"
            ) from None
        if r.returncode != 0 or not out.is_file():
            raise StageError(
                f"{model_path.name}: conversion to {STEP_FILE} failed "
                f"(exit {r.returncode}): {_last_line(r.stderr)}"
            )
        return out.read_bytes()


def smallest_arena(tflite_bytes: bytes, n_inputs: int) -> dict[str, Any]:
    """The smallest ``arena_size`` with which the host TFLM allocates and invokes the model."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinygru-arena-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite_bytes)
        cmd = [sys.executable, "-c", _ARENA_SEARCH, str(path), str(n_inputs), str(MAX_ARENA)]
        try:
            r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise StageError(f"{STEP_FILE}: the TFLM arena search took longer than 600 s") from None
    if r.returncode != 0:
        raise StageError(f"{STEP_FILE}: TFLM arena search failed: {_last_line(r.stderr)}")
    arena, probes = (int(v) for v in r.stdout.split()[-2:])
    if arena == 0:
        raise StageError(
            f"{STEP_FILE}: the host TFLM does not run the model with {MAX_ARENA} bytes of arena"
        )
    m = re.search(r"Arena allocation total (\d+) bytes", r.stderr)
    return {
        "bytes": arena,
        "label": ARENA_LABEL,
        "recorded_total": int(m.group(1)) if m else None,
        "method": "bisection over tflite_micro arena_size (allocate + one invoke), to the byte",
        "probes": probes,
        "seconds": round(time.perf_counter() - t0, 1),
        "note": "measured with the x86-64 tflite_micro wheel; a 32-bit MCU build needs less "
        "(smaller pointers and structs); add a margin on the device",
    }


def _io_entry(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "scale": d["scale"],
        "zero_point": d["zero_point"],
        "shape": d["shape"],
        "dtype": d["dtype"],
        "position": d["position"],
        "tensor_name": d["tensor_name"],
    }


def _check_unit_state(info: dict[str, Any], cfg: Any) -> None:
    from quantize.step_model import state_names

    for a, o in zip(*state_names(cfg), strict=True):
        for kind, name in (("inputs", a), ("outputs", o)):
            d = info[kind][name]
            if d["scale"] != UNIT_SCALE or d["zero_point"] != 0:
                raise StageError(
                    f"{STEP_FILE}: {name} has scale {d['scale']} zero point {d['zero_point']}, "
                    "expected 1/128 and 0 (state='unit')"
                )


def int8(
    bundle_dir: str | os.PathLike[str],
    *,
    window_model: bool = False,
    calibration_samples: int = 1000,
    seed: int = 0,
    data_path: str | None = None,
    arena: bool = True,
    fresh_process: bool = True,
) -> dict[str, Any]:
    """Convert the bundle's model to ``step_int8.tflite``; returns the ``quantization`` section.

    ``fresh_process=False`` converts in this process: faster, but the bytes may
    then depend on the hash seed and on what the process built before (layer
    name counters end up in tensor names).
    """
    from quantize.convert import calibration_pairs, convert_window
    from quantize.graph import STEP_OPS, WINDOW_OPS, PurityError, check_purity, step_info
    from quantize.prune import bundle_data
    from quantize.step_model import state_names

    t_start = time.perf_counter()
    b = open_bundle(bundle_dir)
    m = b.manifest
    cfg = model_config(b)
    source = source_model(b)
    src_path = b.path(source)
    model = load_keras(b, source)
    print(f"[quantize] int8: {b.root} from {source}")

    data = bundle_data(bundle_dir, data_path)
    x_train = np.asarray(data["x_train"], np.float32)
    t0 = time.perf_counter()
    cal = calibration_pairs(model, cfg, x_train, calibration_samples, seed)
    t_cal = time.perf_counter() - t0

    t0 = time.perf_counter()
    if fresh_process:
        tfl = convert_in_subprocess(src_path, cfg, cal)
    else:
        from quantize.convert import convert_step
        from quantize.step_model import build_step_model

        tfl = convert_step(build_step_model(model, cfg), cal, state="unit")
    t_convert = time.perf_counter() - t0
    try:
        summary = check_purity(tfl, STEP_OPS)
    except PurityError as e:
        raise StageError(f"{STEP_FILE}: not pure int8: {e}") from None
    info = step_info(tfl, cfg)
    _check_unit_state(info, cfg)

    xin = info["inputs"]["x"]
    if not isinstance(xin["scale"], float) or not isinstance(xin["zero_point"], int):
        raise StageError(f"{STEP_FILE}: input x must be quantized per tensor, found {xin}")
    s_in, zp = float(xin["scale"]), int(xin["zero_point"])
    # The ring buffer's fill: a normalized 0.0, quantized as TFLite does.
    fill = int(contract.quantize(np.zeros(1), s_in, zp)[0])
    if fill != zp:
        raise StageError(
            f"{STEP_FILE}: normalized 0.0 quantizes to {fill}, not the zero point {zp}"
        )
    scale_c = channel_scales(b)
    pre = m["preprocess"]
    try:
        iq = InputQuant.derive(scale_c, pre["mean"], pre["std"], s_in, zp)
    except ValueError as e:
        raise StageError(f"{b.root / 'manifest.json'}: preprocess.input_quant: {e}") from None

    input_contract = _input_contract(b, cfg, iq, s_in, zp)

    arena_info = None
    if arena:
        print("[quantize] int8: measuring the smallest TFLM arena")
        arena_info = smallest_arena(tfl, len(info["inputs"]))
    elif _same_step(b, tfl):
        arena_info = m.get("quantization", {}).get("tflm_arena")

    window_info = None
    window_bytes = None
    if window_model:
        print("[quantize] int8: converting the unrolled window model")
        if os.environ.get("PYTHONHASHSEED") != "0":
            print(
                "[quantize] warning: PYTHONHASHSEED is not 0: window_int8.tflite may not be "
                "reproducible",
                file=sys.stderr,
            )
        t0 = time.perf_counter()
        T = int(pre["window"])
        window_bytes = convert_window(model, cfg, T, x_train, seed=seed)
        try:
            wsum = check_purity(window_bytes, WINDOW_OPS)
        except PurityError as e:
            raise StageError(f"{WINDOW_FILE}: not pure int8: {e}") from None
        window_info = {
            "file": WINDOW_FILE,
            "size_bytes": wsum["size_bytes"],
            "n_ops": wsum["n_ops"],
            "n_tensors": wsum["n_tensors"],
            "op_counts": wsum["op_counts"],
            "window": T,
            "seconds": round(time.perf_counter() - t0, 1),
        }

    h_in, h_out = state_names(cfg)
    step = {
        "file": STEP_FILE,
        "ops": summary["ops"],
        "n_ops": summary["n_ops"],
        "op_counts": summary["op_counts"],
        "n_tensors": summary["n_tensors"],
        "size_bytes": summary["size_bytes"],
        "weights_bytes": summary["weights_bytes"],
        "inputs": {k: _io_entry(v) for k, v in info["inputs"].items()},
        "outputs": {k: _io_entry(v) for k, v in info["outputs"].items()},
        "state": {
            "mode": "unit",
            "names": [[a, o] for a, o in zip(h_in, h_out, strict=True)],
            "scale": UNIT_SCALE,
            "zero_point": 0,
            "equal": info["state_equal"],
            "handling": "every hN_in and hN_out is int8 with scale 1/128 and zero point 0; "
            "the device copies the hN_out bytes into hN_in between steps; the zero state "
            "is all 0",
        },
        "ring_buffer": {
            "samples": cfg.front_end_kernel,
            "stride": cfg.front_end_stride,
            "fill": fill,
            "fill_meaning": "the x zero point = a normalized 0.0 (the float model's causal "
            "zero padding); not the quantized count 0",
        },
    }
    section: dict[str, Any] = {
        "source_model": {"file": source, "sha256": b.artifacts[source]["sha256"]},
        "step": step,
        "calibration": {
            "pairs": int(len(cal["x"])),
            "seed": seed,
            "from": "training windows drawn at random (seeded), each run as a float step "
            "chain from a zero state; (x_t, h_{t-1}) pairs drawn at random from those steps",
            "x_range": [float(cal["x"].min()), float(cal["x"].max())],
        },
        "conversion": {
            "state": "unit",
            "saturated": "cap: the ranges feeding LOGISTIC and TANH are narrowed to where the "
            "int8 output saturates (|x| = ln 511 for the sigmoid, atanh(1 - 1/256) for tanh; "
            "an addend by that bound plus the other addend's largest magnitude)",
            "process": "fresh Python process, PYTHONHASHSEED=0 (python -m quantize.convert step)"
            if fresh_process
            else "in process (not guaranteed reproducible)",
        },
        "input_contract": input_contract,
    }
    if arena_info is not None:
        section["tflm_arena"] = arena_info
    if window_info is not None:
        section["window"] = window_info

    report = {
        "source_model": source,
        "step": dict(step),
        "calibration": section["calibration"],
        "input_contract": input_contract,
        "tflm_arena": arena_info,
        "window": window_info,
        "seconds": {
            "calibration": round(t_cal, 1),
            "conversion": round(t_convert, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
    }
    stale_parity = _stale_parity(b, tfl)
    config = {
        "command": "int8",
        "source_model": source,
        "calibration_samples": calibration_samples,
        "seed": seed,
        "window_model": window_model,
        "state": "unit",
    }
    with stage_writer(bundle_dir, "quantize", config=config) as w:
        import keras
        import tensorflow as tf

        w.versions.update({"tensorflow": tf.__version__, "keras": keras.__version__})
        w.write_bytes(STEP_FILE, tfl)
        if window_bytes is not None:
            w.write_bytes(WINDOW_FILE, window_bytes)
        elif w.manifest["artifacts"].get(WINDOW_FILE):
            w.remove(WINDOW_FILE)
        w.manifest["quantization"] = section
        w.manifest["preprocess"]["input_quant"] = iq.to_dict()
        if stale_parity:
            for name in ("reports/parity.json", "reports/parity.md"):
                w.remove(name)
            w.manifest.get("thresholds", {}).pop("device", None)
            w.manifest.get("metrics", {}).pop("parity", None)
        w.write_json("reports/quantize.json", report)
    arena_txt = f", {ARENA_LABEL} {arena_info['bytes']} B" if arena_info else ""
    print(
        f"[quantize] int8: wrote {STEP_FILE}: {summary['n_ops']} ops, {summary['size_bytes']} B"
        f"{arena_txt}; x scale {s_in:.6g} zero point {zp}"
    )
    return section


def _same_step(b: Bundle, tfl: bytes) -> bool:
    """Whether the bundle already holds exactly these step-model bytes."""
    import hashlib

    entry = b.artifacts.get(STEP_FILE)
    return entry is not None and entry["sha256"] == hashlib.sha256(tfl).hexdigest()


def _stale_parity(b: Bundle, tfl: bytes) -> bool:
    """Whether the bundle's parity report was made on other step-model bytes than ``tfl``."""
    import hashlib

    if not b.has("reports/parity.json"):
        return False
    try:
        rep = b.read_json("reports/parity.json")
    except BundleError:
        return True
    return rep.get("step_sha256") != hashlib.sha256(tfl).hexdigest()


def _input_contract(b: Bundle, cfg: Any, iq: InputQuant, s_in: float, zp: int) -> dict[str, Any]:
    """How the integer input formula compares with quantizing the float model's input.

    On the reference data: the int8 step inputs from int16 counts (the device
    contract) against ``quantize(step_inputs(x_float))`` (float normalization,
    then TFLite's quantization). They can differ only where the exact value sits
    within ~2^-16 steps of a rounding boundary, or where float32 normalization
    rounds across one.
    """
    from edge_runtime.preprocess import normalize
    from quantize.step_model import step_inputs

    ref = b.load_npz(contract.REFERENCE)
    if b.task == "classification":
        counts = ref["x_counts"]
    else:
        counts = ref["series_counts"][None]
    scale_c = channel_scales(b)
    pre = b.manifest["preprocess"]
    u = normalize(counts, scale_c, pre["mean"], pre["std"])
    via_counts = int8_step_inputs(cfg, quantize_counts(counts, iq), zp)
    via_float = contract.quantize(step_inputs(cfg, u), s_in, zp)
    diff = np.abs(via_counts.astype(np.int16) - via_float.astype(np.int16))
    return {
        "values": int(diff.size),
        "differ": int(np.count_nonzero(diff)),
        "max_diff_steps": int(diff.max()) if diff.size else 0,
        "clipped_fraction": float(
            np.mean((via_counts == -128) | (via_counts == 127)) if via_counts.size else 0.0
        ),
        "compared": "integer formula on int16 counts vs TFLite quantization of the float "
        "normalized input, every step input of reference.npz",
    }
