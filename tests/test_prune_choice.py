"""The prune stage's choice by budget (``quantize prune --choose``) on a small real bundle:
the sparsest point within the validation budget and the target's flash, else the dense
model with the reason; and the export refusing a model over a target's budget."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_runtime.bundle import Bundle
from quantize.prune import PruneSettings
from quantize.prune_stage import choose
from tests.support import outlives, small_config

ROOT = Path(__file__).resolve().parents[1]
FAST = {"epochs": 4, "patience": 2, "batch_size": 16, "granularity": "block4"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.train import run

    root = tmp_path_factory.mktemp("choice")
    return run(str(small_config(root, "basic_motions.toml", epochs=6)), str(root / "bm"))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _target(tmp_path: Path, flash: int) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(
        "name = 'tiny'\nkind = 'mcu'\nboard = 'mps2-an386'\nclock_hz = 8_000_000\n"
        f"[budget]\nflash_bytes = {flash}\nram_bytes = 4096\n"
    )
    return p


def test_the_sparsest_point_within_budget_is_deployed(trained: Path, tmp_path: Path) -> None:
    b = _copy(trained, tmp_path / "b")
    choice = choose(b, PruneSettings(**FAST), [0.5, 0.8], max_val_drop=100.0, jobs=1)
    assert choice["chosen"]["target"] == 0.8  # sparsest first: it qualifies at once
    rep = Bundle.open(b).read_json("reports/prune.json")
    assert [(r["target"], bool(r.get("skipped"))) for r in rep["sweep"]] == [
        (0.0, False), (0.8, False), (0.5, True),
    ]  # fmt: skip  # 0.5 could no longer be chosen: not trained
    m = Bundle.open(b).manifest
    assert m["sparsity"]["deployed"] == "pruned" and b.joinpath("model_pruned.keras").is_file()
    assert "0.5" in m["sparsity"]["why"] and "not trained" in m["sparsity"]["why"]


def test_points_trained_side_by_side_give_the_same_models(trained: Path, tmp_path: Path) -> None:
    """Two worker processes train 0.8 and 0.5 at once: the same choice as one after the
    other, and every point's weights equal to the last bit (the same seeds and thread
    budget in any process); with 0.8 chosen, 0.5 is reported as trained, not skipped."""
    import keras
    import numpy as np

    one = _copy(trained, tmp_path / "one")
    two = _copy(trained, tmp_path / "two")
    # a budget no point meets keeps every trained point's row: compare them all
    c1 = choose(one, PruneSettings(**FAST), [0.5, 0.8], max_val_drop=-100.0, jobs=1)
    c2 = choose(two, PruneSettings(**FAST), [0.5, 0.8], max_val_drop=-100.0, jobs=2)
    assert c1["chosen"] is None and c2["chosen"] is None and c1["why"] == c2["why"]
    r1, r2 = (Bundle.open(b).read_json("reports/prune.json")["sweep"] for b in (one, two))
    keys = ("target", "achieved", "val", "test", "val_score", "epochs_run")
    assert [[r[k] for k in keys] for r in r1] == [[r[k] for k in keys] for r in r2]
    assert len(r2) == 3  # dense, 0.8, 0.5
    # the deployed model itself: 0.8 qualifies, the side-by-side 0.5 is trained too
    c3 = choose(two, PruneSettings(**FAST), [0.5, 0.8], max_val_drop=100.0, jobs=2)
    assert c3["chosen"]["target"] == 0.8 and "not trained" not in c3["why"]
    c4 = choose(one, PruneSettings(**FAST), [0.8], max_val_drop=100.0, jobs=1)
    assert c4["chosen"] == c3["chosen"]
    w1, w2 = (keras.models.load_model(b / "model_pruned.keras", compile=False).get_weights()
              for b in (one, two))  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2, strict=True))


# A stage process that starts one sweep worker the way train_points does, prints the
# worker's pid and then waits for the test to kill it.
STAGE = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from quantize.prune_points import end_with_parent
if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=end_with_parent,
                             initargs=(os.getpid(),)) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 600)
        time.sleep(600)
"""


