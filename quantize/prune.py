"""Magnitude pruning of the tinygru model family (Keras 3, no tensorflow-model-optimization).

What is pruned
--------------
The kernels of every layer that multiplies: ``front_end`` (Conv1D kernel), each
``gru_N`` (``kernel`` and ``recurrent_kernel``) and ``head`` (Dense kernel).
Biases are never pruned. Every tensor gets the same sparsity target (layer-wise
masks): a tensor of n weights loses ``round(target · n)`` of them, so a small
layer is never emptied to spare a large one. The target (the manifest's
``sparsity.target``, e.g. 75 %) is zeros / weights over all these kernels
together, biases not counted. ``PruneSettings.exclude`` leaves named layers
dense: with few inputs per output unit (a head of 8 inputs is 2 blocks per
class) 75 % in blocks can remove every input of a class, which then can never
be predicted; ``exclude=("head",)`` avoids that. With ``rebalance`` (default)
the other tensors then prune ``target · n_all / n_pruned`` each, so the overall
sparsity stays the target; without it they prune ``target`` and the model ends
less sparse.

Each tensor is seen as a 2-D matrix ``(in, out)``, input rows by output units:
the Dense and GRU kernels as they are, the Conv1D kernel ``(k, C, F)`` reshaped to
``(k·C, F)`` (row ``i·C + c``: channel c of the i-th oldest sample, the layout of
the step model's ``x`` input).

Granularity
-----------
- ``"weight"``: single weights, smallest ``|w|`` first (ties broken by flat index,
  so masks are deterministic). The tensor loses exactly ``round(target · n)``
  weights (half rounds up).
- ``"block4"`` (``block`` = 4): blocks of 4 consecutive input rows of one output
  column, ``w[4b : 4b+4, j]``. When ``in`` is not a multiple of 4 the last rows of
  each column form a shorter block of their own (no padding weights). A block's
  score is its L2 norm divided by ``sqrt(len)`` (the RMS): for full blocks this
  ranks exactly as the L2 norm, and a short last block is not favoured for being
  short. Whole blocks are removed, lowest score first (ties by block index, in
  column order), as many as bring the pruned count closest to
  ``round(target · n)``: within half a block (2 weights) of it.

Schedule (Zhu & Gupta, 2017)
----------------------------
Masks are recomputed every ``Δt`` optimizer steps at

    s_t = s_f + (s_i − s_f) · (1 − (t − t0) / (n·Δt))³,   t = t0, t0+Δt, …, t0+n·Δt

with ``s_i = 0``, ``s_f = target`` and ``t0 = 0``, then held at ``s_f``. After
EVERY optimizer step a callback assigns ``w · mask`` so a pruned weight stays
exactly zero whatever the optimizer does. The ramp covers ``ramp_fraction`` of
``epochs`` (rounded to whole multiples of ``Δt``); the remaining epochs fine-tune
at the final masks with early stopping on validation loss, restoring the best
weights and then re-applying the masks. The fine-tuning phase may run at its own,
lower learning rate (``finetune_learning_rate``).

Training signal (classifiers)
-----------------------------
- Augmentation: when the bundle's train stage used random sensor rotation and
  gain (``[train] augment_*``), ramp and fine-tuning see the same augmented
  batches (:class:`train.fit.Augmented`); ``augment=False`` turns it off.
- Distillation (Hinton et al., 2015): with ``distill = α > 0`` the loss is
  ``(1 − α)·CE(labels) + α·T²·KL(q_teacher ‖ q_student)``, ``q`` the outputs
  softened at temperature ``T``, the teacher being the dense model itself
  (frozen, run on the same augmented batch). Validation loss, and so early
  stopping, stays the plain cross-entropy.

Defaults: chosen by validation accuracy on the HAPT validation subjects
(conv32-gru32, 7,526 parameters, dense float val 94.36 % / test 94.33 %), test
reported only. 75 %, block4, seed 0; accuracy in % of windows:

    run                                               val    test   int8 LiteRT / TFLM
    30 epochs, lr 1e-3, patience 5, labels only      91.68  92.00   91.34 / 91.23
    + augmentation                                    92.93  92.69
    + augmentation, α 0.5 T 2                         93.88  92.17
    60 epochs, fine-tune 3e-4, patience 10, aug       93.12  92.59
    same, α 0.5 T 2                                   92.35  93.42   93.18 / 93.04
    80 epochs, fine-tune 1e-4, patience 15, α 0.5 T 2 92.73  94.15
    60 epochs, fine-tune 3e-4, patience 10, α 0.9 T 4 93.98  94.85   94.19 / 94.22  (default)
    80 epochs, same                                   93.31  94.33
    the defaults, seed 1                              94.26  94.85   93.88 / 93.81
    single weights, the defaults                      93.59  94.47   94.57 / 94.54

Entry points: :func:`prune_model`, :func:`sparsity_report`,
:func:`block_structure_ok`, :func:`sweep`, :func:`sweep_png`, and :func:`run`
(a bundle in, ``model_pruned.keras`` + ``reports/prune.json`` + the manifest's
``sparsity`` section out) for the ``python -m quantize prune`` command.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from edge_runtime import contract, metrics
from edge_runtime.contract import round_half_away_int

GRANULARITIES: tuple[str, ...] = ("weight", "block4")
PRUNED_LAYERS = ("front_end", "head")  # plus every "gru_N"
BLOCK_SCORE = "rms"  # L2 norm / sqrt(block length)
TARGET_DEFINITION = (
    "zeros / weights over every prunable kernel (front_end, gru_N kernel and "
    "recurrent_kernel, head; biases not counted); excluded layers count as dense "
    "weights, and with rebalance the pruned tensors make up for them"
)


@dataclass(frozen=True)
class PruneSettings:
    target: float = 0.75
    granularity: str = "weight"  # "weight" | "block4"
    block: int = 4  # input rows per block with granularity "block4" (4 unless testing)
    epochs: int = 60  # ramp + fine-tuning, at most
    ramp_fraction: float = 0.5  # share of `epochs` spent ramping the sparsity
    frequency: int = 10  # Δt: optimizer steps between mask updates
    learning_rate: float = 1e-3
    patience: int = 10
    seed: int = 0
    batch_size: int = 64
    clipnorm: float = 1.0
    exclude: tuple[str, ...] = ()  # layer names left dense, e.g. ("head",)
    rebalance: bool = True  # with exclude: the other tensors prune more, overall = target
    finetune_learning_rate: float | None = 3e-4  # None: learning_rate throughout
    distill: float = 0.9  # α: weight of the KL term to the dense teacher (0 = labels only)
    temperature: float = 4.0  # T: softening of teacher and student outputs in the KL term
    augment: bool = True  # the train stage's augmentation, when it had one (classifiers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"prune.target: expected 0 <= target < 1, found {self.target}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"prune.granularity: expected one of {list(GRANULARITIES)}, "
                f"found {self.granularity!r}"
            )
        if self.block < 1:
            raise ValueError(f"prune.block: expected >= 1, found {self.block}")
        if self.epochs < 2:
            raise ValueError(f"prune.epochs: expected >= 2 (ramp + fine-tune), found {self.epochs}")
        if not 0.0 < self.ramp_fraction < 1.0:
            raise ValueError(
                f"prune.ramp_fraction: expected 0 < fraction < 1, found {self.ramp_fraction}"
            )
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"prune.distill: expected 0 <= alpha <= 1, found {self.distill}")
        if self.temperature <= 0:
            raise ValueError(f"prune.temperature: expected > 0, found {self.temperature}")
        if self.finetune_learning_rate is not None and self.finetune_learning_rate <= 0:
            raise ValueError(
                f"prune.finetune_learning_rate: expected > 0, found {self.finetune_learning_rate}"
            )
        for name in ("frequency", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"prune.{name}: expected >= 1, found {getattr(self, name)}")

    @property
    def pattern(self) -> str:
        """The name reported per tensor: ``"weight"`` or ``f"block{block}"``."""
        return "weight" if self.granularity == "weight" else f"block{self.block}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- schedule


def polynomial_sparsity(
    step: int,
    target: float,
    ramp_steps: int,
    frequency: int,
    initial: float = 0.0,
    power: int = 3,
) -> float:
    """Sparsity in force after optimizer step ``step`` (Zhu & Gupta, t0 = 0).

    The value changes only at multiples of ``frequency`` and equals ``target``
    exactly from ``ramp_steps`` on (``ramp_steps`` is a multiple of ``frequency``).
    """
    if ramp_steps <= 0 or step >= ramp_steps:
        return float(target)
    t = (max(step, 0) // frequency) * frequency
    return float(target + (initial - target) * (1.0 - t / ramp_steps) ** power)


def ramp_plan(settings: PruneSettings, steps_per_epoch: int) -> dict[str, int]:
    """Steps and epochs of the ramp: ``n·Δt`` steps, whole epochs to cover them."""
    want = settings.ramp_fraction * settings.epochs * steps_per_epoch
    n = max(1, round(want / settings.frequency))
    ramp_steps = n * settings.frequency
    ramp_epochs = min(settings.epochs - 1, math.ceil(ramp_steps / steps_per_epoch))
    return {
        "n_updates": n,
        "ramp_steps": ramp_steps,
        "ramp_epochs": ramp_epochs,
        "finetune_epochs": settings.epochs - ramp_epochs,
    }


# --------------------------------------------------------------------------- masks


def _matrix(w: np.ndarray) -> np.ndarray:
    """The (in, out) view of a kernel: rows are inputs, columns output units."""
    w = np.asarray(w)
    if w.ndim < 2:
        raise ValueError(f"expected a kernel of rank >= 2, found shape {w.shape}")
    return w.reshape(-1, w.shape[-1])


def _block_ids(rows: int, cols: int, block: int) -> tuple[np.ndarray, int]:
    """Block index of every (row, col) of an (in, out) matrix, numbered column by column."""
    per_col = -(-rows // block)
    ids = (np.arange(rows)[:, None] // block) + per_col * np.arange(cols)[None, :]
    return ids, per_col * cols


def prune_count(n: int, sparsity: float) -> int:
    """Weights a tensor of n loses at ``sparsity``: ``sparsity · n`` rounded half away from zero."""
    return round_half_away_int(sparsity * n)


def magnitude_mask(w: np.ndarray, sparsity: float, granularity: str, block: int = 4) -> np.ndarray:
    """A keep-mask (float32, 1 keep / 0 prune) of ``w``'s shape; see the module doc."""
    w = np.asarray(w, dtype=np.float64)
    n = w.size
    want = prune_count(n, sparsity)
    if want <= 0:
        return np.ones(w.shape, np.float32)
    if granularity == "weight":
        order = np.argsort(np.abs(w).ravel(), kind="stable")
        keep = np.ones(n, np.float32)
        keep[order[:want]] = 0.0
        return keep.reshape(w.shape)
    if granularity != "block4":
        raise ValueError(
            f"granularity: expected one of {list(GRANULARITIES)}, found {granularity!r}"
        )
    m = _matrix(w)
    ids, n_blocks = _block_ids(*m.shape, block)
    sizes = np.bincount(ids.ravel(), minlength=n_blocks)
    sq = np.bincount(ids.ravel(), weights=(m * m).ravel(), minlength=n_blocks)
    score = np.sqrt(sq / sizes)
    order = np.argsort(score, kind="stable")
    cum = np.concatenate([[0], np.cumsum(sizes[order])])
    k = int(np.argmin(np.abs(cum - want)))
    pruned = np.zeros(n_blocks, bool)
    pruned[order[:k]] = True
    return (~pruned[ids]).astype(np.float32).reshape(w.shape)


