"""Cortex-M4 size report of an exported engine: no heap, no float, no VFP; flash by
part and RAM (state, scratch, stream struct, worst-case stack) positive and adding up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_runtime.bundle import Bundle
from firmware_export import host, sizes
from firmware_export.export import export, prepare

MISSING = sizes.missing_tools()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"no ARM toolchain: {MISSING}"),
]


@pytest.fixture(scope="module")
def bm(engine_bm: Path) -> Path:
    return engine_bm


@pytest.fixture(scope="module")
def report(bm: Path) -> dict:
    return sizes.engine_sizes(bm)


def test_no_heap_no_float_no_vfp(report: dict) -> None:
    c = report["checks"]
    assert c["heap_references"] == []
    assert c["float_helpers"] == []
    assert c["vfp_instructions"] == {}
    assert c["ok"]
    assert report["stack"]["dynamic"] == []


def test_flash_parts_are_positive_and_add_up(report: dict) -> None:
    f = report["flash"]
    for part in ("weights", "biases", "multipliers_shifts", "tables", "input_quantization",
                 "descriptor", "engine_code"):  # fmt: skip
        assert f["parts"][part] > 0, part
    assert "other" not in f["parts"], f["model_symbols"].get("other")
    model_parts = sum(v for k, v in f["parts"].items() if k != "engine_code")
    assert model_parts == f["model_data"]  # every byte of the model object is named
    assert f["engine_code"] == sum(f["engine_by_object"].values())
    assert f["total"] == f["model_data"] + f["engine_code"]


def test_ram_matches_the_engine_buffer_queries(bm: Path, report: dict) -> None:
    r = report["ram"]
    result = export(bm)
    m = prepare(Bundle.open(bm)).model
    eng = host.load(Path(result["out"]), result["prefix"], m)
    assert (r["state"], r["scratch"]) == eng.buffer_sizes()
    assert r["state"] == sum(m.units) + m.step_inputs
    assert r["stream_struct"] == 20  # 4 pointers + uint32 on a 32-bit target
    assert r["stack"] > 0 and r["stack"] == report["stack"]["bytes"]
    assert r["total"] == r["state"] + r["scratch"] + r["stream_struct"] + r["stack"]


def test_stack_follows_the_inference_call_chain(report: dict) -> None:
    s = report["stack"]
    path = s["tg_window"]["path"]
    # tg_window runs tg_push_sample's body inlined (one frame less on the deepest path)
    assert path[:2] == ["tg_window", "tg_model_step"]
    assert "tg_gru_step" in path
    assert s["tg_push_sample"]["path"][:2] == ["tg_push_sample", "tg_model_step"]
    assert s["tg_window"]["bytes"] > s["tg_push_sample"]["bytes"] > 0
    assert set(s["unresolved"]) <= {"memset", "memmove", "memcpy"}
    assert s["bytes"] < 1024


def test_a_float_in_the_engine_is_caught(tmp_path: Path, bm: Path) -> None:
    result = export(bm)
    fw = tmp_path / "fw"
    (fw / "engine").mkdir(parents=True)
    src = Path(result["out"])
    for p in (src / "engine").iterdir():
        (fw / "engine" / p.name).write_bytes(p.read_bytes())
    prefix = result["prefix"]
    for name in (f"{prefix}_model.h", f"{prefix}_model.c"):
        (fw / name).write_bytes((src / name).read_bytes())
    (fw / "engine" / "tg_float_probe.c").write_text(
        "#include <stdint.h>\n"
        "int32_t tg_float_probe(int32_t a, int32_t b) { return (int32_t)((float)a * 0.5f + (float)b); }\n"
        "int32_t tg_double_probe(int32_t a) { return (int32_t)((double)a / 3.0); }\n"
    )
    index = json.loads((src / "files.json").read_text())
    index["files"].append({"path": "engine/tg_float_probe.c"})
    (fw / "files.json").write_text(json.dumps(index))
    rep = sizes.firmware_sizes(fw, prefix)
    assert not rep["checks"]["ok"]
    assert "tg_float_probe" in rep["checks"]["vfp_instructions"]
    assert any(f.startswith("__aeabi_d") for f in rep["checks"]["float_helpers"])


def test_only_the_files_of_the_export_count(tmp_path: Path, bm: Path, report: dict) -> None:
    """An engine file an older export left behind is not measured: files.json decides."""
    src = Path(export(bm)["out"])
    fw = tmp_path / "fw"
    shutil.copytree(src, fw)
    (fw / "engine" / "tg_left_behind.c").write_text("int tg_left_behind(void) { return 1; }\n")
    rep = sizes.firmware_sizes(fw, report["prefix"])
    assert "tg_left_behind" not in rep["flash"]["engine_by_object"]
    assert rep["flash"]["engine_code"] == report["flash"]["engine_code"]
    (fw / "files.json").unlink()
    with pytest.raises(ValueError, match=r"files.json: not an export's file list"):
        sizes.firmware_sizes(fw, report["prefix"])
