"""Quantization-aware fine-tuning (QAT) of the GRU step: ``qat_finetune(bundle, settings)``.

The model the int8 stage would convert (``model_pruned.keras``, else
``model_float.keras``) is fine-tuned through :class:`quantize.qat_step.FakeQuantStep`,
whose forward pass is the converted int8 step bit for bit (TFLM's integer
arithmetic, its LOGISTIC/TANH tables, the state on its 1/128 grid, per-channel
symmetric int8 weights, the input on the device's int8 scale) and whose gradient
is the float op's (straight-through). The result is a window model of the same
family, which converts through the existing int8 path unchanged.

Activation ranges are the converter's own: the fine-tuned model is converted
(in process, the int8 stage's calibration: ``calibration_pairs`` over the
training windows, ``convert_step(state="unit")`` with saturated ranges capped)
and the scale and zero point of every tensor are read back from the ``.tflite``
(:func:`quantize.qat_spec.read_act_spec`). ``ranges="frozen"`` keeps the ranges of
the starting model for the whole run; ``ranges="recalibrate"`` adopts, at each
epoch, the ranges the converter gives the weights of the previous epoch's end.
Learned ranges (a trainable scale per tensor) are not offered: the int8 stage
calibrates the converted model itself, so a learned range would be replaced at
conversion time.

The loss (classifier) is, on the fake-quant head logits and on the same weights'
float head, each ``(1 − α)·CE(labels) + α·T²·KL(teacher ‖ student)`` with the
starting model as the frozen teacher (:func:`quantize.prune.distillation_loss`);
the float term (``float_weight``) keeps the float model the int8 model is
converted from close to the teacher too, which is what argmax agreement between
the two measures. A forecaster uses ``(1 − α)·MSE(targets) + α·MSE(teacher)``.
Pruning masks are fixed: pruned weights are masked in the forward pass and
re-zeroed after each update, and :func:`masks_unchanged` checks the result.

Model selection uses validation data only: after every epoch (and before the
first, the PTQ model itself) the model is converted and its int8 step (the
fake-quant step on the converter's ranges, which is TFLM's arithmetic) is run on
the validation windows; the epoch with the best score (classifier: int8 accuracy
+ argmax agreement with its own float model; forecaster: −int8 MSE) is kept.
Epoch 0 is a candidate, so QAT never returns a model that scores worse on
validation than the PTQ model.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edge_runtime import contract
from quantize.bundle_io import QAT_MODEL
from quantize.qat_config import QATSettings
from quantize.qat_spec import Quant, read_act_spec
from quantize.qat_step import FakeQuantStep, int8_softmax, window_weights
from train.model import ModelConfig

QAT_FILE = QAT_MODEL
QAT_REPORT = "reports/qat.json"


# --------------------------------------------------------------------------- conversion


def convert_spec(
    model: keras.Model, cfg: ModelConfig, x_train: np.ndarray, s: QATSettings
) -> tuple[bytes, dict[str, Quant]]:
    """Convert ``model`` as the int8 stage does (in this process) and read its ranges."""
    from quantize.convert import calibration_pairs, convert_step
    from quantize.graph import check_purity
    from quantize.step_model import build_step_model

    cal = calibration_pairs(model, cfg, x_train, s.calibration_samples, s.calibration_seed)
    tfl = convert_step(build_step_model(model, cfg), cal, state="unit")
    check_purity(tfl)
    return tfl, read_act_spec(tfl, len(cfg.gru_units), cfg.has_front_end)


# --------------------------------------------------------------------------- masks


def prune_masks(model: keras.Model, cfg: ModelConfig) -> dict[int, np.ndarray]:
    """``{weight position: 0/1 mask}`` of every kernel with zeros (what pruning left)."""
    masks = {}
    for i, w in enumerate(window_weights(model, cfg)):
        if len(w.shape) < 2:
            continue
        v = np.asarray(w.numpy())
        if np.any(v == 0) and v.ndim >= 2 and v.shape[-1] > 0 and not _is_bias(v):
            masks[i] = (v != 0).astype(np.float32)
    return masks


def _is_bias(v: np.ndarray) -> bool:
    return v.ndim == 2 and v.shape[0] == 2  # a GRU bias (2, 3U)


def masks_unchanged(before: keras.Model, after: keras.Model, cfg: ModelConfig) -> dict[str, Any]:
    """Whether every weight that is zero in ``before`` is zero in ``after`` (and only those)."""
    out: dict[str, Any] = {"tensors": {}, "unchanged": True}
    for wb, wa in zip(window_weights(before, cfg), window_weights(after, cfg), strict=True):
        b, a = np.asarray(wb.numpy()), np.asarray(wa.numpy())
        if len(b.shape) < 2 or _is_bias(b):
            continue
        zb, za = b == 0, a == 0
        same = bool(np.array_equal(zb, za))
        out["tensors"][wb.path] = {
            "zeros": int(zb.sum()),
            "zeros_after": int(za.sum()),
            "same": same,
        }
        out["unchanged"] &= same
    return out


# --------------------------------------------------------------------------- data


def _step_inputs(cfg: ModelConfig, windows: np.ndarray) -> np.ndarray:
    w = np.asarray(windows, np.float32)
    return contract.step_inputs(w, cfg.front_end_kernel, cfg.front_end_stride, 0.0).astype(
        np.float32
    )


def _augment(x: np.ndarray, a: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """The train stage's augmentation (:class:`train.fit.Augmented`) of one batch."""
    from train.fit import _rotation

    mean, std = np.asarray(a["mean"], np.float32), np.asarray(a["std"], np.float32)
    phys = x * std + mean
    for b in range(len(x)):
        r = _rotation(rng, a["rotate_deg"]).astype(np.float32)
        gain = np.float32(1.0 + rng.uniform(-a["scale"], a["scale"]))
        for g in a["groups"]:
            phys[b][:, g] = gain * (phys[b][:, g] @ r.T)
    return ((phys - mean) / std).astype(np.float32)