def block_structure_ok(weights: np.ndarray, block: int = 4) -> bool:
    """Whether the zeros of a kernel come in whole blocks.

    Every block (``block`` consecutive input rows of one output column of the
    ``(in, out)`` view; the last block of a column may be shorter) is either all
    zero or holds no zero at all. Meant for float weights or masks: after int8
    quantization a kept weight may round to 0 and break this.
    """
    m = _matrix(weights)
    ids, n_blocks = _block_ids(*m.shape, block)
    zeros = np.bincount(
        ids.ravel(), weights=(m == 0).ravel().astype(np.float64), minlength=n_blocks
    )
    sizes = np.bincount(ids.ravel(), minlength=n_blocks)
    return bool(np.all((zeros == 0) | (zeros == sizes)))


# --------------------------------------------------------------------------- model access


def prunable_weights(model: keras.Model) -> list[tuple[str, str, keras.Variable]]:
    """(layer, weight name, variable) of every prunable kernel, in layer order."""
    out = []
    for layer in model.layers:
        name = layer.name
        if name.startswith("gru_") and isinstance(layer, keras.layers.GRU):
            out.append((name, "kernel", layer.cell.kernel))
            out.append((name, "recurrent_kernel", layer.cell.recurrent_kernel))
        elif name in PRUNED_LAYERS and getattr(layer, "kernel", None) is not None:
            out.append((name, "kernel", layer.kernel))
    if not out:
        raise ValueError(f"model {model.name!r}: no prunable layer (front_end, gru_N, head) found")
    return out


