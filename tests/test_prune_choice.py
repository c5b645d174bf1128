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
from tests.support import small_config

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
    choice = choose(b, PruneSettings(**FAST), [0.5, 0.8], max_val_drop=100.0)
    assert choice["chosen"]["target"] == 0.8  # sparsest first: it qualifies at once
    rep = Bundle.open(b).read_json("reports/prune.json")
    assert [(r["target"], bool(r.get("skipped"))) for r in rep["sweep"]] == [
        (0.0, False), (0.8, False), (0.5, True),
    ]  # fmt: skip  # 0.5 could no longer be chosen: not trained
    m = Bundle.open(b).manifest
    assert m["sparsity"]["deployed"] == "pruned" and b.joinpath("model_pruned.keras").is_file()
    assert "0.5" in m["sparsity"]["why"] and "not trained" in m["sparsity"]["why"]


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


def test_export_refuses_a_model_over_the_target(tmp_path: Path) -> None:
    """The export names the budget exceeded and by how much (a tiny bundle, a tinier chip)."""
    from firmware_export.export import ExportError, export
    from tests.support import build_bundle

    b = build_bundle("bm", str(tmp_path), "basic_motions.toml", {"epochs = 30": "epochs = 1"})
    t = _target(tmp_path, 100)
    with pytest.raises(ExportError) as e:
        export(b, target=t)
    msg = str(e.value)
    assert "target tiny" in msg and "flash budget 100 B" in msg and "B over" in msg, msg
    assert "\n" not in msg
    out = export(b, target=ROOT / "configs/targets/cortex-m4-80mhz.toml")
    assert json.loads((Path(out["out"]) / "files.json").read_text())["model_data"]["flash_bytes"]
