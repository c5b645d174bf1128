"""Block-sparse FC weight storage and the export budgets.

A tiny BasicMotions bundle gets whole 4-blocks of every kernel zeroed at 75 %
(quantize.prune.magnitude_mask, the block4 pruner's mask, applied in Keras without
training: the storage only needs the zero structure), is converted by
``quantize.int8.int8`` and exported twice, ``--sparse never`` and ``--sparse
always``. Both engines must give the same output and state at every step of
every reference window, and both must equal TFLM (the check). Tolerance: 0.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_engine import make_bundle

from edge_runtime.bundle import Bundle
from firmware_export import check as check_mod
from firmware_export import host
from firmware_export.check import step_inputs
from firmware_export.export import ExportError, export, prepare
from firmware_export.lower import Fc, choose_storage, pack_blocks, unpack_blocks

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.75


@functools.cache
def _block_pruned(root: str) -> Path:
    from edge_runtime.bundle import stage_writer
    from quantize.bundle_io import load_keras
    from quantize.int8 import int8
    from quantize.prune import (
        PruneSettings,
        magnitude_mask,
        manifest_section,
        prunable_weights,
        sparsity_report,
    )

    src = make_bundle("bm", root)
    dst = Path(root) / "bm_block4"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("firmware"))
    b = Bundle.open(dst)
    model = load_keras(b, "model_float.keras")
    for _, _, var in prunable_weights(model):
        w = np.asarray(var.numpy())
        var.assign(w * magnitude_mask(w, TARGET, "block4"))
    settings = PruneSettings(target=TARGET, granularity="block4")
    report = sparsity_report(model, "block4", TARGET)
    with stage_writer(
        dst, "prune", config={"prune": settings.to_dict(), "source_model": "model_float.keras"}
    ) as w:
        model.save(w.dir / "model_pruned.keras")
        w.add_file("model_pruned.keras")
        w.manifest["sparsity"] = manifest_section(report, settings, "model_pruned.keras")
    int8(dst, calibration_samples=300, arena=False)
    return dst


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "engine_bundles"
    root.mkdir(exist_ok=True)
    return _block_pruned(str(root))


def _engine(fw: Path, prefix: str, prep) -> host.Engine:
    m = prep.model
    return host.load(fw, prefix, m)


def test_pack_unpack_round_trip_and_partial_last_group() -> None:
    rng = np.random.default_rng(0)
    for rows, cols in ((5, 1), (7, 6), (9, 13), (3, 16)):
        w = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
        groups = -(-cols // 4)
        drop = rng.random((rows, groups)) < 0.6
        for r, g in zip(*np.nonzero(drop), strict=True):
            w[r, 4 * g : 4 * g + 4] = 0
        p = pack_blocks(w)
        assert p is not None
        np.testing.assert_array_equal(unpack_blocks(p, rows, cols), w)
        assert p.values.shape[1] == 4 and p.nbytes == 4 * rows + 9 * int(p.group_index.size)
        f = Fc(rows, cols, w, np.zeros(rows, np.int32), np.full(rows, 1 << 30, np.int32),
               np.zeros(rows, np.int32), 0, -128, 127)  # fmt: skip
        assert choose_storage(f, "never")[0] is None
        assert choose_storage(f, "always")[0] is not None
        packed, info = choose_storage(f, "auto")
        assert (packed is not None) == (info["block_sparse_bytes"] < info["dense_bytes"])
    assert pack_blocks(np.ones((1, 4 * 256), np.int8)) is None  # indices would not fit uint8


def test_sparse_and_dense_exports_agree_and_equal_tflm(pruned: Path, tmp_path: Path,
                                                        monkeypatch) -> None:  # fmt: skip
    prep = prepare(Bundle.open(pruned))
    dense = export(pruned, tmp_path / "dense", "bm", sparse="never")
    sparse = export(pruned, tmp_path / "sparse", "bm", sparse="always")
    auto = export(pruned, tmp_path / "auto", "bm")
    text = (tmp_path / "sparse" / "bm_model.c").read_text()
    assert "tg_fc_sparse" in text and "TG_FC_PACKED" not in text and "TG_FC_ROWS" not in text
    dense_text = (tmp_path / "dense" / "bm_model.c").read_text()
    assert "tg_fc_sparse" not in dense_text and "TG_FC_SPARSE" not in dense_text
    d, s = dense["model_data"], sparse["model_data"]
    assert all(i["stored"] == "dense" for i in d["weights"].values())
    assert all(i["stored"] == "block_sparse" for i in s["weights"].values())
    for name, info in auto["model_data"]["weights"].items():
        assert info["pruned_pattern"] == "block4", name
        # int8 rounding may zero single kept weights; the zero groups stay whole groups
        assert info["zero_fraction"] >= 0.74, (name, info)
        smaller = info["block_sparse_bytes"] < info["dense_bytes"]
        assert info["stored"] == ("block_sparse" if smaller else "dense"), (name, info)
    # two int16 words per kept group (no decode in the kernel's inner loop) and a ctl word
    # per row: at 75 % and 8 columns (2 groups a row) measured 564 / 576 bytes
    ratio = s["weight_bytes_stored"] / d["weight_bytes_stored"]
    assert ratio < 1.0, ratio
    assert (
        s["flash_bytes"] - d["flash_bytes"] == s["weight_bytes_stored"] - d["weight_bytes_stored"]
    )
    index = json.loads((tmp_path / "sparse" / "files.json").read_text())
    assert index["model_data"]["weights"] == s["weights"]

    eng_d = _engine(tmp_path / "dense", "bm", prep)
    eng_s = _engine(tmp_path / "sparse", "bm", prep)
    counts = Bundle.open(pruned).load_npz("reference.npz")["x_counts"]
    steps = 0
    for window in counts:
        hd = [np.zeros(u, np.int8) for u in prep.model.units]
        hs = [v.copy() for v in hd]
        for x in step_inputs(prep, window):
            yd, hd = eng_d.step(x, hd)
            ys, hs = eng_s.step(x, hs)
            np.testing.assert_array_equal(yd, ys)
            for a, b in zip(hd, hs, strict=True):
                np.testing.assert_array_equal(a, b)
            steps += 1
        np.testing.assert_array_equal(eng_d.window(window), eng_s.window(window))
    assert steps > 0

    for mode in ("always", "never"):
        monkeypatch.setattr(check_mod, "export",
                            lambda b, o=None, p=None, _m=mode: export(b, o, p, sparse=_m))  # fmt: skip
        report = check_mod.check(pruned, tmp_path / f"check_{mode}", "bm")
        assert report["steps_compared"] == steps
        assert report["mismatches"] == 0, report["first_mismatch"]
    assert "tg_fc_sparse" in (tmp_path / "check_always" / "bm_model.c").read_text()


def test_budgets_fail_in_one_line_and_write_nothing(pruned: Path, tmp_path: Path) -> None:
    ok = export(pruned, tmp_path / "fw", "bm", sparse="never")
    flash, ram = ok["model_data"]["flash_bytes"], ok["model_data"]["ram_bytes"]
    before = {p: p.read_bytes() for p in (tmp_path / "fw").rglob("*") if p.is_file()}
    with pytest.raises(ExportError, match="--max-flash"):
        export(pruned, tmp_path / "fw", "bm", sparse="never", max_flash=flash - 1)
    with pytest.raises(ExportError, match="--max-ram"):
        export(pruned, tmp_path / "fw", "bm", sparse="never", max_ram=ram - 1)
    after = {p: p.read_bytes() for p in (tmp_path / "fw").rglob("*") if p.is_file()}
    assert after == before
    # the sparse storage fits a flash budget the dense one does not
    fits = export(pruned, tmp_path / "fw2", "bm", max_flash=flash - 1)
    assert fits["model_data"]["flash_bytes"] < flash
    export(pruned, tmp_path / "fw3", "bm", sparse="never", max_flash=flash, max_ram=ram)

    run = [sys.executable, "-m", "firmware_export", "--bundle", str(pruned), "--prefix", "bm"]
    for extra, word in ((["--sparse", "never", "--max-flash", str(flash - 1)], "--max-flash"),
                        (["--max-ram", str(ram - 1)], "--max-ram")):  # fmt: skip
        out = tmp_path / f"cli{word}"
        r = subprocess.run([*run, "--out", str(out), *extra], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], r.stderr
        assert not out.exists()
    r = subprocess.run([*run, "--out", str(tmp_path / "cli_ok"), "--sparse", "always"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_later_exports_keep_the_mode_the_export_stage_chose(pruned: Path, tmp_path: Path) -> None:
    """The engine, mcu, sizes and bench stages export again without options: they must
    build what `--sparse` chose (found: the mcu stage ran auto's block-sparse model after
    `--sparse never`, 11,137 instead of 16,602 M4 instructions per step on HAPT)."""
    from firmware_export.export import recorded_sparse_mode

    b = tmp_path / "b"
    shutil.copytree(pruned, b, ignore=shutil.ignore_patterns("firmware"))
    assert recorded_sparse_mode(b) == "auto"  # no export yet
    for mode in ("never", "always"):
        first = export(b, sparse=mode)
        model_c = Path(first["out"]) / f"{first['prefix']}_model.c"
        text = model_c.read_text()
        again = export(b)  # what a later stage does
        assert recorded_sparse_mode(b) == mode and again["written"] == []
        assert model_c.read_text() == text
        assert again["model_data"]["sparse_mode"] == mode