def tensor_key(layer: str, weight: str) -> str:
    return f"{layer}/{weight}"


def detect_pattern(w: np.ndarray, block: int = 4) -> str:
    """ "dense" (no zero), f"block{block}" (zeros in whole blocks) or "weight"."""
    w = np.asarray(w)
    if not np.any(w == 0):
        return "dense"
    return f"block{block}" if block_structure_ok(w, block) else "weight"


def sparsity_report(
    model: keras.Model, pattern: str | None = None, target: float | None = None, block: int = 4
) -> dict[str, Any]:
    """Exact zeros per prunable tensor of any model of the family.

    ``pattern`` names how the model was pruned; when None it is read from the
    zeros (:func:`detect_pattern`). Returns ``{"tensors": [...], "overall",
    "n_zero", "n_total"}``; overall = zeros / weights over the prunable tensors.
    """
    rows = []
    for layer, wname, var in prunable_weights(model):
        w = np.asarray(var.numpy())
        n_zero = int(np.count_nonzero(w == 0))
        rows.append(
            {
                "layer": layer,
                "weight": wname,
                "shape": list(w.shape),
                "pattern": pattern or detect_pattern(w, block),
                "target": target,
                "achieved": n_zero / w.size,
                "n_zero": n_zero,
                "n_total": int(w.size),
            }
        )
    n_zero = sum(r["n_zero"] for r in rows)
    n_total = sum(r["n_total"] for r in rows)
    return {
        "tensors": rows,
        "overall": n_zero / n_total,
        "n_zero": n_zero,
        "n_total": n_total,
    }


