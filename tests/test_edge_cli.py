"""The ``tinygru-edge`` command line: check, bench and run on a small real bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.__main__ import main
from edge_runtime.bundle import Bundle
from tests.test_stream import bundle_root, make_bundle

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bm(tmp_path_factory) -> Path:
    return make_bundle("bm", bundle_root(tmp_path_factory))


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory) -> Path:
    return make_bundle("anomaly", bundle_root(tmp_path_factory))


def test_check_passes_and_writes_junit(bm, tmp_path, capsys) -> None:
    junit = tmp_path / "check.xml"
    assert main(["check", "--bundle", str(bm), "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "min_accuracy" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["min_accuracy", "min_argmax_agreement"]
    assert suite.get("failures") == "0" and not suite.findall("testcase/failure")


def test_check_fails_an_impossible_threshold(bm, tmp_path, capsys) -> None:
    junit = tmp_path / "check.xml"
    args = ["check", "--bundle", str(bm), "--min-accuracy", "1.01", "--junit", str(junit)]
    assert main([*args, "--json", str(tmp_path / "c.json")]) == 1
    assert "FAIL" in capsys.readouterr().out
    root = ET.parse(junit).getroot()
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["min_accuracy"]
    rep = json.loads((tmp_path / "c.json").read_text())
    assert rep["passed"] is False
    assert {m["name"]: m["source"] for m in rep["marks"]}["min_accuracy"] == "flag"
    assert {"accuracy", "macro_f1", "argmax_agreement", "parity_vs_float"} <= set(rep["metrics"])


def test_check_with_an_unreachable_device_fails_naming_it(bm, capsys) -> None:
    assert main(["check", "--bundle", str(bm), "--device", "socket://127.0.0.1:1"]) == 2
    assert "127.0.0.1:1" in capsys.readouterr().err


def test_check_forecaster_reports_anomaly_figures(forecaster, tmp_path, capsys) -> None:
    code = main(["check", "--bundle", str(forecaster), "--json", str(tmp_path / "f.json")])
    rep = json.loads((tmp_path / "f.json").read_text())
    assert code == (0 if rep["passed"] else 1)
    assert [m["name"] for m in rep["marks"]] == [
        "require_hit",
        "min_point_auc",
        "min_margin",
        "max_false_alarms",
    ]
    assert {"hit", "margin", "point_auc", "window_auc", "false_alarms"} <= set(rep["metrics"])
    assert main(["check", "--bundle", str(forecaster), "--min-accuracy", "0.5"]) == 2


def test_bench_prints_its_figures(bm, capsys) -> None:
    assert main(["bench", "--bundle", str(bm), "--seconds", "0.6", "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["host"]["label"].endswith("host")
    assert set(rep["backends"]) == {"litert", "litert_xnnpack"}
    for e in rep["backends"].values():
        for key in ("bare_step_us", "window_us"):
            assert {"p50", "p95", "p99", "mean", "n"} <= set(e[key])
        assert {"step_us", "push_us", "samples_per_s", "steps_per_s"} <= set(e["streamer"])
        assert isinstance(e["ratio_streamer_to_bare"], float)
    assert rep["peak_rss_mb"] > 0
    assert main(["bench", "--bundle", str(bm), "--seconds", "0.3", "--backend", "litert"]) == 0
    text = capsys.readouterr().out
    assert "bare step" in text and "samples/s" in text and "x bare" in text


def test_run_streams_a_csv(bm, tmp_path, capsys) -> None:
    pytest.importorskip("edge_runtime.sources", reason="edge_runtime/sources.py not present")
    b = Bundle.open(bm)
    counts = b.load_npz("reference.npz")["x_counts"][:4]
    names = [c["name"] for c in b.manifest["dataset"]["channels"]]
    rows = counts.reshape(-1, counts.shape[-1])
    csv = tmp_path / "rec.csv"
    csv.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["run", "--bundle", str(bm), "--source", f"csv:{csv}", "--out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"samples {len(rows)}" in err and "bad samples 0" in err and "gaps 0" in err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    T, H = b.manifest["preprocess"]["window"], b.manifest["preprocess"]["hop"]
    assert len(lines) == len(range(0, len(rows) - T + 1, H))
    for d in lines:
        assert {"time", "sample", "label", "probabilities", "latency_us", "y_int8"} <= set(d)
        assert set(d["probabilities"]) == set(b.manifest["labels"])
    assert np.isclose(sum(lines[0]["probabilities"].values()), 1.0, atol=0.05)


def test_cli_runs_as_a_module_without_tensorflow(bm) -> None:
    code = (
        "import sys, runpy; sys.argv = ['tinygru-edge', 'check', '--bundle', sys.argv[1]]\n"
        "try:\n    runpy.run_module('edge_runtime', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "bad = [m for m in ('tensorflow', 'keras', 'train', 'quantize') if m in sys.modules]\n"
        "print('LOADED', bad, rc)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(bm)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "LOADED [] 0" in r.stdout, r.stdout + r.stderr
