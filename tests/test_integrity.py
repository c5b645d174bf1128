"""The device input contract is sealed: every field that changes an output is covered by one
sha256 that every stage writes and Bundle.open checks (edge_runtime/integrity.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import integrity
from edge_runtime.bundle import Bundle, BundleError, stage_writer
from tests.support import ROOT, bundle_root, edited, make_bundle


@pytest.fixture(scope="module")
def bm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle("bm", bundle_root(tmp_path_factory))


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle("anomaly", bundle_root(tmp_path_factory))


def test_every_stage_seals_the_contract(bm: Path) -> None:
    m = Bundle.open(bm).manifest
    section = m["integrity"]
    assert section["fields"] == list(integrity.FIELDS)
    # The documented canonical form, recomputed here without the module.
    obj = {}
    for path in section["fields"]:
        node: Any = m
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            obj[path] = node
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert section["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    # A classifier built without the arena measurement has every other covered field
    # but the anomaly hit zone.
    absent = {"quantization.tflm_arena.bytes", "stages.train.config.data.zone"}
    assert set(obj) == set(integrity.FIELDS) - absent
    r = subprocess.run([sys.executable, "-m", "edge_runtime.integrity", str(bm / "manifest.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == section["sha256"]


def _set(path: str, value: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    def edit(m: dict[str, Any]) -> None:
        keys = path.split(".")
        node = m
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        last: Any = int(keys[-1]) if isinstance(node, list) else keys[-1]
        node[last] = value(node[last])

    return edit


# One hand edit per kind of covered field; each would change a computed output or the C.
EDITS = {
    "input_quant multiplier": _set("preprocess.input_quant.multiplier.0", lambda v: v + 1),
    "input_quant zero point": _set("preprocess.input_quant.zero_point", lambda v: v + 1),
    "normalization mean": _set("preprocess.mean.0", lambda v: v + 0.5),
    "normalization std": _set("preprocess.std.1", lambda v: v * 2),
    "window": _set("preprocess.window", lambda v: v - 2),
    "hop": _set("preprocess.hop", lambda v: v + 1),
    "channel scale": _set("dataset.channels.0.scale", lambda v: v * 2),
    "channel raw range": _set("dataset.channels.0.raw_max", lambda v: v - 1000),
    "sample rate": _set("dataset.sample_rate", lambda v: v * 2),
    "y scale": _set("quantization.step.outputs.y.scale", lambda v: v * 2),
    "ring buffer fill": _set("quantization.step.ring_buffer.fill", lambda v: v + 1),
    "model config": _set("model.config.front_end_stride", lambda v: 1),
    "label order": _set("labels", lambda v: list(reversed(v))),
    "device pass mark": _set("thresholds.device.min_accuracy", lambda v: 0.0),
    "task": _set("task", lambda v: "forecast"),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_a_hand_edit_of_a_covered_field_is_refused(bm, tmp_path, what) -> None:
    sealed = Bundle.open(bm).manifest["integrity"]["sha256"]
    b = edited(bm, tmp_path / "b", EDITS[what])
    with pytest.raises(BundleError) as e:
        Bundle.open(b)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{b / 'manifest.json'}: integrity: ")
    assert "preprocess.input_quant" in msg and "quantization.step" in msg  # the field set
    assert f"integrity.sha256 says {sealed}" in msg
    found = integrity.compute(json.loads((b / "manifest.json").read_text()))
    assert f"hashes to {found}" in msg and found != sealed


def test_fields_that_change_no_output_are_not_covered(bm, tmp_path) -> None:
    def edit(m: dict[str, Any]) -> None:
        m["metrics"]["note"] = "edited by hand"
        m["dataset"]["source"] = "/elsewhere/data.csv"
        m["quantization"]["calibration"]["pairs"] += 1
        m["stages"]["train"]["config"]["train"]["epochs"] += 1

    b = Bundle.open(edited(bm, tmp_path / "b", edit))
    assert b.sealed and b.contract_sha256 == Bundle.open(bm).contract_sha256


def test_the_programs_refuse_an_edited_contract_in_one_line(bm, tmp_path) -> None:
    """Editing preprocess.input_quant used to change results silently and reach the C."""
    b = edited(bm, tmp_path / "b", EDITS["input_quant multiplier"])
    commands = [
        ["-m", "edge_runtime", "check", "--bundle", str(b)],
        ["-m", "edge_runtime", "run", "--bundle", str(b), "--source", "-"],
        ["-m", "firmware_export", "--bundle", str(b)],
    ]
    for argv in commands:
        r = subprocess.run([sys.executable, *argv], cwd=ROOT, input="1,2,3,4,5,6\n" * 60,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1, (argv, r.stderr)
        assert "manifest.json: integrity: the device input contract" in lines[0]
    assert not (b / "firmware").exists()


def test_a_stage_does_not_launder_an_edited_contract(bm, tmp_path) -> None:
    b = edited(bm, tmp_path / "b", EDITS["label order"])
    before = (b / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="integrity: the device input contract"):
        with stage_writer(b, "parity", config={}):
            pass
    assert (b / "manifest.json").read_bytes() == before


def test_a_stage_that_changes_a_covered_field_reseals(bm, tmp_path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bm, b)
    old = Bundle.open(b).contract_sha256
    with stage_writer(b, "parity", config={}) as w:
        w.manifest["thresholds"]["device"]["min_accuracy"] = 0.5
    new = Bundle.open(b)
    assert new.contract_sha256 != old
    assert new.contract_sha256 == integrity.compute(new.manifest)


def test_a_bundle_written_before_the_seal_opens_with_one_warning(bm, tmp_path, capfd) -> None:
    b = edited(bm, tmp_path / "b", lambda m: m.pop("integrity"))
    opened = Bundle.open(b)
    Bundle.open(b)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no integrity section" in err and str(b) in err
    assert not opened.sealed
    assert opened.contract_sha256 == Bundle.open(bm).contract_sha256  # the same values
    with stage_writer(b, "parity", config={}):
        pass
    assert Bundle.open(b).sealed


def test_a_seal_that_does_not_cover_this_version_s_fields_is_refused(bm, tmp_path) -> None:
    def drop(m: dict[str, Any]) -> None:
        m["integrity"]["fields"].remove("preprocess.input_quant")
        m["integrity"]["sha256"] = integrity.compute(m, m["integrity"]["fields"])

    with pytest.raises(BundleError, match="does not cover preprocess.input_quant"):
        Bundle.open(edited(bm, tmp_path / "b", drop))


def test_the_forecaster_s_threshold_is_covered(forecaster, tmp_path) -> None:
    b = edited(forecaster, tmp_path / "f", _set("thresholds.anomaly_score", lambda v: v * 10))
    with pytest.raises(BundleError, match="integrity: the device input contract"):
        Bundle.open(b)


def test_the_export_compiles_the_contract_hash(bm, tmp_path) -> None:
    from firmware_export.export import export

    sealed = Bundle.open(bm).manifest["integrity"]["sha256"]
    export(bm, tmp_path / "fw", "bm")
    want = f'#define BM_CONTRACT_SHA256 "{sealed}"'
    assert want in (tmp_path / "fw" / "bm_config.h").read_text().splitlines()
    assert json.loads((tmp_path / "fw" / "files.json").read_text())["contract_sha256"] == sealed
    # A bundle from before the seal: the hash of the values it has, which are the same.
    old = edited(bm, tmp_path / "old", lambda m: m.pop("integrity"))
    export(old, tmp_path / "fw_old", "bm")
    assert want in (tmp_path / "fw_old" / "bm_config.h").read_text().splitlines()