def manifest_section(report: dict[str, Any], settings: PruneSettings, model_file: str) -> dict:
    """The manifest's ``sparsity`` section: pattern and achieved sparsity per tensor."""
    return {
        "model": model_file,
        "granularity": settings.granularity,
        "block": settings.block if settings.granularity == "block4" else 1,
        "block_layout": "consecutive input rows of one output column of the (in, out) kernel",
        "block_score": BLOCK_SCORE,
        "target": settings.target,
        "target_definition": TARGET_DEFINITION,
        "exclude": list(settings.exclude),
        "rebalance": settings.rebalance,
        "overall": report["overall"],
        "tensors": {
            tensor_key(r["layer"], r["weight"]): {
                "shape": r["shape"],
                "pattern": r["pattern"],
                "target": r["target"],
                "achieved": r["achieved"],
                "n_zero": r["n_zero"],
                "n_total": r["n_total"],
            }
            for r in report["tensors"]
        },
    }


# --------------------------------------------------------------------------- training


def is_classifier(model: keras.Model) -> bool:
    """A softmax head means a classifier; otherwise a forecaster (MSE)."""
    head = model.get_layer("head")
    return getattr(head, "activation", None) is keras.activations.softmax


class MaskCallback(keras.callbacks.Callback):
    """Holds one keep-mask per prunable tensor and re-applies them after every step.

    With ``ramp_steps > 0`` the masks follow :func:`polynomial_sparsity`, recomputed
    by magnitude every ``frequency`` steps; otherwise they stay as they are.
    """

    def __init__(
        self,
        tensors: list[tuple[str, str, keras.Variable]],
        settings: PruneSettings,
        ramp_steps: int = 0,
        target: float | None = None,
    ) -> None:
        super().__init__()
        self.tensors = tensors
        self.settings = settings
        self.ramp_steps = ramp_steps
        self.target = settings.target if target is None else float(target)
        self.step = 0
        self.sparsity = 0.0
        self.masks = [np.ones(v.shape, np.float32) for _, _, v in tensors]
        self.updates: list[tuple[int, float]] = []

    def update_masks(self, sparsity: float) -> None:
        s = self.settings
        self.masks = [
            magnitude_mask(np.asarray(v.numpy()), sparsity, s.granularity, s.block)
            for _, _, v in self.tensors
        ]
        self.sparsity = sparsity
        self.updates.append((self.step, sparsity))

    def apply(self) -> None:
        for (_, _, v), m in zip(self.tensors, self.masks, strict=True):
            v.assign(np.asarray(v.numpy()) * m)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.apply()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        if (
            self.ramp_steps > 0
            and self.step <= self.ramp_steps
            and self.step % self.settings.frequency == 0
        ):
            self.update_masks(
                polynomial_sparsity(
                    self.step, self.target, self.ramp_steps, self.settings.frequency
                )
            )
        self.apply()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.apply()


_LOG_EPS = 1e-7  # probabilities are clipped to [eps, 1] before the log


