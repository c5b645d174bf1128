"""The train stage on real data, small: BasicMotions (classifier) and KDD-TSAD 135 (forecaster)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import Bundle
from tests.support import small_config
from train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bm_bundle(tmp_path_factory) -> Path:
    from train.train import run

    tmp = tmp_path_factory.mktemp("bm")
    cfg = small_config(tmp, "basic_motions.toml", epochs=12)
    return run(str(cfg), str(tmp / "bundle"))


def test_classifier_bundle_is_complete_and_verifies(bm_bundle: Path) -> None:
    b = Bundle.open(bm_bundle)
    b.verify_all()
    m = b.manifest
    assert m["task"] == "classification"
    assert m["labels"] == ["standing", "running", "walking", "badminton"]
    assert len(m["preprocess"]["mean"]) == len(m["dataset"]["channels"]) == 6
    for name in ("model_float.keras", "reference.npz", "reports/train.json"):
        assert name in m["artifacts"]
    ref = b.load_npz("reference.npz")
    n = m["dataset"]["n_windows"]["test"]
    assert ref["x_counts"].shape == (n, 50, 6) and ref["x_counts"].dtype == np.int16
    assert ref["probs"].shape == (n, 4)
    # The float windows are the normalized counts: one preprocessing implementation.
    from edge_runtime import preprocess

    scale = np.array([c["scale"] for c in m["dataset"]["channels"]])
    again = preprocess.normalize(
        ref["x_counts"], scale, m["preprocess"]["mean"], m["preprocess"]["std"]
    )
    np.testing.assert_array_equal(again, ref["x_float"])
    rep = b.read_json("reports/train.json")
    # 12 epochs of a tiny model on BasicMotions: measured 0.95-0.98; chance is 0.25.
    assert rep["test"]["accuracy"] >= 0.8
    assert rep["test"]["accuracy"] == pytest.approx(
        float(np.mean(ref["probs"].argmax(1) == ref["y"]))
    )


def test_same_config_and_seed_give_same_metrics(bm_bundle: Path, tmp_path: Path) -> None:
    from train.train import run

    cfg = small_config(tmp_path, "basic_motions.toml", epochs=12)
    again = run(str(cfg), str(tmp_path / "again"))
    a = Bundle.open(bm_bundle).load_npz("reference.npz")
    b = Bundle.open(again).load_npz("reference.npz")
    np.testing.assert_array_equal(a["probs"], b["probs"])  # tolerance 0: seeded, deterministic ops
    assert (bm_bundle / "reference.npz").read_bytes() == (again / "reference.npz").read_bytes()


def test_forecaster_bundle_scores_the_test_series(tmp_path: Path) -> None:
    from train.train import run

    cfg = small_config(tmp_path, "anomaly.toml", epochs=4)
    out = run(str(cfg), str(tmp_path / "anomaly"))
    b = Bundle.open(out)
    m = b.manifest
    assert m["task"] == "forecast"
    assert m["thresholds"]["anomaly_score"] > 0
    ref = b.load_npz("reference.npz")
    assert ref["series_counts"].shape == (7501, 1)
    assert ref["labels"].sum() == 12  # labelled 4187..4198
    rep = b.read_json("reports/train.json")
    for key in ("hit", "margin", "point_auc", "window_auc", "false_alarms", "detection_delay"):
        assert key in rep["test"]
    assert rep["baseline_persistence"]["hit"]  # the naive score finds this anomaly too


def test_a_failed_run_leaves_the_previous_bundle(bm_bundle: Path, tmp_path: Path) -> None:
    from train.data import DataError
    from train.train import run

    before = json.loads((bm_bundle / "manifest.json").read_text())
    bad = tmp_path / "bad.csv"
    bad.write_text("acc_x,label,recording\n1.0,a,r1\n")
    with pytest.raises(DataError, match="bad.csv"):
        run(str(ROOT / "configs/basic_motions.toml"), str(bm_bundle), data_path=str(bad))
    assert json.loads((bm_bundle / "manifest.json").read_text()) == before


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "name = 'x'\n[data]\nwindow = 0\nhop = 1\n",
            r"\[data\]: window: expected a positive integer",
        ),
        ("name = 'x'\n[data]\nwindow = 8\nhop = 4\n[bogus]\n", r"unknown key 'bogus'"),
        ("name = 'x'\n[data]\nwindow = 8\nhop = 4\n[train]\nepoch = 3\n", r"did you mean 'epochs'"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_model_config_rejects_what_cannot_be_one_step(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("name = 'x'\n[data]\nwindow = 8\nhop = 4\n[model]\ngru_units = [32, 32, 32]\n")
    with pytest.raises(ConfigError, match="1 or 2 layers"):
        load_config(p).model_config(6, 4)


def test_augmentation_turns_each_triad_rigidly_and_is_seeded() -> None:
    from train.fit import Augmented

    rng = np.random.default_rng(1)
    mean, std = rng.normal(size=6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
    x = rng.normal(size=(8, 20, 6)).astype(np.float32)
    y = np.arange(8) % 2

    def batch(seed: int) -> np.ndarray:
        d = Augmented(x, y, 8, mean, std, [[0, 1, 2], [3, 4, 5]], 15.0, 0.0, seed)
        return d[0][0]

    a, b = batch(7), batch(7)
    np.testing.assert_array_equal(a, b)  # same seed, same batch
    order = Augmented(x, y, 8, mean, std, [[0, 1, 2]], 15.0, 0.0, 7).order
    phys_in = x[order] * std + mean
    phys_out = a * std + mean
    for g in (slice(0, 3), slice(3, 6)):
        # A rotation keeps every 3-axis vector's length (float32 round-off: 1e-4 relative).
        np.testing.assert_allclose(
            np.linalg.norm(phys_out[..., g], axis=-1),
            np.linalg.norm(phys_in[..., g], axis=-1),
            rtol=1e-4,
            atol=1e-4,
        )
    assert not np.allclose(phys_out, phys_in, atol=1e-3)  # and it did turn them


def test_summary_prints_the_trained_figures(bm_bundle: Path) -> None:
    from edge_runtime.summary import summarize

    lines = summarize(bm_bundle)
    acc = Bundle.open(bm_bundle).read_json("reports/train.json")["test"]["accuracy"]
    assert any(f"test accuracy {100 * acc:.2f}%" in line for line in lines)
    assert summarize(bm_bundle / "missing")[0].endswith("no bundle (run `make demo`)")
    skill = Bundle.open(bm_bundle).read_json("reports/train.json")["skill"]
    assert not skill["at_chance"] and skill["warning"] is None  # far above 1 in 4
    assert not any("WARNING" in line for line in lines)


def test_a_classifier_at_chance_is_named() -> None:
    """The skill check against always guessing the most frequent training class, a
    one-sided binomial tail summed here term by term with exact integers."""
    from math import comb

    from edge_runtime.summary import train_lines
    from train.classify import skill

    y_train = np.repeat(np.arange(10), 8)  # 10 balanced classes: the guess is class 0
    y_val = np.repeat(np.arange(10), 2)
    s = skill(y_train, y_val, 4 / 20)  # 4 of 20 right, 2 of 20 for the guess
    exact = sum(comb(20, i) * 9 ** (20 - i) for i in range(4, 21)) / 10**20
    assert s["p_value"] == pytest.approx(exact, rel=1e-12) and exact == pytest.approx(
        0.1330, abs=1e-4
    )
    assert s["at_chance"] and "not better than chance" in s["warning"] and "4 of 20" in s["warning"]
    assert not skill(y_train, y_val, 9 / 20)["at_chance"]  # P(>= 9 of 20) = 0.0001
    # a skewed set: 90 % accuracy is only the majority guess
    lop = np.array([0] * 90 + [1] * 10)
    assert skill(lop, lop, 0.90)["at_chance"] and not skill(lop, lop, 0.99)["at_chance"]
    rep = {"test": {"accuracy": 0.2, "macro_f1": 0.1, "n": 20}, "params": 10, "skill": s,
           "summary": {"accuracy": {"values": [0.2], "mean": 0.2, "std": 0.0}}}  # fmt: skip
    assert train_lines(rep)[-1] == f"  WARNING: {s['warning']}"


def test_cosine_schedule_sets_each_epochs_rate_and_is_refused_misspelled(tmp_path: Path) -> None:
    """The rate the optimizer holds during each epoch of a real fit equals
    lr · ½(1 + cos(π e / E)) (float32 variable: 1e-7 relative), every epoch runs and the
    last weights are kept; a schedule the trainer does not know, or a patience it
    would ignore, is one line naming file and field."""
    import keras

    from train.config import TrainSettings
    from train.fit import fit_model
    from train.model import ModelConfig

    seen: list[float] = []
    last: list[np.ndarray] = []

    class Rate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if batch == 0:
                seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            last[:] = self.model.get_weights()

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 3)).astype(np.float32), np.arange(16) % 2
    settings = TrainSettings(epochs=4, patience=4, batch_size=8, learning_rate=0.01,
                             lr_schedule="cosine")  # fmt: skip
    mcfg = ModelConfig(n_channels=3, n_outputs=2, gru_units=(4,))
    model, hist = fit_model(mcfg, settings, x, y, x, y, desc="cosine", callbacks=[Rate()])
    assert hist["epochs_run"] == hist["best_epoch"] == 4  # every epoch, the last one kept
    for kept, at_end in zip(model.get_weights(), last, strict=True):
        np.testing.assert_array_equal(kept, at_end)
    np.testing.assert_allclose(seen, [0.01, 0.01 * 0.5 * (1 + np.cos(np.pi / 4)), 0.005,
                                      0.01 * 0.5 * (1 + np.cos(3 * np.pi / 4))], rtol=1e-7)  # fmt: skip
    seen.clear()
    const = TrainSettings(epochs=2, patience=2, batch_size=8, learning_rate=0.01)
    fit_model(mcfg, const, x, y, x, y, desc="constant", callbacks=[Rate()])
    np.testing.assert_allclose(seen, [0.01, 0.01], rtol=1e-7)

    p = tmp_path / "c.toml"
    p.write_text("name = 'x'\n[data]\nwindow = 8\nhop = 4\n[train]\nlr_schedule = 'cosin'\n")
    with pytest.raises(ConfigError, match=r"c.toml: \[train\]: lr_schedule: expected one of"):
        load_config(p)
    p.write_text("name = 'x'\n[data]\nwindow = 8\nhop = 4\n[train]\nlr_schedule = 'cosine'\n"
                 "patience = 5\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"\[train\]: patience: has no effect"):
        load_config(p)
