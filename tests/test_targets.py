"""Target files: the shipped ones load; every malformed one is one line naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.targets import TargetError, fit, load_target

ROOT = Path(__file__).resolve().parents[1]
GOOD = """name = "t"
kind = "mcu"
board = "m4"
clock_hz = 80_000_000
[budget]
flash_bytes = 1000
ram_bytes = 100
"""


def test_shipped_targets_load() -> None:
    names = {load_target(p).name for p in sorted((ROOT / "configs/targets").glob("*.toml"))}
    assert {"cortex-m4-80mhz", "cortex-m3-24mhz", "raspberry-pi-4"} <= names
    m4 = load_target(ROOT / "configs/targets/cortex-m4-80mhz.toml")
    assert m4.board is not None and m4.board.name == "mps2-an386"
    assert (m4.flash_bytes, m4.ram_bytes, m4.clock_hz) == (262_144, 65_536, 80e6)
    # 32,892 instructions per step at 80 MHz: at least 411 µs; 25 steps/s use >= 1.03 %
    assert m4.time_per_step_s(32_892) == pytest.approx(411.15e-6)
    assert m4.share_of_period(32_892, 0.5, 50.0) == pytest.approx(0.010279, rel=1e-4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace("clock_hz", "clock_hzz"),
            "unknown key 'clock_hzz'; did you mean 'clock_hz'?",
        ),
        (GOOD.replace('board = "m4"', 'board = "m5"'), "board: board 'm5': use one of"),
        (GOOD.replace("ram_bytes = 100", "ram_bytes = -1"), "ram_bytes: expected a value in [1"),
        (GOOD.replace("ram_bytes = 100", 'ram_bytes = "64K"'), "ram_bytes: expected an integer"),
        (GOOD.replace("clock_hz = 80_000_000\n", ""), "clock_hz: required field is missing"),
        (GOOD.replace('kind = "mcu"', 'kind = "fpga"'), "kind: expected one of ['mcu', 'linux']"),
        (GOOD.replace("[budget]", "[budgett]"), "unknown key 'budgett'; did you mean 'budget'?"),
        (GOOD + "[sensor]\nrate = 50\n", "[sensor]: unknown key 'rate'"),
        ("name = ", "not valid TOML"),
    ],
)
def test_bad_target_files_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(TargetError) as e:
        load_target(p)
    assert message in str(e.value) and str(p) in str(e.value)
    assert "\n" not in str(e.value)


def test_non_utf8_target_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes(GOOD.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(TargetError, match="not UTF-8"):
        load_target(p)


def test_fit_names_the_budget_and_the_excess(tmp_path: Path) -> None:
    p = tmp_path / "t.toml"
    p.write_text(GOOD)
    t = load_target(p)
    assert fit(t, 1000, 100) == []
    (line,) = fit(t, 1500, 100)
    assert "flash budget 1,000 B" in line and "1,500 B" in line and "500 B over" in line
