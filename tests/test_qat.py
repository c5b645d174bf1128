"""Quantization-aware fine-tuning: the fake-quant step against the converted int8 step,
and the qat stage as ``make demo`` runs it.

On the session's small real bundles (``tests/support.py``): BasicMotions with whole
1×4 blocks of every kernel zeroed at 75 % (the block4 pruner's mask, applied without
training: QAT and the arithmetic only need the zero structure) and the KDD-TSAD 135
forecaster (no front end):

- every tensor the fake-quant step mirrors equals the converted step's, op by op, at
  tolerance 0 int8 steps: the int8 weights, weight scales and int32 biases against
  the .tflite's own buffers; every intermediate against ``firmware_export.lower``'s
  numpy evaluation of the .tflite (TFLM's arithmetic, tested equal to the TFLM
  kernels elsewhere); every step's state and head output of whole chains against
  the TFLM interpreter;
- the one place where the arithmetic differs, the int8 input quantized in float32
  from the normalized input (the converter and ``contract.quantize`` divide in
  float64), is bounded by a measured figure, written beside the check;
- QAT leaves every pruning mask as it was;
- determinism: ``qat_finetune`` in this process and ``python -m quantize qat`` on a
  copy, same settings, give the same weights bit for bit and the same history;
- the stage: ``model_qat.keras`` is written when an epoch beats the pre-QAT model on
  validation, and then the int8 stage converts it and also the pre-QAT model, whose
  ``step_int8_ptq.tflite`` is byte for byte the step the bundle had without QAT; the
  parity stage reports ``float_pre_qat`` and the PTQ rows beside the QAT ones; when
  no epoch wins nothing is written (the manifest stays byte for byte);
- bad settings, a bad ``[qat]`` section and a bundle without the model: one line
  naming file and field.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from edge_runtime import contract
from edge_runtime.bundle import Bundle, BundleError
from edge_runtime.interpreter import StepInterpreter
from edge_runtime.tflite_reader import read_model
from firmware_export.lower import lower, run_step
from firmware_export.pattern import match
from quantize.__main__ import main as quantize_main
from quantize.bundle_io import QAT_MODEL, StageError, load_keras, model_config, source_model
from quantize.convert import calibration_pairs, convert_step
from quantize.qat import QAT_REPORT, masks_unchanged, qat_finetune
from quantize.qat_config import QATError, QATSettings, read_qat_config
from quantize.qat_spec import fc_params, read_act_spec
from quantize.qat_step import FakeQuantStep, int8_softmax, window_weights
from quantize.step_model import build_step_model, step_inputs
from tests.support import bundle_root, make_bundle

# fake-quant name -> firmware_export.lower trace name (per layer l)
_TRACE = {"gx": "gx", "gh": "gh", "zrs": "zr_add", "zr": "sigmoid", "rh": "r_mul",
          "hs": "h_add", "c": "tanh", "d": "h_sub", "zd": "z_mul", "h": "out_add"}  # fmt: skip

# Measured: the fake-quant input quantization (float32 u / s, rounded half away) against
# contract.quantize (float64) on the BasicMotions and KDD-TSAD reference inputs
# (every step input, 150,000+ values): 0 values differ. A float32 quotient can land on
# the other side of a .5 tie only within ~1e-7 relative of it, so the bound allows
# one step on at most 1e-4 of the values.
INPUT_MAX_STEPS = 1
INPUT_MAX_FRACTION = 1e-4
BIAS_LIMIT_STEPS = 64
SPARSITY = 0.75
CALIBRATION = 300  # calibration pairs, the same in the int8 stage and in QAT
# A short run: one epoch over the 96 training windows in batches of 16, from labels
# (the block-pruned model is untrained, so the labels have something to teach and the
# epoch beats the pre-QAT model on validation: 33.3 % -> 37.5 %), without XLA (a tiny
# data set starts sooner without; same arithmetic). Plumbing, masks and determinism:
# accuracy is measured on HAPT, see docs/architecture.md.
SETTINGS = {"epochs": 1, "batch_size": 16, "learning_rate": 1e-2, "distill": 0.0,
            "calibration_samples": CALIBRATION, "jit": False}  # fmt: skip


@pytest.fixture(scope="module")
def pruned_bm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bm with 75 % of every kernel zeroed in 1×4 blocks, converted by the int8 stage."""
    from edge_runtime.bundle import stage_writer
    from quantize.int8 import int8
    from quantize.prune import magnitude_mask, prunable_weights

    src = make_bundle("bm", bundle_root(tmp_path_factory))
    out = tmp_path_factory.mktemp("qat") / "bm"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("firmware"))
    model = load_keras(Bundle.open(out), contract.FLOAT_MODEL)
    for _, _, var in prunable_weights(model):
        w = np.asarray(var.numpy())
        var.assign(w * magnitude_mask(w, SPARSITY, "block4"))
    with stage_writer(out, "prune", config={"sparsity": SPARSITY, "granularity": "block4"}) as w:
        model.save(w.dir / contract.PRUNED_MODEL)
        w.add_file(contract.PRUNED_MODEL)
    int8(out, calibration_samples=CALIBRATION, arena=False)
    return out


