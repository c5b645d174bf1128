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
:func:`block_structure_ok` and :func:`manifest_section`. The stage on a bundle
(``python -m quantize prune``: the training arrays in, ``model_pruned.keras``,
``reports/prune.json``, the manifest's ``sparsity`` section and the sweep out) is
:mod:`quantize.prune_stage`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from edge_runtime.contract import round_half_away_int
from train.fit import Augmented, EpochBar, configure_tf

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
    bar_position: int = 0,
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
    :class:`Distiller`. ``bar_position`` is the line of the progress bar (points trained
    side by side each draw on their own).
    """
    t0 = time.perf_counter()
    _configure(settings.seed)
    pruned = clone(model)
    trainer, optimizer = _trainer(model, pruned, settings)
    steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
    plan = ramp_plan(settings, steps_per_epoch)
    masks = _masks(pruned, settings, plan["ramp_steps"])
    augmented = bool(is_classifier(model) and settings.augment and augment)
    train = (x_train, y_train, sample_weight, class_weight)
    fit_args = _fit_args(settings, train, augment if augmented else None)
    fit_args.update(validation_data=(x_val, y_val), verbose=0)
    desc = f"prune {settings.granularity} {settings.target:g}" if progress else None
    ramp = trainer.fit(
        epochs=plan["ramp_epochs"],
        callbacks=[masks, *_bar(plan["ramp_epochs"], desc, "ramp", bar_position)],
        **fit_args,
    )
    # The final masks, whatever the step count: exactly the target from here on.
    masks.ramp_steps = 0
    masks.update_masks(masks.target)
    masks.apply()
    if settings.finetune_learning_rate is not None:
        optimizer.learning_rate.assign(settings.finetune_learning_rate)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.patience, restore_best_weights=True
    )
    tune = trainer.fit(
        epochs=plan["finetune_epochs"],
        callbacks=[masks, stop, *_bar(plan["finetune_epochs"], desc, "fine-tune", bar_position)],
        **fit_args,
    )
    masks.apply()  # after EarlyStopping restored the best weights
    head = {
        "settings": settings.to_dict(),
        "block_score": BLOCK_SCORE,
        "plan": {**plan, "steps_per_epoch": steps_per_epoch},
        "augmented": augmented,
        "distilled": trainer is not pruned,
    }
    return pruned, _prune_report(pruned, settings, masks, (ramp, tune), head, t0)


def _bar(
    epochs: int, desc: str | None, phase: str, position: int = 0
) -> list[keras.callbacks.Callback]:
    """A progress bar over the epochs of one fit, none when ``desc`` is None."""
    return [] if desc is None else [EpochBar(epochs, f"{desc} {phase}", position)]


def _trainer(
    model: keras.Model, pruned: keras.Model, settings: PruneSettings
) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    """The model that is fitted (``pruned``, or a :class:`Distiller` around it), compiled."""
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
    return trainer, optimizer


def _masks(pruned: keras.Model, settings: PruneSettings, ramp_steps: int) -> MaskCallback:
    """The mask callback over every tensor not excluded, each at the target that makes
    the overall sparsity ``settings.target`` (:func:`tensor_sparsity`)."""
    every = prunable_weights(pruned)
    tensors = [t for t in every if t[0] not in settings.exclude]
    if not tensors:
        raise ValueError(f"prune.exclude: {list(settings.exclude)} leaves no tensor to prune")
    tensor_target = tensor_sparsity(
        settings,
        sum(int(np.prod(v.shape)) for *_, v in every),
        sum(int(np.prod(v.shape)) for *_, v in tensors),
    )
    return MaskCallback(tensors, settings, ramp_steps=ramp_steps, target=tensor_target)


def _fit_args(
    settings: PruneSettings, train: tuple[Any, ...], augment: dict[str, Any] | None
) -> dict[str, Any]:
    """``fit`` arguments of the training data: augmented batches, or the arrays as they are."""
    x_train, y_train, sample_weight, class_weight = train
    if augment:
        data = Augmented(
            x_train,
            y_train,
            settings.batch_size,
            seed=settings.seed,
            class_weight=class_weight,
            **augment,
        )
        return {"x": data}
    return {
        "x": x_train,
        "y": y_train,
        "batch_size": settings.batch_size,
        "class_weight": class_weight,
        "sample_weight": sample_weight,
        "shuffle": True,
    }


def _prune_report(
    pruned: keras.Model,
    settings: PruneSettings,
    masks: MaskCallback,
    fits: tuple[Any, Any],
    head: dict[str, Any],
    t0: float,
) -> dict[str, Any]:
    """``head``, then sparsity per tensor, epochs run and the history of both fits."""
    ramp, tune = fits
    history = {
        "ramp": {k: [float(v) for v in vals] for k, vals in ramp.history.items()},
        "finetune": {k: [float(v) for v in vals] for k, vals in tune.history.items()},
        "mask_updates": [[int(s), float(v)] for s, v in masks.updates],
    }
    tune_epochs = len(history["finetune"]["loss"])
    rep = sparsity_report(pruned, pattern=settings.pattern, target=masks.target)
    for row in rep["tensors"]:
        if row["layer"] in settings.exclude:
            row.update(pattern="dense", target=0.0)
    return {
        **head,
        **rep,
        "epochs_run": head["plan"]["ramp_epochs"] + tune_epochs,
        "finetune_epochs_run": tune_epochs,
        "finetune_best_epoch": int(np.argmin(history["finetune"]["val_loss"])) + 1,
        "history": history,
        "seconds": round(time.perf_counter() - t0, 1),
    }
