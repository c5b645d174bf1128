"""The stages of ``make demo``: one command each, with what its cache key depends on."""

from __future__ import annotations

import sys
from pathlib import Path

from firmware_export.qemu import MCU_TARGET_ARGS
from pipeline.cache import Stage
from quantize.qat_config import qat_enabled

__all__ = [
    "DEFAULT_SWEEP",
    "DEFAULT_TARGET",
    "PRUNED_TASKS",
    "ROOT",
    "STAGE_NAMES",
    "TASKS",
    "report_stage",
    "task_stages",
]

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("har", "anomaly")
# Only the activity model is pruned: at 75% the anomaly forecaster kept its hit but
# lost most of its margin (7.1 -> 2.5), see the quantize notes.
PRUNED_TASKS = frozenset({"har"})
# The prune stage deploys the sparsest of these within the config's [prune] max_val_drop
# (granularity: the config's [prune] granularity, block4 by default)
# of the dense model on validation and within the target's flash (sparsest tried first).
DEFAULT_SWEEP = "0,0.5,0.75,0.9"
DEFAULT_TARGET = "configs/targets/cortex-m4-80mhz.toml"
STAGE_NAMES = (
    "train",
    "prune",
    "qat",
    "int8",
    "parity",
    "export",
    "engine",
    "firmware",
    "mcu",
    "check",
    "report",
)
FIRMWARE_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (shorter commands), else absolute."""
    p = path.absolute()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def _code(*folders: str) -> tuple[Path, ...]:
    return tuple(ROOT / f for f in folders)


def _requirements() -> tuple[Path, ...]:
    return (ROOT / "requirements.txt", ROOT / "requirements-nodeps.txt")


def task_stages(
    task: str,
    *,
    build: Path,
    data: Path | None = None,
    sweep: str | None = DEFAULT_SWEEP,
    target: Path | None = None,
    config: Path | None = None,
    python: str = sys.executable,
) -> list[Stage]:
    """The stages of one task, in order, on the bundle ``build/<task>``.

    ``sweep`` (comma-separated sparsities, None for none: the dense model is deployed)
    applies to the pruned tasks; ``target`` (a target file, default
    :data:`DEFAULT_TARGET`) bounds the prune choice and the export.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {', '.join(TASKS)}")
    bundle = build / task
    b = _shown(bundle)
    config = config if config is not None else ROOT / "configs" / f"{task}.toml"
    data_args = ["--data", _shown(data)] if data is not None else []
    data_inputs = (data,) if data is not None else ()
    req = _requirements()
    quantize_code = _code("quantize", "train", "edge_runtime")
    runtime_json = _shown(bundle / "reports" / "runtime.json")
    target = target if target is not None else ROOT / DEFAULT_TARGET
    target_args = ["--target", _shown(target)]

    def stage(
        name: str,
        argv: list[str],
        sources: tuple[Path, ...],
        inputs: tuple[Path, ...] = (),
        tools: tuple[str, ...] = (),
    ) -> Stage:
        return Stage(name, tuple(argv), bundle, sources, inputs + req, tools)

    stages = [
        stage(
            "train",
            [python, "-m", "train", "--config", _shown(config), "--out", b, *data_args],
            _code("train", "edge_runtime"),
            inputs=(config, *data_inputs),
        )
    ]
    if task in PRUNED_TASKS:
        argv = [python, "-m", "quantize", "prune", "--bundle", b, "--choose",
                "--sweep", sweep or "0", *target_args]  # fmt: skip
        stages.append(
            stage("prune", argv + data_args, quantize_code, inputs=(*data_inputs, target))
        )
    if qat_enabled(config):  # [qat] enabled = true: fine-tune before int8
        argv = [python, "-m", "quantize", "qat", "--bundle", b, "--config", _shown(config)]
        stages.append(stage("qat", argv + data_args, quantize_code, inputs=(config, *data_inputs)))
    stages += [
        stage(
            "int8",
            [python, "-m", "quantize", "int8", "--bundle", b, *data_args],
            quantize_code,
            inputs=data_inputs,
        ),
        stage("parity", [python, "-m", "quantize", "parity", "--bundle", b], quantize_code),
        stage(
            "export",
            [python, "-m", "firmware_export", "export", "--bundle", b, *target_args],
            _code("firmware_export", "edge_runtime"),
            inputs=(target,),
        ),
        stage(
            "engine",
            [python, "-m", "firmware_export", "engine", "--bundle", b, *target_args],
            _code("firmware_export", "edge_runtime"),
            inputs=(target,),
        ),
        stage(
            "firmware",
            ["make", "-B", "--no-print-directory", "-C", "firmware", f"BUNDLE={bundle.resolve()}"],
            _code("firmware", "firmware_export/engine"),
            tools=FIRMWARE_TOOLS,
        ),
        stage(
            "mcu",
            [python, "-m", "firmware_export", "mcu", "--bundle", b, *MCU_TARGET_ARGS, "--report"],
            _code("firmware_export", "firmware", "edge_runtime"),
            tools=FIRMWARE_TOOLS,
        ),
        stage(
            "check",
            [python, "-m", "edge_runtime", "check", "--bundle", b, "--json", runtime_json],
            _code("edge_runtime"),
        ),
    ]
    return stages


def report_stage(
    tasks: list[str], *, build: Path, target: Path | None = None, python: str = sys.executable
) -> Stage:
    """The report over the bundles of ``tasks``, written to ``build/reports``."""
    out = build / "reports"
    target = target if target is not None else ROOT / DEFAULT_TARGET
    argv = [python, "-m", "report", *(_shown(build / t) for t in tasks), "--out", _shown(out),
            "--target", _shown(target)]  # fmt: skip
    return Stage("report", tuple(argv), out, _code("report"), (*_requirements(), target))