def softened_kl(teacher: Any, student: Any, temperature: float) -> Any:
    """Per-sample ``KL(q_t ‖ q_s)`` of the temperature-softened class distributions.

    Both arguments are softmax outputs ``p``; ``log p`` equals the logits up to a
    per-sample constant, so ``q = softmax(log p / T)`` is the softened softmax of
    the logits. Zero (up to float round-off) when student and teacher agree.
    """
    from keras import ops

    def log_q(p: Any) -> Any:
        z = ops.log(ops.clip(p, _LOG_EPS, 1.0)) / temperature
        return z - ops.logsumexp(z, axis=-1, keepdims=True)

    lt, ls = log_q(teacher), log_q(student)
    return ops.sum(ops.exp(lt) * (lt - ls), axis=-1)


def distillation_loss(
    y_true: Any,
    student: Any,
    teacher: Any,
    alpha: float,
    temperature: float,
    sample_weight: Any = None,
) -> Any:
    """``(1 − α)·CE(labels, student) + α·T²·KL(q_t ‖ q_s)``, weighted mean over the batch.

    The ``T²`` factor keeps the gradient of the softened term on the scale of the
    cross-entropy's (Hinton et al., 2015). Weights as Keras applies them: the sum
    of weighted per-sample losses over the batch size.
    """
    from keras import ops

    ce = keras.losses.sparse_categorical_crossentropy(y_true, student)
    per = (1.0 - alpha) * ce + alpha * temperature**2 * softened_kl(teacher, student, temperature)
    if sample_weight is not None:
        per = per * ops.reshape(ops.cast(sample_weight, per.dtype), ops.shape(per))
    return ops.mean(per)


class Distiller(keras.Model):
    """Trains ``student`` on labels and on the frozen dense ``teacher``'s outputs.

    The weights trained are the student's own (shared, not copied). The training
    loss is :func:`distillation_loss` with the teacher run on the same (augmented)
    batch; validation loss stays the plain cross-entropy to the labels, so early
    stopping compares the same quantity with and without distillation.
    """

    def __init__(
        self, student: keras.Model, teacher: keras.Model, alpha: float, temperature: float
    ) -> None:
        super().__init__(name="distiller")
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def call(self, x: Any, training: bool = False) -> Any:
        return self.student(x, training=training)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        if not training:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        teacher = self.teacher(x, training=False)
        return distillation_loss(y, y_pred, teacher, self.alpha, self.temperature, sample_weight)


def tensor_sparsity(settings: PruneSettings, n_all: int, n_pruned: int) -> float:
    """The target of each pruned tensor when ``n_pruned`` of ``n_all`` prunable weights are.

    Without exclusions, or with ``rebalance`` off, every pruned tensor gets
    ``settings.target``. With excluded layers and ``rebalance`` on, the pruned
    tensors share the excluded weights' zeros: ``target · n_all / n_pruned``, so
    that zeros / all prunable weights (excluded ones counted, dense) is the target.
    """
    if not settings.exclude or not settings.rebalance or n_pruned == n_all:
        return settings.target
    t = settings.target * n_all / n_pruned
    if t >= 1.0:
        raise ValueError(
            f"prune.exclude: {list(settings.exclude)} leaves {n_pruned} of {n_all} weights; "
            f"an overall {settings.target:g} would need {t:.3f} of them (expected < 1)"
        )
    return float(t)


