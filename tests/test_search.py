"""The model search: its parts on their own, a tiny real study, and bad input.

The tiny study is real: BasicMotions, 5 trials of a narrowed space, 2 epochs, the
int8 C engine's validation score, flash and RAM from the Cortex-M objects and
instructions from QEMU; its flash budget (FLASH_BUDGET, with the measured shapes
beside it) lies between the shapes of that space, so some trials are rejected
before training and others complete. The loader is instrumented: every read of a test recording's
samples is logged, and none may happen before the seed runs (not run here).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search import configfile, front, space
from search.space import Candidate
from search.study import Pruner, storage_url

ROOT = Path(__file__).resolve().parents[1]
BM = ROOT / "configs" / "basic_motions.toml"
M4 = ROOT / "configs" / "targets" / "cortex-m4-80mhz.toml"
TINY_SPACE = """\
windows = [50]
filters = [4]
kernels = [2]
strides = [2]
layers = [1]
units = [4, 16]
sparsities = [0.0]
learning_rate = [0.005, 0.02]
"""
# Splits TINY_SPACE (measured, M4 objects: gru4 shapes 8,712-8,800 B flash, of which
# engine code 5,424 B; gru16 shapes 10,864-10,920 B): some trials fit, some are rejected.
FLASH_BUDGET = 9500


def write_target(path: Path, flash: int, ram: int = 65536) -> Path:
    path.write_text(
        'name = "tiny-m4"\nkind = "mcu"\nboard = "mps2-an386"\nclock_hz = 80_000_000\n'
        f"[budget]\nflash_bytes = {flash}\nram_bytes = {ram}\n"
    )
    return path


# --------------------------------------------------------------------------- parts


def test_space_params_draw_back_the_same_candidate() -> None:
    sp = space.default_space(128, 64, forecast=False)
    assert sp.windows == (64, 96, 128, 192)
    cand = Candidate(128, 64, 32, 5, 2, (32,), 0.75, "block4", 0.002)
    params = space.params_of(cand, sp)
    assert params is not None
    drawn = space.sample(optuna.trial.FixedTrial(params), sp)
    assert drawn == cand
    assert space.params_of(replace(cand, gru_units=(33,)), sp) is None  # not a choice


def test_forecaster_space_steps_on_every_sample() -> None:
    sp = space.default_space(64, 1, forecast=True)
    assert sp.strides == (1,)
    assert sp.hop_for(96) == 1


def test_pareto_front_thinning_and_choice() -> None:
    dirs = ["maximize", "minimize", "minimize", "minimize"]
    vals = {0: [0.9, 100, 10, 5], 1: [0.8, 50, 10, 5], 2: [0.7, 60, 10, 5],  # 2 dominated by 1
            3: [0.95, 400, 20, 9], 4: [0.6, 10, 5, 4]}  # fmt: skip
    trials = [
        optuna.trial.create_trial(values=v, distributions={}, params={}, state=TrialState.COMPLETE)
        for v in vals.values()
    ]
    for i, t in enumerate(trials):
        t.number = i
    on = front.pareto(trials, dirs)
    assert [t.number for t in on] == [0, 1, 3, 4]
    kept = front.thin(on, dirs, 2)
    assert {t.number for t in kept} == {3, 4}  # best score and fewest instructions stay
    rows = [{"fold_mean": 0.9, "instructions_per_second": 100},
            {"fold_mean": 0.9, "instructions_per_second": 50},
            {"fold_mean": 0.8, "instructions_per_second": 10}]  # fmt: skip
    assert front.choose(rows, higher_is_better=True) is rows[1]  # tie -> cheaper
    assert front.choose(rows, higher_is_better=False) is rows[2]


def test_pruner_compares_with_trials_that_cost_no_more(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize", "minimize"])
    for ips, flash, curve in ((10.0, 1, [0.5, 0.6, 0.7, 0.8]), (20.0, 1, [0.5, 0.6, 0.7, 0.9]),
                              (30.0, 1, [0.4, 0.6, 0.7, 0.85]), (1e6, 1, [0.1, 0.1, 0.1, 0.1]),
                              (5.0, 99, [0.9, 0.9, 0.9, 0.9])):  # fmt: skip
        cost = {"instructions_per_second": ips, "flash_bytes": flash, "ram_bytes": 1}
        study.add_trial(optuna.trial.create_trial(
            values=[curve[-1], ips, flash, 1], user_attrs={"curve": curve, "result": {"cost": cost}}))  # fmt: skip
    p = Pruner(warmup=3, min_peers=3)

    def cost(ips: float) -> dict[str, float]:
        return {"instructions_per_second": ips, "flash_bytes": 10, "ram_bytes": 1}

    assert not p.should_prune(study, [0.1, 0.1, 0.1], cost(50.0))  # still warming up
    assert p.should_prune(study, [0.1, 0.2, 0.3, 0.5], cost(50.0))  # below the cheaper median
    assert not p.should_prune(study, [0.1, 0.2, 0.3, 0.9], cost(50.0))
    # one peer no more expensive (the 5-instruction one has more flash): too few to judge
    assert not p.should_prune(study, [0.1, 0.2, 0.3, 0.5], cost(15.0))


def test_config_file_reads_back_and_pins_pruning(tmp_path: Path) -> None:
    from train.config import load_config

    raw = tomllib.loads((ROOT / "configs" / "har.toml").read_text())
    cand = Candidate(96, 48, 16, 4, 2, (24, 16), 0.5, "block4", 0.0031)
    conf = configfile.candidate_config(raw, cand, seed=3, name="har-m4")
    out = configfile.write(tmp_path / "c.toml", conf, ["made by a test"])
    cfg = load_config(out)
    assert cfg.name == "har-m4" and raw["name"] == "har"
    assert (cfg.window, cfg.hop, cfg.train.seed, cfg.train.learning_rate) == (96, 48, 3, 0.0031)
    assert cfg.model["gru_units"] == [24, 16] and not cfg.select_enabled
    assert cfg.raw["prune"] == {"sparsity": 0.5, "granularity": "block4"}
    assert cfg.train.augment_groups == ((0, 1, 2), (3, 4, 5))  # as in har.toml
    assert out.read_text().startswith("# made by a test\n")


def test_seed_runs_run_the_stages_make_demo_runs(tmp_path: Path) -> None:
    """A chosen config with ``[qat] enabled`` (har.toml's) gets the qat stage in its seed
    runs, between prune and int8, as ``make demo CONFIG=…`` would run it; without it none."""
    from search.seeds import stage_commands

    raw = tomllib.loads((ROOT / "configs" / "har.toml").read_text())
    cand = Candidate(96, 48, 16, 4, 2, (24,), 0.5, "block4", 0.0031)
    with_qat = configfile.write(tmp_path / "q.toml", configfile.candidate_config(raw, cand, seed=1))
    raw.pop("qat")
    without = configfile.write(tmp_path / "n.toml", configfile.candidate_config(raw, cand, seed=1))
    stages = [[c[2:4] for c in stage_commands(p, tmp_path / "b", cand, 1, None)]
              for p in (with_qat, without)]  # fmt: skip
    common = [["train", "--config"], ["quantize", "prune"]]
    tail = [["quantize", "int8"], ["quantize", "parity"], ["firmware_export", "export"]]
    assert stages == [[*common, ["quantize", "qat"], *tail], [*common, *tail]]


def test_storage_urls() -> None:
    assert storage_url("postgresql://u@h:5/db", Path("b")) == "postgresql+psycopg://u@h:5/db"
    assert storage_url(None, Path("/x/b")) == "sqlite:////x/b/search/studies.db"


def test_folds_keep_subjects_together_and_cover_every_group() -> None:
    from search.data import folds, load_without_test
    from train.config import load_config

    data = load_without_test(load_config(BM))
    splits = folds(data, 2)
    groups = set(data.split["train"]) | set(data.split["val"])
    assert set(splits[0]["val"]) | set(splits[1]["val"]) == groups
    assert not set(splits[0]["val"]) & set(splits[1]["val"])
    for s in splits:
        assert set(s["train"]) == groups - set(s["val"])
    assert not data.split["test"] and not any(r.group.startswith("bm04") for r in data.recordings)


def test_search_arrays_are_the_train_stages() -> None:
    """The config's split: exactly the windows, statistics, class weights and
    augmentation the train stage fits on (the same functions; compared at 0)."""
    from edge_runtime import preprocess
    from search.data import arrays, load_without_test
    from train.arrays import load_data
    from train.classify import split_windows
    from train.config import load_config
    from train.fit import augment_args, class_weights

    cfg = load_config(ROOT / "configs" / "har.toml")
    cfg = replace(cfg, data={**cfg.data, "dataset": "basic_motions", "window": 50, "hop": 25})
    a = arrays(load_without_test(cfg), cfg, 50, 25)
    full = load_data(cfg)
    parts = split_windows(full, 50, 25)
    scale = np.array([c.scale for c in full.channels])
    mean, std = preprocess.fit_normalization(parts["train"].counts.reshape(-1, 6), scale)
    np.testing.assert_array_equal(a.mean, mean)
    np.testing.assert_array_equal(a.std, std)
    for got, part in ((a.x_train, "train"), (a.x_val, "val")):
        np.testing.assert_array_equal(
            got, preprocess.normalize(parts[part].counts, scale, mean, std)
        )
    np.testing.assert_array_equal(a.y_train, parts["train"].y)
    np.testing.assert_array_equal(a.counts_val, parts["val"].counts)
    assert a.class_weight == class_weights(parts["train"].y, len(full.label_names))
    want = augment_args(cfg.train, mean, std)
    assert a.augment is not None and want is not None
    assert a.augment["groups"] == want["groups"] == [[0, 1, 2], [3, 4, 5]]


def test_forecaster_arrays_are_the_train_stages() -> None:
    """KDD-TSAD 135, the config's split: the train stage's sequences and loss weights."""
    from edge_runtime import preprocess
    from search.data import arrays, load_without_test
    from train.config import load_config
    from train.forecast import fit_arrays, fit_length

    cfg = load_config(ROOT / "configs" / "anomaly.toml")
    data = load_without_test(cfg)
    assert not data.recordings_of("test")
    a = arrays(data, cfg, cfg.window, cfg.hop)
    series = data.recordings_of("train")[0].counts
    n_fit = fit_length(cfg, len(series))
    mean, std = preprocess.fit_normalization(series[:n_fit], a.scale)
    want = fit_arrays(cfg, [preprocess.normalize(series, a.scale, mean, std)])
    for k in ("x_train", "y_train", "x_val", "y_val", "sample_weight"):
        np.testing.assert_array_equal(getattr(a, k), want[k], err_msg=k)


def test_probe_model_has_a_trained_models_requantization(tmp_path: Path) -> None:
    """The probe's model (one epoch, then pruned) keeps every layer of a 90 % block-sparse
    two-layer forecaster on the engine's one-step requantization, as the trained model
    does. Untrained, the second GRU's state barely moved, its recurrent pre-activations
    calibrated to a tiny range, 13 of its rows needed shift 0 (outside tg_fc_rq's
    [-22, -1]) and the whole layer fell back to dense TFLM requantization: the probe
    measured 84,160 M4 instructions per step against 18,760 for the trained model."""
    from search.data import arrays
    from search.driver import dataset_info, load_inputs
    from search.evaluate import Context, Recipe, measure_model, warmed_pruned

    cfg, tgt, data = load_inputs(ROOT / "configs" / "anomaly.toml", M4, None)
    ctx = Context(cfg, tgt, data.sample_rate, dataset_info(data), Recipe(), tmp_path)
    cand = Candidate(32, 16, 32, 8, 1, (16, 64), 0.9, "block4", 0.005)
    a = arrays(data, cfg, cand.window, cand.hop)
    mcfg = cfg.model_config(a.n_channels, a.n_outputs, cand.model())
    model = warmed_pruned(mcfg, cand, 0, a)
    measure_model(ctx, cand, model, mcfg, a, tmp_path / "probe", cost=False)
    files = json.loads((tmp_path / "probe" / "firmware" / "files.json").read_text())
    layers = files["model_data"]["weights"]
    assert {n: w["requantize"] for n, w in layers.items()} == dict.fromkeys(layers, "one_step")
    assert all(w["stored"] == "block_sparse" for w in layers.values())


# --------------------------------------------------------------------------- a tiny study


class WatchedRecording:
    """A test recording whose samples, when read, leave the group in ``log``."""

    def __init__(self, rec, log: list[str]) -> None:
        self.group = rec.group
        self._rec, self._log = rec, log

    @property
    def counts(self) -> np.ndarray:
        self._log.append(self.group)
        return self._rec.counts

    @property
    def labels(self) -> np.ndarray:
        self._log.append(self.group)
        return self._rec.labels


@pytest.fixture
def watched_loader(monkeypatch):
    """BasicMotions whose test recordings log every read of their samples."""
    from train.data import registry
    from train.data.basic_motions import load_basic_motions

    reads: list[str] = []

    def load():
        data = load_basic_motions()
        test = set(data.split["test"])
        recs = [WatchedRecording(r, reads) if r.group in test else r for r in data.recordings]
        return replace(data, recordings=recs)

    monkeypatch.setitem(registry.DATASETS, "basic_motions", load)
    return reads


@pytest.mark.slow
def test_tiny_study_writes_front_and_config_within_budget(tmp_path, watched_loader) -> None:
    from search.__main__ import main
    from train.classify import make_windows
    from train.config import load_config
    from train.data.registry import load_dataset

    (tmp_path / "space.toml").write_text(TINY_SPACE)
    target = write_target(tmp_path / "tiny.toml", FLASH_BUDGET)
    build = tmp_path / "build"
    rc = main(["--config", str(BM), "--target", str(target), "--trials", "5", "--epochs", "2",
               "--patience", "2", "--folds", "2", "--front", "2", "--seeds", "0",
               "--calibration-samples", "200", "--space", str(tmp_path / "space.toml"),
               "--build", str(build), "--heartbeat", "2"])  # fmt: skip
    assert rc == 0
    assert watched_loader == [], f"test recordings read during the search: {watched_loader}"

    sdir = build / "search" / "basic_motions-tiny-m4"
    summary = json.loads((sdir / "summary.json").read_text())
    assert (sdir / "report.md").read_text().count("| #") == len(summary["front"])
    assert (sdir / "report.html").is_file() and (sdir / "front.png").is_file()
    assert 1 <= len(summary["front"]) <= 2
    for p in summary["front"]:
        assert len(p["fold_scores"]) == 2 and p["flash_bytes"] <= FLASH_BUDGET
    chosen = summary["chosen"]
    cfg = load_config(chosen["config"])
    cand = Candidate.from_dict(chosen["candidate"])
    assert (cfg.window, cfg.model["gru_units"]) == (cand.window, list(cand.gru_units))
    assert cfg.name == "basic_motions-tiny-m4"  # its bundle does not overwrite the default's
    assert cfg.raw["prune"]["sparsity"] == cand.sparsity

    storage = optuna.storages.RDBStorage(storage_url(None, build))
    study = optuna.load_study(study_name="basic_motions-tiny-m4", storage=storage)
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 5
    rejected = [t for t in trials if "rejected" in t.user_attrs]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert rejected and done, "the budget should split the space's shapes"
    for t in rejected:  # over budget on the untrained probe, and never trained
        assert t.user_attrs["probe"]["flash_bytes"] > FLASH_BUDGET
        assert t.user_attrs["curve"] == [] and not (sdir / "trials" / f"{t.number:04d}").exists()
    for t in done:
        assert t.user_attrs["result"]["cost"]["flash_bytes"] <= FLASH_BUDGET
        assert t.values[2] == t.user_attrs["result"]["cost"]["flash_bytes"]
    # The instrument works: cutting the test windows reads the watched recordings.
    make_windows(load_dataset("basic_motions"), "test", 50, 25)
    assert watched_loader


# --------------------------------------------------------------------------- bad input


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("search: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_unknown_target_file_is_one_line(tmp_path, capsys) -> None:
    from search.__main__ import main

    rc = main(["--config", str(BM), "--target", str(tmp_path / "nope.toml"), "--trials", "2",
               "--build", str(tmp_path)])  # fmt: skip
    assert rc == 2
    assert "nope.toml: file not found" in _error(capsys)


def test_unreachable_storage_is_one_line(tmp_path, capsys) -> None:
    from search.__main__ import main

    rc = main(["--config", str(BM), "--target", str(M4), "--trials", "2", "--build", str(tmp_path),
               "--storage", "postgresql://nobody@127.0.0.1:9/none"])  # fmt: skip
    assert rc == 2
    line = _error(capsys)
    assert "storage postgresql://nobody@127.0.0.1:9/none: cannot connect" in line


@pytest.mark.slow
def test_budget_nothing_can_meet_runs_no_trial(tmp_path, capsys) -> None:
    from search.__main__ import main

    (tmp_path / "space.toml").write_text(TINY_SPACE)
    target = write_target(tmp_path / "tiny.toml", flash=2000)
    rc = main(["--config", str(BM), "--target", str(target), "--trials", "2",
               "--space", str(tmp_path / "space.toml"), "--build", str(tmp_path)])  # fmt: skip
    assert rc == 2
    line = _error(capsys)
    assert "no candidate can fit" in line and "budget 2,000 B flash" in line
    storage = optuna.storages.RDBStorage(storage_url(None, tmp_path))
    assert optuna.get_all_study_summaries(storage) == []  # no study, no trial
    assert not (tmp_path / "search" / "basic_motions-tiny-m4" / "trials").exists()