@pytest.fixture(scope="module")
def anomaly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle("anomaly", bundle_root(tmp_path_factory))


def _model(bundle: Path) -> tuple[Bundle, object, object]:
    b = Bundle.open(bundle)
    name = "model_pruned.keras" if b.has("model_pruned.keras") else "model_float.keras"
    return b, model_config(b), load_keras(b, name)


def _convert(model, cfg, windows: np.ndarray) -> bytes:
    cal = calibration_pairs(model, cfg, windows, 300, 0)
    return convert_step(build_step_model(model, cfg), cal, state="unit")


def _windows(b: Bundle) -> np.ndarray:
    from edge_runtime.preprocess import normalize

    ref = b.load_npz(contract.REFERENCE)
    m = b.manifest
    scale = np.array([c["scale"] for c in m["dataset"]["channels"]])
    counts = ref["x_counts"] if b.task == "classification" else ref["series_counts"][None, :400]
    return normalize(counts, scale, m["preprocess"]["mean"], m["preprocess"]["std"]).astype(
        np.float32
    )


def _constants(tfl: bytes) -> dict[str, tuple[np.ndarray, tuple[float, ...], np.ndarray]]:
    """Weights, weight scales and biases of every FULLY_CONNECTED of the .tflite, by layer."""
    g = read_model(tfl)
    tags = ("front_end", "gru_1_gx", "gru_1_gh", "gru_2_gx", "gru_2_gh", "head")
    out = {}
    for op in g.operators:
        if op.opcode != "FULLY_CONNECTED":
            continue
        w_t, b_t = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        tag = next(t for p in w_t.name.split("/") for t in tags if p.startswith(t))
        out[tag] = (w_t.array(), w_t.scale, b_t.array())
    return out