def clone(model: keras.Model) -> keras.Model:
    """A fresh copy with the same architecture and weights (the input is not touched)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _configure(seed: int) -> None:
    from train.fit import configure_tf

    configure_tf()
    keras.utils.set_random_seed(seed)


def prune_model(
    model: keras.Model,
    settings: PruneSettings,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    sample_weight: np.ndarray | None = None,
    class_weight: dict[int, float] | None = None,
    *,
    augment: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[keras.Model, dict[str, Any]]:
    """Prune a clone of ``model`` to ``settings.target``; returns it and a report.

    Two fits on one optimizer: the cubic ramp (no early stopping; the loss is
    expected to rise while weights go) and fine-tuning at the final masks with
    early stopping on ``val_loss`` (best weights restored, masks re-applied).
    ``augment`` holds the keyword arguments of :class:`train.fit.Augmented`
    (``mean``, ``std``, ``groups``, ``rotate_deg``, ``scale``): a classifier's
    training batches are then re-oriented and re-scaled as in the train stage,
    when ``settings.augment`` is set. With ``settings.distill > 0`` a classifier
    learns from the labels and from ``model`` itself (the dense teacher) through
    :class:`Distiller`.
    """
    from train.fit import Augmented, EpochBar

    t0 = time.perf_counter()
    _configure(settings.seed)
    pruned = clone(model)
    classifier = is_classifier(model)
    if classifier and settings.distill > 0:
        trainer: keras.Model = Distiller(
            pruned, clone(model), settings.distill, settings.temperature
        )
    else:
        trainer = pruned
    optimizer = keras.optimizers.Adam(settings.learning_rate, clipnorm=settings.clipnorm)
    trainer.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy" if classifier else "mse",
        metrics=["accuracy"] if classifier else [],
    )
    every = prunable_weights(pruned)
    tensors = [t for t in every if t[0] not in settings.exclude]
    if not tensors:
        raise ValueError(f"prune.exclude: {list(settings.exclude)} leaves no tensor to prune")
    tensor_target = tensor_sparsity(
        settings,
        sum(int(np.prod(v.shape)) for *_, v in every),
        sum(int(np.prod(v.shape)) for *_, v in tensors),
    )
    steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
    plan = ramp_plan(settings, steps_per_epoch)
    masks = MaskCallback(tensors, settings, ramp_steps=plan["ramp_steps"], target=tensor_target)
    augmented = bool(classifier and settings.augment and augment)
    if augmented:
        data = Augmented(
            x_train,
            y_train,
            settings.batch_size,
            seed=settings.seed,
            class_weight=class_weight,
            **augment,  # type: ignore[arg-type]
        )
        fit_args: dict[str, Any] = {"x": data}
    else:
        fit_args = {
            "x": x_train,
            "y": y_train,
            "batch_size": settings.batch_size,
            "class_weight": class_weight,
            "sample_weight": sample_weight,
            "shuffle": True,
        }
    fit_args.update(validation_data=(x_val, y_val), verbose=0)
    desc = f"prune {settings.granularity} {settings.target:g}"
    ramp = trainer.fit(
        epochs=plan["ramp_epochs"],
        callbacks=[masks, *([EpochBar(plan["ramp_epochs"], desc + " ramp")] if progress else [])],
        **fit_args,
    )
    # The final masks, whatever the step count: exactly the target from here on.
    masks.ramp_steps = 0
    masks.update_masks(tensor_target)
    masks.apply()
    if settings.finetune_learning_rate is not None:
        optimizer.learning_rate.assign(settings.finetune_learning_rate)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    tune = trainer.fit(
        epochs=plan["finetune_epochs"],
        callbacks=[
            masks,
            stop,
            *([EpochBar(plan["finetune_epochs"], desc + " fine-tune")] if progress else []),
        ],
        **fit_args,
    )
    masks.apply()  # after EarlyStopping restored the best weights
    history = {
        "ramp": {k: [float(v) for v in vals] for k, vals in ramp.history.items()},
        "finetune": {k: [float(v) for v in vals] for k, vals in tune.history.items()},
        "mask_updates": [[int(s), float(v)] for s, v in masks.updates],
    }
    tune_epochs = len(history["finetune"]["loss"])
    best = int(np.argmin(history["finetune"]["val_loss"])) + 1
    rep = sparsity_report(pruned, pattern=settings.pattern, target=tensor_target)
    for row in rep["tensors"]:
        if row["layer"] in settings.exclude:
            row.update(pattern="dense", target=0.0)
    report = {
        "settings": settings.to_dict(),
        "block_score": BLOCK_SCORE,
        "plan": {**plan, "steps_per_epoch": steps_per_epoch},
        "augmented": augmented,
        "distilled": trainer is not pruned,
        **rep,
        "epochs_run": plan["ramp_epochs"] + tune_epochs,
        "finetune_epochs_run": tune_epochs,
        "finetune_best_epoch": best,
        "history": history,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return pruned, report


# --------------------------------------------------------------------------- sweep


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy for a classifier; mean absolute forecast error (model units) otherwise."""
    out = np.concatenate(
        [np.asarray(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)]
    )
    if is_classifier(model):
        return {"accuracy": metrics.accuracy(np.asarray(y), out.argmax(axis=1))}
    return {"mae": float(np.mean(np.abs(out - np.asarray(y))))}