def _step_targets(cfg: ModelConfig, y: np.ndarray) -> np.ndarray:
    """Forecast targets at the step positions (every stride-th sample)."""
    return np.asarray(y, np.float32)[:, :: cfg.front_end_stride]


# --------------------------------------------------------------------------- the runner


class _Runner:
    """Traced functions (XLA) over one FakeQuantStep: training step and evaluation."""

    def __init__(self, fq: FakeQuantStep, cfg: ModelConfig, s: QATSettings, classify: bool) -> None:
        self.fq, self.cfg, self.s, self.classify = fq, cfg, s, classify
        self.opt = keras.optimizers.Adam(s.learning_rate, clipnorm=s.clipnorm)
        self.opt.build(fq.weights)
        jit = s.jit
        self.train_fn = tf.function(self._train_step, jit_compile=jit, reduce_retracing=True)
        self.eval_fn = tf.function(self._forward, jit_compile=jit, reduce_retracing=True)

    def _forward(self, xs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(q logits, v logits, float logits): last step (classifier) or every step."""
        fq = self.fq
        n = tf.shape(xs)[0]
        steps = xs.shape[1]
        st = fq.zero_states(n)
        fst = [tf.zeros((n, u), tf.float32) for u in self.cfg.gru_units]
        n_out = self.cfg.n_outputs
        if self.classify:
            for j in tf.range(steps - 1):
                u = xs[:, j]
                qx, vx = fq.quantize_input(u)
                st, _ = fq.step(qx, vx, st, head=False)
                fst, _ = fq.float_step(u, fst, head=False)
            u = xs[:, steps - 1]
            qx, vx = fq.quantize_input(u)
            st, (ql, vl) = fq.step(qx, vx, st)
            fst, fl = fq.float_step(u, fst)
            return ql, vl, fl
        qa = tf.TensorArray(tf.int64, size=steps)
        va = tf.TensorArray(tf.float32, size=steps)
        fa = tf.TensorArray(tf.float32, size=steps)
        for j in tf.range(steps):
            u = xs[:, j]
            qx, vx = fq.quantize_input(u)
            st, (ql, vl) = fq.step(qx, vx, st)
            fst, fl = fq.float_step(u, fst)
            qa = qa.write(j, ql)
            va = va.write(j, vl)
            fa = fa.write(j, fl)

        def stack(a: tf.TensorArray) -> tf.Tensor:
            return tf.reshape(tf.transpose(a.stack(), (1, 0, 2)), (n, steps, n_out))

        return stack(qa), stack(va), stack(fa)

    def _loss(
        self, y: tf.Tensor, teacher: tf.Tensor, out: tf.Tensor, weight: tf.Tensor
    ) -> tf.Tensor:
        a = self.s.distill
        if self.classify:
            from quantize.prune import distillation_loss

            return distillation_loss(y, tf.nn.softmax(out), teacher, a, self.s.temperature, weight)
        err = (1.0 - a) * tf.square(out - y) + a * tf.square(out - teacher)
        per = tf.reduce_mean(err, axis=-1) * weight
        return tf.reduce_sum(per) / tf.maximum(tf.reduce_sum(weight), 1.0)

    def _consistency(self, vl: tf.Tensor, fl: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
        """The int8 head against the float head of the same weights (gradient to both)."""
        if self.classify:
            t = self.s.temperature
            lf = tf.nn.log_softmax(fl / t)
            lq = tf.nn.log_softmax(vl / t)
            return t * t * tf.reduce_mean(tf.reduce_sum(tf.exp(lf) * (lf - lq), axis=-1))
        per = tf.reduce_mean(tf.square(vl - fl), axis=-1) * weight
        return tf.reduce_sum(per) / tf.maximum(tf.reduce_sum(weight), 1.0)

    def _train_step(
        self, xs: tf.Tensor, y: tf.Tensor, teacher: tf.Tensor, weight: tf.Tensor
    ) -> tf.Tensor:
        variables = self.fq.weights
        with tf.GradientTape() as tape:
            _, vl, fl = self._forward(xs)
            loss = self._loss(y, teacher, vl, weight)
            if self.s.float_weight > 0:
                loss = loss + self.s.float_weight * self._loss(y, teacher, fl, weight)
            if self.s.consistency > 0:
                loss = loss + self.s.consistency * self._consistency(vl, fl, weight)
        grads = tape.gradient(loss, variables)
        self.opt.apply_gradients(zip(grads, variables, strict=True))
        return loss


def _apply_masks(fq: FakeQuantStep) -> None:
    for i, m in fq.masks.items():
        w = fq.weights[i]
        w.assign(w.numpy() * m.numpy())


def evaluate_int8(
    runner: _Runner,
    spec: dict[str, Quant],
    xs: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    chunk: int = 1024,
) -> dict[str, Any]:
    """The int8 step (TFLM's arithmetic on ``spec``) and the float step on ``xs``: metrics."""
    fq = runner.fq
    fq.assign(spec)
    qs, fs = [], []
    for i in range(0, len(xs), chunk):
        q, _, f = runner.eval_fn(tf.constant(xs[i : i + chunk]))
        qs.append(q.numpy())
        fs.append(f.numpy())
    q = np.concatenate(qs)
    f = np.concatenate(fs)
    if runner.classify:
        probs_q = int8_softmax(q, spec["logits"])
        pred_q = probs_q.argmax(-1)
        pred_f = f.argmax(-1)
        acc_q = float(np.mean(pred_q == y))
        acc_f = float(np.mean(pred_f == y))
        agree = float(np.mean(pred_q == pred_f))
        return {
            "int8_accuracy": acc_q,
            "float_accuracy": acc_f,
            "argmax_agreement": agree,
            "score": acc_q + agree,
        }
    lq = spec["logits"]
    yq = lq.scale * (q.astype(np.float64) - lq.zero_point)
    w = np.ones(yq.shape[:2]) if weight is None else weight

    def mse(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sum(np.mean((a - b) ** 2, -1) * w) / max(np.sum(w), 1.0))

    return {
        "int8_mse": mse(yq, y),
        "float_mse": mse(f, y),
        "int8_vs_float_rmse": math.sqrt(mse(yq, f)),
        "score": -mse(yq, y),
    }


def qat_finetune(
    bundle_dir: str | Path,
    settings: QATSettings | None = None,
    *,
    data_path: str | None = None,
    progress: bool = True,
) -> tuple[keras.Model, dict[str, Any]]:
    """Fine-tune the bundle's model through the fake-quant int8 step; returns it and a report.

    Reads ``model_pruned.keras`` (else ``model_float.keras``) and the training data;
    writes nothing. The report holds the settings, the per-epoch validation figures
    (epoch 0 = the PTQ model), the chosen epoch, the mask check and wall times.
    """
    from quantize.bundle_io import StageError, load_keras, model_config, open_bundle, pre_qat_model
    from quantize.prune import clone, is_classifier
    from train.arrays import training_arrays
    from train.fit import configure_tf

    s = settings or QATSettings()
    t_start = time.perf_counter()
    configure_tf()
    b = open_bundle(bundle_dir)
    source = pre_qat_model(b)
    if not b.has(source):
        raise StageError(
            f"{b.root / source}: missing: QAT fine-tunes the model the int8 stage converts"
        )
    cfg = model_config(b)
    teacher = load_keras(b, source)
    classify = is_classifier(teacher)
    d = training_arrays(b, data_path)
    keras.utils.set_random_seed(s.seed)
    student = clone(teacher)
    masks = prune_masks(teacher, cfg)

    x_train = np.asarray(d.x_train, np.float32)
    xs_tr, xs_val = _step_inputs(cfg, x_train), _step_inputs(cfg, d.x_val)
    if classify:
        y_tr = np.asarray(d.y_train, np.int64)
        y_val = np.asarray(d.y_val, np.int64)
        t_tr = np.asarray(teacher.predict(x_train, batch_size=512, verbose=0), np.float32)
        w_tr = np.ones(len(y_tr), np.float32)
        w_val = None
    else:
        y_tr, y_val = _step_targets(cfg, d.y_train), _step_targets(cfg, d.y_val)
        t_tr = np.asarray(teacher.predict(x_train, batch_size=512, verbose=0), np.float32)
        t_tr = _step_targets(cfg, t_tr)
        w_tr = np.asarray(d.sample_weight, np.float32)[:, :: cfg.front_end_stride]
        w_val = np.ones(y_val.shape[:2])
        train_cfg = b.manifest["stages"]["train"]["config"].get("train", {})
        w_val[:, : int(train_cfg.get("warmup", 0))] = 0.0

    fq = FakeQuantStep(cfg, window_weights(student, cfg), masks)
    runner = _Runner(fq, cfg, s, classify)

    t0 = time.perf_counter()
    _, spec = convert_spec(student, cfg, x_train, s)
    t_convert = [time.perf_counter() - t0]
    start_spec = spec
    val0 = evaluate_int8(runner, spec, xs_val, y_val, w_val)
    history = [{"epoch": 0, **val0, "ranges_from": "converter, starting model"}]
    best = (val0["score"], 0, [w.numpy().copy() for w in student.weights])
    if progress:
        print(f"[quantize] qat: epoch 0 (PTQ) val {_fmt(val0)}")

    rng = np.random.default_rng(s.seed)
    train_spec = start_spec
    t_train = 0.0
    augment = d.augment if (s.augment and classify) else None
    teacher_fn = tf.function(lambda x: teacher(x, training=False), reduce_retracing=True)
    cw = d.class_weight if classify else None
    for epoch in range(1, s.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(len(xs_tr))
        if s.max_train_windows:
            order = rng.permutation(np.sort(order[: s.max_train_windows]))
        losses = []
        for i in range(0, len(order), s.batch_size):
            idx = np.sort(order[i : i + s.batch_size])
            if augment:
                xb = _augment(x_train[idx], augment, rng)
                xsb = _step_inputs(cfg, xb)
                tb = np.asarray(teacher_fn(tf.constant(xb)), np.float32)
            else:
                xsb, tb = xs_tr[idx], t_tr[idx]
            wb = w_tr[idx]
            if cw is not None:
                wb = np.array([cw[int(c)] for c in y_tr[idx]], np.float32)
            fq.assign(train_spec)
            loss = runner.train_fn(
                tf.constant(xsb), tf.constant(y_tr[idx]), tf.constant(tb), tf.constant(wb)
            )
            _apply_masks(fq)
            losses.append(float(loss))
        t_train += time.perf_counter() - t0
        t0 = time.perf_counter()
        _, spec = convert_spec(student, cfg, x_train, s)
        t_convert.append(time.perf_counter() - t0)
        val = evaluate_int8(runner, spec, xs_val, y_val, w_val)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **val})
        if progress:
            print(f"[quantize] qat: epoch {epoch} loss {np.mean(losses):.4f} val {_fmt(val)}")
        if val["score"] > best[0]:
            best = (val["score"], epoch, [w.numpy().copy() for w in student.weights])
        if s.ranges == "recalibrate":
            train_spec = spec

    student.set_weights(best[2])
    mask_check = masks_unchanged(teacher, student, cfg)
    if not mask_check["unchanged"]:
        raise RuntimeError(f"QAT changed the pruning masks: {mask_check}")
    report = {
        "source_model": source,
        "source_sha256": b.artifacts[source]["sha256"],
        "settings": s.to_dict(),
        "task": "classification" if classify else "forecast",
        "history": history,
        "chosen_epoch": best[1],
        "selection": "validation only: classifier int8 accuracy + argmax agreement with its "
        "own float model; forecaster -int8 MSE; epoch 0 (the PTQ model) is a candidate",
        "masks": mask_check,
        "ranges": {
            "mode": s.ranges,
            "start": {k: v.to_list() for k, v in start_spec.items()},
        },
        "train_windows": int(
            len(xs_tr) if not s.max_train_windows else min(len(xs_tr), s.max_train_windows)
        ),
        "seconds": {
            "train": round(t_train, 1),
            "convert_and_validate": round(float(np.sum(t_convert)), 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
    }
    return student, report


def _fmt(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {x:.4f}" for k, x in v.items() if isinstance(x, float))


def write_qat(bundle_dir: str | Path, model: keras.Model, report: dict[str, Any]) -> None:
    """Write ``model_qat.keras`` and ``reports/qat.json`` into the bundle (stage ``qat``).

    The stage's config records the model it was fine-tuned from (file and sha256):
    :func:`quantize.bundle_io.source_model` converts ``model_qat.keras`` only while
    that model is unchanged."""
    from edge_runtime.bundle import stage_writer

    config = {
        "command": "qat",
        "base_model": {"file": report["source_model"], "sha256": report["source_sha256"]},
        **report["settings"],
    }
    with stage_writer(bundle_dir, "qat", config=config) as w:
        w.versions.update({"tensorflow": tf.__version__, "keras": keras.__version__})
        model.save(w.dir / QAT_FILE)
        w.add_file(QAT_FILE)
        w.write_json(QAT_REPORT, report)


def qat_stage(
    bundle_dir: str | Path, settings: QATSettings, *, data_path: str | None = None
) -> dict[str, Any]:
    """``python -m quantize qat``: fine-tune, and keep the result only when validation chose it.

    When an epoch after 0 scores best on validation, ``model_qat.keras`` and
    ``reports/qat.json`` are written (the int8 stage then converts the QAT model).
    When epoch 0 (the pre-QAT model) wins, nothing is written, so the int8 stage
    converts exactly what it converted before; a QAT model left by an earlier run
    is removed. Returns the report."""
    from edge_runtime.bundle import stage_writer
    from quantize.bundle_io import open_bundle

    model, report = qat_finetune(bundle_dir, settings, data_path=data_path)
    h = report["history"]
    best, first = h[report["chosen_epoch"]], h[0]
    if report["chosen_epoch"] > 0:
        write_qat(bundle_dir, model, report)
        print(
            f"[quantize] qat: wrote {QAT_FILE} (epoch {report['chosen_epoch']}); validation "
            f"{_fmt(first)} -> {_fmt(best)}; {report['seconds']['total']} s"
        )
        return report
    b = open_bundle(bundle_dir)
    if b.has(QAT_FILE) or b.has(QAT_REPORT):
        with stage_writer(bundle_dir, "qat", config={"command": "qat", "chosen": False}) as w:
            for name in (QAT_FILE, QAT_REPORT):
                if w.manifest["artifacts"].get(name):
                    w.remove(name)
    print(
        f"[quantize] qat: no epoch beat the pre-QAT model on validation ({_fmt(first)}); "
        f"nothing written; {report['seconds']['total']} s"
    )
    return report