def _chain(fq: FakeQuantStep, xs_q: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The fake-quant step over int8 step inputs ``(N, S, k·C)``: every recorded tensor."""
    n, s, _ = xs_q.shape
    states = fq.zero_states(n)
    rec_all: dict[str, list[np.ndarray]] = {}
    for j in range(s):
        q = tf.constant(xs_q[:, j], tf.int64)
        rec: dict[str, tf.Tensor] = {}
        states, _ = fq.step(q, tf.cast(q, tf.float32), states, record=rec)
        for k in names:
            rec_all.setdefault(k, []).append(rec[k].numpy())
    return {k: np.stack(v, 1) for k, v in rec_all.items()}


def _check_tensor_by_tensor(bundle: Path, zero_column: bool) -> dict[str, int]:
    b, cfg, model = _model(bundle)
    if zero_column:  # a pruned-away output column: the converter's bias-only row
        cell = model.get_layer("gru_1").cell
        r = cell.recurrent_kernel.numpy()
        r[:, 0] = 0.0
        cell.recurrent_kernel.assign(r)
    windows = _windows(b)
    tfl = _convert(model, cfg, windows)
    spec = read_act_spec(tfl, len(cfg.gru_units), cfg.has_front_end)
    fq = FakeQuantStep(cfg, window_weights(model, cfg))
    fq.assign(spec)

    # 1. weights, weight scales, biases: equal to the converter's, value for value
    consts = _constants(tfl)
    fw = fq.float_weights([np.asarray(w.numpy(), np.float32) for w in fq.weights])
    tags = {"fe": "front_end", "logits": "head"}
    for name, _, relu in fq.fc_layers():
        tag = tags.get(name) or f"gru_{name[2:]}_{name[:2]}"
        w_file, s_file, b_file = consts[tag]
        w, bias = fw[name]
        p = fc_params(w, bias, fq._fc_input(spec, name), spec[name], relu)
        assert np.array_equal(p["w_q"].T, w_file.astype(np.int64)), name
        assert np.array_equal(p["w_scale"], np.asarray(s_file, np.float32)), name
        # Exact, except where a row has no nonzero weight and its bias sits at the ±2^30
        # limit: there the converter's int32 is sometimes 2^30 − 64 (the float32 below
        # 2^30) where the float32 quotient rounds to 2^30 (measured: 3 of 9 such rows of
        # the pruned BasicMotions model); an output moves by 64 / 2^30 of the bias.
        b_file = b_file.astype(np.int64)
        at_limit = (np.abs(w).max(axis=0) == 0) & (np.abs(b_file) >= 2**30 - 64)
        assert np.array_equal(p["b_q"][~at_limit], b_file[~at_limit]), name
        assert np.abs(p["b_q"][at_limit] - b_file[at_limit]).max(initial=0) <= BIAS_LIMIT_STEPS

    # 2. the int8 input: float32 quantization vs contract.quantize (float64), bound above
    u = step_inputs(cfg, windows)
    q_ref = contract.quantize(u, spec["x"].scale, spec["x"].zero_point).astype(np.int64)
    q_fq = fq.quantize_input(tf.constant(u.reshape(-1, u.shape[-1])))[0].numpy()
    d = np.abs(q_fq.reshape(q_ref.shape) - q_ref)
    assert d.max() <= INPUT_MAX_STEPS and np.mean(d > 0) <= INPUT_MAX_FRACTION

    # 3. every intermediate tensor against the .tflite evaluated op by op (TFLM arithmetic)
    xs_q = q_ref.astype(np.int8)
    layers = range(1, len(cfg.gru_units) + 1)
    names = [f"{k}{layer}" for layer in layers for k in _TRACE] + ["logits"]
    names += ["fe"] if cfg.has_front_end else []
    got = _chain(fq, xs_q, names)
    low = lower(match(read_model(tfl)), cfg.n_channels, cfg.front_end_kernel, cfg.front_end_stride)
    n, s, _ = xs_q.shape
    compared = 0
    for w in range(n):
        h = [np.zeros(u, np.int8) for u in cfg.gru_units]
        for j in range(s):
            out = run_step(low, xs_q[w, j], h)
            tr = out["trace"]
            for layer in layers:
                for k, t in _TRACE.items():
                    assert np.array_equal(got[f"{k}{layer}"][w, j], tr[f"layer{layer}.{t}"]), (
                        k, layer, w, j)  # fmt: skip
                    compared += 1
            assert np.array_equal(got["logits"][w, j], tr["head"])
            if cfg.has_front_end:
                assert np.array_equal(got["fe"][w, j], tr["front_end"])
            h = out["h_out"]

    # 4. whole chains against the TFLM interpreter: every state and head output, tolerance 0
    with StepInterpreter(tfl, None, backend="tflm") as it:
        tl = it.chain(xs_q)
    for layer in layers:
        assert np.array_equal(got[f"h{layer}"], tl[contract.state_out(layer)].astype(np.int64))
    y = int8_softmax(got["logits"], spec["logits"]) if cfg.head == "softmax" else got["logits"]
    assert np.array_equal(np.asarray(y, np.int64), tl[contract.Y].astype(np.int64))
    return {"steps": n * s, "tensors_compared": compared}


def test_fake_quant_step_equals_int8_step_classifier(pruned_bm: Path) -> None:
    r = _check_tensor_by_tensor(pruned_bm, zero_column=True)
    assert r["steps"] > 0


def test_fake_quant_step_equals_int8_step_forecaster(anomaly: Path) -> None:
    _check_tensor_by_tensor(anomaly, zero_column=False)


def _toml(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


@pytest.fixture(scope="module")
def qat_runs(pruned_bm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run in this process, and the stage's command on a copy with the same settings."""
    s = QATSettings.from_dict(SETTINGS)
    model, report = qat_finetune(pruned_bm, s, progress=False)
    config = tmp_path_factory.mktemp("qat_cfg") / "bm.toml"
    config.write_text(
        "[qat]\nenabled = true\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in SETTINGS.items())
    )
    staged = tmp_path_factory.mktemp("qat_stage") / "bm"
    shutil.copytree(pruned_bm, staged)
    rc = quantize_main(["qat", "--bundle", str(staged), "--config", str(config)])
    return {"model": model, "report": report, "staged": staged, "rc": rc, "config": config}


def test_qat_never_changes_pruning_masks(pruned_bm: Path, qat_runs: dict) -> None:
    _, cfg, teacher = _model(pruned_bm)
    check = masks_unchanged(teacher, qat_runs["model"], cfg)
    assert check["unchanged"] and check["tensors"]
    assert any(t["zeros"] > 0 for t in check["tensors"].values())
    assert qat_runs["report"]["masks"]["unchanged"]
    # the run did train and was chosen: weights moved (else the mask check proves nothing)
    assert qat_runs["report"]["chosen_epoch"] == 1
    moved = [
        not np.array_equal(w0.numpy(), w1.numpy())
        for w0, w1 in zip(teacher.weights, qat_runs["model"].weights, strict=True)
    ]
    assert any(moved)


def test_qat_stage_is_deterministic(qat_runs: dict) -> None:
    """The command's model_qat.keras equals the in-process run bit for bit."""
    assert qat_runs["rc"] == 0
    b = Bundle.open(qat_runs["staged"])
    staged = load_keras(b, QAT_MODEL)
    for wa, wb in zip(qat_runs["model"].weights, staged.weights, strict=True):
        assert np.array_equal(wa.numpy(), wb.numpy()), wa.path
    assert b.read_json(QAT_REPORT)["history"] == qat_runs["report"]["history"]


def test_qat_stage_feeds_int8_and_parity(pruned_bm: Path, qat_runs: dict) -> None:
    """int8 converts model_qat.keras and, beside it, the pre-QAT model to the very step
    the bundle had (bytes equal); parity reports PTQ and QAT side by side."""
    from quantize.int8 import PTQ_FILE, int8
    from quantize.parity import check

    bundle = qat_runs["staged"]
    b = Bundle.open(bundle)
    assert source_model(b) == QAT_MODEL
    base = b.manifest["stages"]["qat"]["config"]["base_model"]
    assert base == {"file": contract.PRUNED_MODEL,
                    "sha256": b.artifacts[contract.PRUNED_MODEL]["sha256"]}  # fmt: skip
    int8(bundle, calibration_samples=CALIBRATION, arena=False)
    b = Bundle.open(bundle)
    before = Bundle.open(pruned_bm).read_bytes(contract.STEP_MODEL)
    assert b.read_bytes(PTQ_FILE) == before
    assert b.read_bytes(contract.STEP_MODEL) != before
    q = b.manifest["quantization"]
    assert q["source_model"]["file"] == QAT_MODEL
    assert q["ptq"]["source_model"]["file"] == contract.PRUNED_MODEL

    rep = check(bundle, progress=False)
    be = rep["backends"]
    assert rep["source_model"] == QAT_MODEL
    for name in ("float", "float_pre_qat", "float_unpruned", "litert", "litert_xnnpack",
                 "tflm", "litert_ptq", "litert_xnnpack_ptq", "tflm_ptq"):  # fmt: skip
        assert name in be, name
    assert be["float_pre_qat"]["model_file"] == contract.PRUNED_MODEL
    assert be["tflm_ptq"]["model_file"] == PTQ_FILE
    side = rep["qat"]["rows"]
    assert set(side) == {"float", "litert", "litert_xnnpack", "tflm"}
    for name, row in side.items():
        src = "float_pre_qat" if name == "float" else f"{name}_ptq"
        assert row["accuracy"] == {"ptq": be[src]["accuracy"], "qat": be[name]["accuracy"]}
    # the device thresholds come from the deployed (QAT) rows only
    assert rep["thresholds"]["measured"]["tflm_accuracy"] == be["tflm"]["accuracy"]
    assert "## PTQ vs QAT" in (bundle / "reports" / "parity.md").read_text()
    # the report's rows: the pre-QAT float model and the PTQ step beside the QAT rows
    from report.collect import Notes, build_row, row_specs

    specs = {r.key: r for r in row_specs(rep)}
    notes = Notes()
    for key in ("float", "float_pre_qat", "litert_ptq", "litert_xnnpack_ptq", "tflm_ptq"):
        row = build_row(specs[key], rep, "classification", str(bundle), notes)
        assert row["cells"]["accuracy"] == be[key]["accuracy"], key
    without = {r.key for r in row_specs({k: v for k, v in rep.items() if k != "qat"})}
    assert "float_unpruned" in without and not without & {"float_pre_qat", "tflm_ptq"}

    # a later prune (another model_pruned.keras) makes model_qat.keras stale: not converted
    stale = qat_runs["staged"].parent / "stale"
    shutil.copytree(bundle, stale)
    from edge_runtime.bundle import stage_writer

    with stage_writer(stale, "prune", config={"edited": True}) as w:
        m = load_keras(Bundle.open(stale), contract.FLOAT_MODEL)
        m.save(w.dir / contract.PRUNED_MODEL)
        w.add_file(contract.PRUNED_MODEL)
    assert source_model(Bundle.open(stale)) == contract.PRUNED_MODEL


def test_qat_not_chosen_writes_nothing(pruned_bm: Path, tmp_path: Path) -> None:
    """With no fine-tuned epoch (epochs = 0) the pre-QAT model wins: the bundle is unchanged."""
    from quantize.qat import qat_stage

    out = tmp_path / "bm"
    shutil.copytree(pruned_bm, out)
    before = (out / "manifest.json").read_bytes()
    report = qat_stage(out, QATSettings.from_dict({**SETTINGS, "epochs": 0}))
    assert report["chosen_epoch"] == 0
    assert (out / "manifest.json").read_bytes() == before
    assert not (out / QAT_MODEL).exists()


def test_bad_settings_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(QATError, match=r"^configs/har.toml: \[qat\]: ranges: expected one of"):
        QATSettings.from_dict({"ranges": "learned"}, "configs/har.toml")
    with pytest.raises(QATError, match=r"^c.toml: \[qat\]: epochs: expected an integer, found '3'"):
        QATSettings.from_dict({"epochs": "3"}, "c.toml")
    with pytest.raises(
        QATError, match=r"^c.toml: \[qat\]: unknown key 'epoch'; did you mean 'epochs'"
    ):
        QATSettings.from_dict({"epoch": 3}, "c.toml")
    with pytest.raises(QATError, match=r"^c.toml: \[qat\]: enabled: expected true or false"):
        QATSettings.from_dict({"enabled": "yes"}, "c.toml")
    with pytest.raises(QATError, match=r"^c.toml: \[qat\]: learning_rate: expected a value > 0"):
        QATSettings.from_dict({"learning_rate": 0}, "c.toml")
    assert QATSettings.from_dict({"enabled": True, "learning_rate": 1}).learning_rate == 1.0
    cfg = tmp_path / "c.toml"
    cfg.write_text("[qat]\nenabled = 1\n")
    with pytest.raises(QATError, match=r"c.toml: \[qat\]: enabled: expected true or false"):
        read_qat_config(cfg)
    # the command: exit 2, one line naming the file and the field (before reading a bundle)
    cfg.write_text("[qat]\nepochs = -1\n")
    assert quantize_main(["qat", "--bundle", str(tmp_path / "none"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("quantize: error: qat: ")
    assert f"{cfg}: [qat]: epochs: expected a value in [0, 1000], found -1" in err


def test_bundle_without_the_model_is_one_line(pruned_bm: Path, tmp_path: Path) -> None:
    out = tmp_path / "bm"
    shutil.copytree(pruned_bm, out)
    (out / "model_pruned.keras").unlink()
    with pytest.raises((StageError, BundleError)) as e:
        qat_finetune(out, QATSettings(epochs=0), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "model_pruned.keras" in msg
