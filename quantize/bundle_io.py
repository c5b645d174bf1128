"""What the quantize stages share: opening a trained bundle, its model config and Keras
models (and which one the int8 stage converts), its channel scales, the int8 step
inputs, and running a stage's program in a fresh Python process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]
# Written by the qat stage only when it beats the pre-QAT model on validation.
QAT_MODEL = "model_qat.keras"


class StageError(Exception):
    """A stage cannot run on this bundle; the message names the file."""


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
    """The bundle's :class:`train.model.ModelConfig`."""
    from train.model import ModelConfig

    try:
        return ModelConfig.from_dict(b.manifest["model"]["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise StageError(f"{b.root / 'manifest.json'}: model.config: {e}") from None


def pre_qat_model(b: Bundle) -> str:
    """The model before quantization-aware fine-tuning: the pruned one when present."""
    return contract.PRUNED_MODEL if b.has(contract.PRUNED_MODEL) else contract.FLOAT_MODEL


def qat_base(b: Bundle) -> dict[str, Any] | None:
    """``{"file", "sha256"}`` of the model ``model_qat.keras`` was fine-tuned from, when the
    bundle holds a QAT model (recorded by the qat stage in ``stages.qat.config.base_model``)."""
    if not b.has(QAT_MODEL):
        return None
    base = b.manifest.get("stages", {}).get("qat", {}).get("config", {}).get("base_model")
    return base if isinstance(base, dict) else None


def qat_is_current(b: Bundle) -> bool:
    """Whether ``model_qat.keras`` was fine-tuned from the bundle's pre-QAT model as it is
    now (a prune or train run since makes it stale)."""
    base = qat_base(b)
    pre = pre_qat_model(b)
    return (
        base is not None
        and base.get("file") == pre
        and (base.get("sha256") == b.artifacts[pre]["sha256"])
    )


def source_model(b: Bundle) -> str:
    """The model the int8 stage converts: ``model_qat.keras`` when the qat stage chose it
    and it is current (:func:`qat_is_current`), else the pruned model when present, else
    ``model_float.keras``."""
    return QAT_MODEL if qat_is_current(b) else pre_qat_model(b)


def load_keras(b: Bundle, name: str) -> Any:
    """A bundle's Keras model: sha256 verified, loaded with ``safe_mode=True``."""
    import keras

    path = b.path(name)
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        raise StageError(f"{path}: cannot load the Keras model: {e}") from None


def channel_scales(b: Bundle) -> np.ndarray:
    """Physical units per int16 count of every channel, in channel order."""
    return np.array([float(c["scale"]) for c in b.manifest["dataset"]["channels"]])


def int8_step_inputs(cfg: Any, samples_q: np.ndarray, fill: int) -> np.ndarray:
    """The int8 ``x`` of every step over int8 samples ``(N, T, C)``: ``(N, n_steps, k·C)``,
    ``fill`` (the ``x`` zero point) before sample 0 (:func:`edge_runtime.contract.step_inputs`)."""
    q = np.asarray(samples_q, np.int8)
    return contract.step_inputs(q, cfg.front_end_kernel, cfg.front_end_stride, fill)


def fresh_env() -> dict[str, str]:
    """The environment of a fresh Python process running one of the stage's programs:
    ``PYTHONHASHSEED=0`` (the converter's output depends on the hash seed), quiet
    TensorFlow, and the repository on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    return env


def last_line(text: str) -> str:
    """The last non-empty line of a program's output (its error, usually)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
