"""The report's target table and the sweep plot's choice panel, from stage-shaped data.

The target table divides the QEMU instructions per step of the Cortex-M row run on the
target's board by the target's clock (a lower bound of the time per step) and multiplies
by the steps per second; rows of other cores are left out (not at that clock). The figures below are worked out by hand from the target files in ``configs/targets/``.
The choice panel is checked on the matplotlib axes it draws: the budget line sits at the
dense validation score minus ``max_val_drop`` and the star on the chosen point.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from edge_runtime.targets import load_target  # noqa: E402
from report import plots  # noqa: E402
from report.collect import on_target  # noqa: E402
from report.render import target_lines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
M4 = ROOT / "configs" / "targets" / "cortex-m4-80mhz.toml"
M3 = ROOT / "configs" / "targets" / "cortex-m3-24mhz.toml"
PI = ROOT / "configs" / "targets" / "raspberry-pi-4.toml"

ROWS = [
    {"key": "tflm", "title": "int8 TFLM", "latency_unit": "us_per_step",
     "cells": {"latency": 23.0}},
    {"key": "mcu_m4", "title": "tinygru C (Cortex-M4, QEMU)",
     "latency_unit": "instructions_per_step", "cells": {"latency": 32892}},
    {"key": "mcu_m3", "title": "tinygru C (Cortex-M3 portable, QEMU)",
     "latency_unit": "instructions_per_step", "cells": {"latency": 37152}},
]  # fmt: skip
# HAPT's shape: 50 Hz sensor, the front end steps once every 2 samples (25 steps/s).
MANIFEST = {"model": {"config": {"front_end_stride": 2}}, "dataset": {"sample_rate": 50.0}}


def test_the_target_boards_row_gets_time_per_step_and_share_of_the_period() -> None:
    ot = on_target(ROWS, MANIFEST, load_target(M4))
    assert ot is not None
    assert [r["row"] for r in ot["rows"]] == [ROWS[1]["title"]]  # the M4 board's row only
    assert ot["other_cores"] == [ROWS[2]["title"]] and ot["board"] == "mps2-an386"
    assert ot["sample_rate_hz"] == 50.0 and ot["steps_per_sample"] == 0.5
    (m4,) = ot["rows"]
    # 32,892 instructions at 80 MHz: >= 411.15 us; 25 steps/s -> >= 1.028 % of each second
    assert m4["time_per_step_s"] == pytest.approx(411.15e-6, rel=1e-12)
    assert m4["share_of_period"] == pytest.approx(0.01027875, rel=1e-12)
    head, rows = target_lines(ot)
    assert "cortex-m4-80mhz" in head and "80 MHz" in head and "50 Hz" in head
    assert "mps2-an386" in head and "other cores' rows are not at this clock" in head
    assert rows == [[ROWS[1]["title"], "32,892", "≥ 411.1 µs", "≥ 1.03%"]]


def test_the_m3_target_takes_its_own_row_at_its_clock() -> None:
    """The M3 target's own row at its 24 MHz (37,152 / 24e6 s = 1.548 ms, 3.87 % of the
    period); the M4 row is not put at the M3's clock."""
    ot = on_target(ROWS, MANIFEST, load_target(M3))
    (m3,) = ot["rows"]
    assert m3["row"] == ROWS[2]["title"] and ot["other_cores"] == [ROWS[1]["title"]]
    assert m3["time_per_step_s"] == pytest.approx(1.548e-3, rel=1e-12)
    assert m3["share_of_period"] == pytest.approx(0.0387, rel=1e-12)


def test_a_target_sensor_rate_overrides_the_data_set_rate(tmp_path: Path) -> None:
    t = tmp_path / "fast.toml"
    t.write_text(M4.read_text(encoding="utf-8") + "\n[sensor]\nsample_rate_hz = 200.0\n")
    ot = on_target(ROWS, MANIFEST, load_target(t))
    assert ot["sample_rate_hz"] == 200.0
    assert ot["rows"][0]["share_of_period"] == pytest.approx(100 * 411.15e-6, rel=1e-12)


def test_no_target_table_for_a_linux_target_or_none() -> None:
    assert on_target(ROWS, MANIFEST, load_target(PI)) is None
    assert on_target(ROWS, MANIFEST, None) is None
    assert target_lines(None) == ("", [])


CHOICE = {
    "score": "validation macro-F1 (points)",
    "dense_val_score": 90.0,
    "max_val_drop": 1.0,
    "chosen": {"target": 0.75, "achieved": 0.74},
    "why": "the sparsest point within the budget",
}
SWEEP = [
    {"granularity": "dense", "achieved": 0.0, "metric": "accuracy", "val": 0.9, "test": 0.91,
     "val_score": 90.0},
    {"granularity": "block4", "achieved": 0.74, "metric": "accuracy", "val": 0.9, "test": 0.905,
     "val_score": 89.4},
    {"granularity": "block4", "achieved": 0.89, "metric": "accuracy", "val": 0.85, "test": 0.86,
     "val_score": 85.0},
]  # fmt: skip


def _budget_and_star(ax: object) -> tuple[float, tuple[float, float]]:
    lines = ax.get_lines()  # type: ignore[attr-defined]
    budget = [ln for ln in lines if ln.get_linestyle() == "--"]
    star = [ln for ln in lines if ln.get_marker() == "*"]
    assert len(budget) == 1 and len(star) == 1
    return float(budget[0].get_ydata()[0]), (
        float(star[0].get_xdata()[0]),
        float(star[0].get_ydata()[0]),
    )


def test_the_choice_panel_marks_the_budget_line_and_the_chosen_point() -> None:
    fig, ax = plt.subplots()
    plots._choice_panel(ax, SWEEP, CHOICE)
    line, star = _budget_and_star(ax)
    plt.close(fig)
    assert line == 89.0  # dense 90.0 minus max_val_drop 1.0
    assert star == (74.0, 89.4)  # the chosen point, sparsity in %


def test_the_choice_panel_marks_dense_when_nothing_qualified() -> None:
    fig, ax = plt.subplots()
    plots._choice_panel(ax, SWEEP, {**CHOICE, "chosen": None})
    _, star = _budget_and_star(ax)
    plt.close(fig)
    assert star == (0.0, 90.0)


def test_the_sweep_figure_has_the_choice_panel_only_with_a_choice() -> None:
    """Two panels (11 in wide) with a choice, one (6.4 in) without."""
    w_with = Image.open(io.BytesIO(plots.sparsity_sweep(SWEEP, None, CHOICE))).size[0]
    w_without = Image.open(io.BytesIO(plots.sparsity_sweep(SWEEP, None))).size[0]
    assert w_with > 1.5 * w_without