def sweep(
    model: keras.Model,
    targets: list[float],
    settings: PruneSettings,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    granularities: tuple[str, ...] = GRANULARITIES,
    sample_weight: np.ndarray | None = None,
    class_weight: dict[int, float] | None = None,
    *,
    augment: dict[str, Any] | None = None,
    progress: bool = True,
    done: tuple[keras.Model, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Prune at every target and granularity; validation and test metric per run.

    The first row is the dense model as given (``granularity "dense"``, target 0);
    a target of 0 is not re-trained (it is that row). Each other row:
    ``granularity, target, achieved, metric, val, test, epochs_run``. ``done`` is
    the (pruned model, report) already trained with ``settings``: pruning is
    deterministic, so that point is taken from it instead of being trained again.
    """
    metric = "accuracy" if is_classifier(model) else "mae"
    dense = sparsity_report(model)
    rows = [
        {
            "granularity": "dense",
            "target": 0.0,
            "achieved": dense["overall"],
            "metric": metric,
            "val": evaluate(model, x_val, y_val)[metric],
            "test": evaluate(model, x_test, y_test)[metric],
            "epochs_run": 0,
        }
    ]
    for gran in granularities:
        for target in targets:
            if target <= 0:
                continue
            s = PruneSettings(
                **{**settings.to_dict(), "target": float(target), "granularity": gran}
            )
            if done is not None and s == settings:
                pruned, rep = done
            else:
                pruned, rep = prune_model(
                    model,
                    s,
                    x_train,
                    y_train,
                    x_val,
                    y_val,
                    sample_weight=sample_weight,
                    class_weight=class_weight,
                    augment=augment,
                    progress=progress,
                )
            rows.append(
                {
                    "granularity": gran,
                    "target": float(target),
                    "achieved": rep["overall"],
                    "metric": metric,
                    "val": evaluate(pruned, x_val, y_val)[metric],
                    "test": evaluate(pruned, x_test, y_test)[metric],
                    "epochs_run": rep["epochs_run"],
                }
            )
    return rows


def sweep_png(
    path: str | Path, rows: list[dict[str, Any]], split: str = "test", title: str = ""
) -> None:
    """Metric vs achieved sparsity, one line per granularity, dense as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = next((r for r in rows if r["granularity"] == "dense"), None)
    metric = rows[0]["metric"] if rows else "accuracy"
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    grans = list(dict.fromkeys(r["granularity"] for r in rows if r["granularity"] != "dense"))
    for gran, marker in zip(grans, "os^vD", strict=False):
        pts = sorted((r["achieved"], r[split]) for r in rows if r["granularity"] == gran)
        if dense is not None:
            pts = [(dense["achieved"], dense[split]), *pts]
        xs, ys = zip(*pts, strict=True)
        ax.plot(np.array(xs) * 100, ys, marker=marker, label=gran)
    if dense is not None:
        ax.axhline(
            dense[split], color="k", ls="--", lw=0.9, label=f"dense float ({dense[split]:.3f})"
        )
    ax.set_xlabel("sparsity of the pruned kernels (%)")
    ax.set_ylabel(f"{split} {metric}")
    ax.set_title(title or f"{split} {metric} vs sparsity", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


# --------------------------------------------------------------------------- bundle stage


def bundle_data(bundle_dir: str | Path, data_path: str | None = None) -> dict[str, Any]:
    """Rebuild the train stage's arrays from a bundle (same data set, split, normalization).

    Classification: windows of the train/val/test groups. Forecast: the training
    series' sequences (last ``val_fraction`` for validation) and the whole test
    series as one sequence.
    """
    from edge_runtime import preprocess
    from edge_runtime.bundle import Bundle
    from train.classify import make_windows
    from train.data.registry import load_dataset
    from train.fit import class_weights

    b = Bundle.open(bundle_dir)
    m = b.manifest
    raw = m["stages"]["train"]["config"]
    window, hop = int(raw["data"]["window"]), int(raw["data"]["hop"])
    data = load_dataset(data_path or raw["data"].get("dataset", ""), window=window)
    if data.source_sha256 != m["dataset"]["sha256"]:
        raise ValueError(
            f"{bundle_dir}: data set sha256 {data.source_sha256} differs from the one the "
            f"bundle was trained on ({m['dataset']['sha256']})"
        )
    scale = np.array([c["scale"] for c in m["dataset"]["channels"]])
    mean, std = np.asarray(m["preprocess"]["mean"]), np.asarray(m["preprocess"]["std"])
    train_cfg = raw.get("train", {})
    out: dict[str, Any] = {"bundle": b, "config": raw}
    if m["task"] == "classification":
        parts = {p: make_windows(data, p, window, hop) for p in ("train", "val", "test")}
        for p, s in parts.items():
            out[f"x_{p}"] = preprocess.normalize(s.counts, scale, mean, std)
            out[f"y_{p}"] = s.y
        cw = None
        if train_cfg.get("class_weights", True):
            cw = class_weights(parts["train"].y, len(m["labels"]))
        augment = None
        rotate, gain = train_cfg.get("augment_rotate_deg", 0.0), train_cfg.get("augment_scale", 0.0)
        if rotate > 0 or gain > 0:
            augment = {
                "mean": mean,
                "std": std,
                "groups": [list(g) for g in train_cfg.get("augment_groups", [])],
                "rotate_deg": float(rotate),
                "scale": float(gain),
            }
        out.update(sample_weight=None, class_weight=cw, augment=augment)
        return out
    series = data.recordings_of("train")[0].counts
    test = data.recordings_of("test")[0].counts
    n_val = int(round(len(series) * float(raw["data"].get("val_fraction", 0.2))))
    n_fit = len(series) - n_val
    u = preprocess.normalize(series, scale, mean, std)
    u_test = preprocess.normalize(test, scale, mean, std)

    def seq(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = np.arange(0, len(v) - window, hop)
        x = np.stack([v[s : s + window] for s in starts]).astype(np.float32)
        y = np.stack([v[s + 1 : s + window + 1] for s in starts]).astype(np.float32)
        return x, y

    out["x_train"], out["y_train"] = seq(u[:n_fit])
    out["x_val"], out["y_val"] = seq(u[n_fit - window :])
    out["x_test"] = u_test[None, :-1].astype(np.float32)
    out["y_test"] = u_test[None, 1:].astype(np.float32)
    warm = np.ones(out["y_train"].shape[:2], np.float32)
    warm[:, : int(train_cfg.get("warmup", 0))] = 0.0
    out.update(sample_weight=warm, class_weight=None, augment=None)
    return out


def run(
    bundle_dir: str | Path,
    settings: PruneSettings,
    *,
    sweep_targets: list[float] | None = None,
    sweep_granularities: tuple[str, ...] | None = None,
    data_path: str | None = None,
    model_file: str = contract.FLOAT_MODEL,
) -> Path:
    """The prune stage: ``model_file`` of a bundle → ``model_pruned.keras``.

    Writes ``model_pruned.keras``, ``reports/prune.json`` (the prune report,
    validation and test metric of dense and pruned model, the sweep rows) and
    the manifest's ``sparsity`` section; with ``sweep_targets`` also
    ``reports/prune_sweep.png`` (test metric vs sparsity, one line per granularity
    in ``sweep_granularities``; default: the one of ``settings``).
    Test data is used for reporting only, never for a choice.
    """
    from edge_runtime.bundle import stage_writer
    from train.fit import configure_tf

    configure_tf()  # before TensorFlow starts: thread budget and deterministic kernels
    d = bundle_data(bundle_dir, data_path)
    model = keras.models.load_model(d["bundle"].path(model_file), compile=False)
    args = (d["x_train"], d["y_train"], d["x_val"], d["y_val"])
    weights = {
        "sample_weight": d["sample_weight"],
        "class_weight": d["class_weight"],
        "augment": d["augment"],
    }
    pruned, report = prune_model(model, settings, *args, **weights)
    metric = "accuracy" if is_classifier(model) else "mae"
    report["metrics"] = {
        "metric": metric,
        "dense": {
            "val": evaluate(model, d["x_val"], d["y_val"])[metric],
            "test": evaluate(model, d["x_test"], d["y_test"])[metric],
        },
        "pruned": {
            "val": evaluate(pruned, d["x_val"], d["y_val"])[metric],
            "test": evaluate(pruned, d["x_test"], d["y_test"])[metric],
        },
    }
    rows = None
    if sweep_targets:
        grans = sweep_granularities or (settings.granularity,)
        rows = sweep(
            model, sweep_targets, settings, *args, d["x_test"], d["y_test"],
            granularities=grans, done=(pruned, report), **weights,
        )  # fmt: skip
        report["sweep"] = rows
    config = {"prune": settings.to_dict(), "source_model": model_file, "sweep": sweep_targets}
    if sweep_targets:
        config["sweep_granularities"] = list(sweep_granularities or (settings.granularity,))
    with stage_writer(bundle_dir, "prune", config=config) as w:
        import tensorflow as tf

        w.versions.update({"tensorflow": tf.__version__, "keras": keras.__version__})
        pruned.save(w.dir / contract.PRUNED_MODEL)
        w.add_file(contract.PRUNED_MODEL)
        section = manifest_section(report, settings, contract.PRUNED_MODEL)
        section["metrics"] = report["metrics"]
        w.manifest["sparsity"] = section
        w.write_json("reports/prune.json", report)
        if rows:
            sweep_png(
                w.dir / "reports/prune_sweep.png",
                rows,
                "test",
                f"{w.manifest['name']}: test {metric} vs sparsity (pruned + fine-tuned)",
            )
            w.add_file("reports/prune_sweep.png")
    return Path(bundle_dir)