def test_a_killed_stage_takes_its_sweep_workers_with_it(tmp_path: Path) -> None:
    """SIGKILL to the stage process ends its worker too (before: the worker trained its
    point to the end on the cores the next job needed). Checked by the worker's process
    state, polled for up to 60 s; a worker alive after that is the failure."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    stage = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=root)  # fmt: skip
    try:
        worker = int(stage.stdout.readline())
        assert outlives(worker, 0.5)
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        assert not outlives(worker), f"worker {worker} outlived its killed stage"
    finally:
        stage.kill()
        stage.wait()


def test_no_point_within_budget_deploys_the_dense_model(trained: Path, tmp_path: Path) -> None:
    b = _copy(trained, tmp_path / "b")
    choose(b, PruneSettings(**FAST), [0.8], max_val_drop=100.0)  # a pruned model first
    assert Bundle.open(b).has("model_pruned.keras")
    # an impossible flash budget rules out every pruned point: dense, and why
    choice = choose(b, PruneSettings(**FAST), [0.5, 0.8], max_val_drop=100.0,
                    target_file=str(_target(tmp_path, 64)))  # fmt: skip
    assert choice["chosen"] is None
    bb = Bundle.open(b)
    assert not bb.has("model_pruned.keras") and not (b / "model_pruned.keras").exists()
    why = bb.manifest["sparsity"]["why"]
    assert bb.manifest["sparsity"]["deployed"] == "dense"
    assert "dense deployed" in why and "over the target flash" in why, why
    rows = bb.read_json("reports/prune.json")["sweep"]
    assert all(not r["fits_target"] for r in rows[1:]) and len(rows) == 3
    assert (b / "reports/prune_sweep.png").is_file()


def test_a_forecasters_budget_is_its_validation_error_growth(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """KDD-TSAD 135 (the session's tiny forecaster bundle): the score is the validation forecast
    MAE (the validation tail is anomaly-free: no margin or AUC can be measured there
    without the test labels), a point's drop the % it grows over the dense model's; a
    budget the point meets deploys it, one it misses deploys the dense model."""
    import numpy as np

    from quantize.bundle_io import load_keras
    from quantize.prune_stage import val_score
    from tests.support import bundle_root, make_bundle
    from train.arrays import training_arrays

    tiny = make_bundle("anomaly", bundle_root(tmp_path_factory))
    a, b = _copy(tiny, tmp_path / "a"), _copy(tiny, tmp_path / "b")
    fast = {**FAST, "epochs": 2, "batch_size": 256}
    choice = choose(a, PruneSettings(**fast), [0.5], max_val_drop=1000.0, jobs=1)
    assert choice["score"] == "validation forecast error increase (%)"
    assert choice["chosen"]["target"] == 0.5
    bb = Bundle.open(a)
    d = training_arrays(bb)
    dense = val_score(load_keras(bb, "model_float.keras"), d.x_val, d.y_val)
    pruned = val_score(load_keras(bb, "model_pruned.keras"), d.x_val, d.y_val)
    assert choice["dense_val_score"] == pytest.approx(dense, rel=1e-6)
    (row,) = [r for r in bb.read_json("reports/prune.json")["sweep"] if r["target"] == 0.5]
    assert row["val_drop"] == pytest.approx(100 * (pruned - dense) / dense, rel=1e-6)
    assert np.isfinite(row["val_drop"])
    # the same point under a budget just below its growth: the dense model, and why
    tight = row["val_drop"] - 1e-3
    miss = choose(b, PruneSettings(**fast), [0.5], max_val_drop=tight, jobs=1)
    assert miss["chosen"] is None and f"> {tight:g}" in miss["why"]
    assert Bundle.open(b).manifest["sparsity"]["deployed"] == "dense"


def test_export_refuses_a_model_over_the_target(tmp_path: Path) -> None:
    """The export names the budget exceeded and by how much (a tiny bundle, a tinier chip)."""
    from firmware_export.export import ExportError, export
    from tests.support import build_bundle

    b = build_bundle("bm", str(tmp_path), "basic_motions.toml", {"epochs = 30": "epochs = 1"})
    t = _target(tmp_path, 100)
    with pytest.raises(ExportError) as e:
        export(b, target=t)
    msg = str(e.value)
    out = export(b, target=ROOT / "configs/targets/cortex-m4-80mhz.toml")
    model = json.loads((Path(out["out"]) / "files.json").read_text())["model_data"]["flash_bytes"]
    assert f"target tiny ({t}): flash budget 100 B" in msg, msg
    assert f"need {model:,} B ({model - 100:,} B over)" in msg and "\n" not in msg, msg


def test_engine_stage_refuses_model_and_engine_over_the_target(tmp_path: Path) -> None:
    """The export counts the model data only; the engine stage counts what the budget holds
    (Cortex-M4 objects: model data + engine code, and the stack): a chip whose flash
    takes the model data but not the engine code passes the export and is refused there,
    with the amount the objects measure; on a chip that holds both the fit is recorded."""
    from firmware_export import sizes
    from firmware_export.check import check
    from firmware_export.export import ExportError, export
    from tests.support import build_bundle

    if sizes.missing_tools() is not None:
        pytest.skip(sizes.missing_tools())
    b = build_bundle("bm", str(tmp_path), "basic_motions.toml", {"epochs = 30": "epochs = 1"})
    out = export(b)
    fs = sizes.firmware_sizes(out["out"], out["prefix"])
    model, total = fs["flash"]["model_data"], fs["flash"]["total"]
    assert total > model  # the engine code
    t = _target(tmp_path, model + 1)
    t.write_text(t.read_text().replace("ram_bytes = 4096", "ram_bytes = 65536"))
    export(b, target=t)  # the model data alone fits
    with pytest.raises(ExportError) as e:
        check(b, target=t)
    msg = str(e.value)
    assert f"flash budget {model + 1:,} B" in msg and f"({total - model - 1:,} B over)" in msg
    assert "RAM" not in msg.split("(Cortex-M4")[0] and "\n" not in msg, msg
    assert not (Path(b) / "reports" / "engine.json").exists()  # refused: nothing written
    rep = check(b, target=ROOT / "configs/targets/cortex-m4-80mhz.toml")
    assert rep["target_fit"]["flash_bytes"] == total
    assert rep["target_fit"]["ram_bytes"] == fs["ram"]["total"] <= 65536


def test_a_validation_part_too_small_for_the_budget_is_named(trained: Path, tmp_path: Path) -> None:
    """With fewer than 100 validation windows one window is worth more than 1 point: a
    1-point budget cannot be resolved there, and the reason says so (ItalyPowerDemand's 12
    validation days passed a 90 % point whose test accuracy fell 96.4 -> 88.5 %)."""
    from train.arrays import training_arrays

    n_val = len(training_arrays(Bundle.open(trained)).y_val)
    assert n_val < 100  # the small BasicMotions bundle
    b = _copy(trained, tmp_path / "b")
    choice = choose(b, PruneSettings(**FAST), [0.8], max_val_drop=1.0)
    assert choice["val_windows"] == n_val and choice["val_too_small"]
    assert f"validation has {n_val} windows" in choice["why"]
    assert Bundle.open(b).manifest["sparsity"]["why"] == choice["why"]
    wide = choose(_copy(trained, tmp_path / "c"), PruneSettings(**FAST), [0.8], max_val_drop=100.0)
    assert not wide["val_too_small"] and "warning" not in wide["why"]
