"""``python -m pipeline demo [--task har|anomaly|all] [--build DIR] [--data FILE]
[--config FILE] [--target FILE] [--sweep S|none] [--force] [--only STAGE] [--verbose]``

Runs every stage of every task as a subprocess (train, prune for har, int8, parity,
export, engine, firmware, mcu, check), then the report over the tasks and the
summary. A stage whose key and outputs are unchanged is skipped (see cache.py);
stamps and stage logs live in ``<build>/.stamps/<task>/``, never in a bundle.
``--config`` is the task's stage config (default ``configs/<task>.toml``); ``--target``
a target file (default ``configs/targets/cortex-m4-80mhz.toml``): the prune choice,
the export and the engine stage hold the model to its budgets and the report gives
each Cortex-M row's time per step at its clock.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge_runtime.settings import SettingsError
from edge_runtime.targets import TargetError, load_target
from pipeline.cache import Stage, StageFailed, run_chain, stamped_link
from pipeline.stages import (
    DEFAULT_SWEEP,
    DEFAULT_TARGET,
    PRUNED_TASKS,
    ROOT,
    STAGE_NAMES,
    TASKS,
    report_stage,
    task_stages,
)

REPORT_TASK = "all"
ALONGSIDE_NICENESS = 10  # the priority of the chains that run beside the first task's


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    for k, v in (
        ("TF_CPP_MIN_LOG_LEVEL", "3"),
        ("TF_ENABLE_ONEDNN_OPTS", "0"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
    ):
        env.setdefault(k, v)
    return env


def _sweep(text: str) -> str | None:
    if text.strip().lower() in ("", "none"):
        return None
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            value = -1.0
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated sparsities in [0, 1) or 'none', found {text!r}"
            )
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="every stage of the tasks, cached",
        description="Train, prune (har), int8, parity, export, engine check, firmware, "
        "QEMU and runtime checks per task, then the report; unchanged stages are skipped.",
    )
    demo.add_argument("--task", choices=[*TASKS, "all"], default="all")
    demo.add_argument("--build", default="build", help="build folder (default: build)")
    demo.add_argument("--data", help="bring-your-own data file (.npz windows or .csv stream)")
    demo.add_argument(
        "--sweep",
        type=_sweep,
        default=DEFAULT_SWEEP,
        help=f"sparsities har's prune stage may deploy, sparsest tried first (default "
        f"{DEFAULT_SWEEP}; 'none': the dense model)",
    )
    demo.add_argument(
        "--config", help="stage config of the task (default configs/<task>.toml), e.g. for --data"
    )
    demo.add_argument(
        "--target",
        help=f"target file: board, clock, flash/RAM budgets, sensor rate (default {DEFAULT_TARGET})",
    )
    demo.add_argument("--force", action="store_true", help="run every stage, ignoring the cache")
    demo.add_argument(
        "--only", choices=STAGE_NAMES, help="run this one stage (per task), ignoring the cache"
    )
    demo.add_argument(
        "-v", "--verbose", action="store_true", help="show the stages' output as they run"
    )
    return parser


def _combine(links: list[str]) -> str:
    return hashlib.sha256("\0".join(links).encode()).hexdigest()


def _run_chains(
    chains: list[tuple[str, list[Stage] | None, str]],
    stamps: Path,
    *,
    alongside: bool,
    **chain_opts: Any,
) -> list[str]:
    """Run each task's chain (``None``: only its stamped link); returns the tasks' links.

    With ``alongside``, every task after the first runs at the same time as the first,
    at a lower CPU priority (``ALONGSIDE_NICENESS``): the first task's chain is the
    longer one (har's ~10 minutes against the anomaly chain's ~2 minutes of CPU), so
    the others take the cycles it leaves idle (its single-threaded stages, the gaps of
    its training) instead of slowing its training. Their lines are held and printed
    once the first task is done, so the first task's live progress line stays
    readable. A failure in any chain is raised after every chain has stopped.
    """

    def chain(task: str, stages: list[Stage], opts: dict[str, Any]) -> str:
        return run_chain(stages, task=task, stamp_dir=stamps / task, **opts)[0]

    links = {task: link for task, stages, link in chains if stages is None}
    todo = [(task, stages) for task, stages, _ in chains if stages is not None]
    if not alongside or len(todo) < 2:
        for task, stages in todo:
            links[task] = chain(task, stages, chain_opts)
        return [links[task] for task, _, _ in chains]
    (first, first_stages), rest = todo[0], todo[1:]
    held: dict[str, list[str]] = {task: [] for task, _ in rest}
    with ThreadPoolExecutor(max_workers=len(rest)) as pool:
        futures = {
            task: pool.submit(chain, task, stages, {**chain_opts, "out": held[task].append,
                                                    "started": None, "progress": None,
                                                    "niceness": ALONGSIDE_NICENESS})
            for task, stages in rest
        }  # fmt: skip
        chain_opts["out"](f"[{', '.join(held)}] running alongside [{first}]: lines follow")
        error: StageFailed | None = None
        try:
            links[first] = chain(first, first_stages, chain_opts)
        except StageFailed as e:
            error = e
        for task, future in futures.items():
            try:
                links[task] = future.result()
            except StageFailed as e:
                error = error or e
            finally:
                for line in held[task]:
                    chain_opts["out"](line)
    if error is not None:
        raise error
    return [links[task] for task, _, _ in chains]


def demo(ns: argparse.Namespace) -> int:
    tasks = list(TASKS) if ns.task == "all" else [ns.task]
    build = Path(ns.build).absolute()
    data = Path(ns.data).absolute() if ns.data else None
    if data is not None and not data.is_file():
        print(f"pipeline: --data {ns.data}: no such file", file=sys.stderr)
        return 2
    target = Path(ns.target).absolute() if ns.target else ROOT / DEFAULT_TARGET
    try:
        load_target(target)
    except TargetError as e:
        print(f"pipeline: --target: {e}", file=sys.stderr)
        return 2
    config = Path(ns.config).absolute() if ns.config else None
    if config is not None and not config.is_file():
        print(f"pipeline: --config {ns.config}: no such file", file=sys.stderr)
        return 2
    if ns.only == "prune" and not PRUNED_TASKS & set(tasks):
        print(
            f"pipeline: --only prune: task {ns.task} has no prune stage "
            f"(pruned: {', '.join(sorted(PRUNED_TASKS))})",
            file=sys.stderr,
        )
        return 2
    env = _env()
    stamps = build / ".stamps"

    tty = sys.stdout.isatty() and not ns.verbose

    def out(line: str) -> None:
        print("\r" + line if tty else line, flush=True)

    def started(head: str) -> None:  # on a terminal the stage's line shows while it runs
        print(head, end=" ", flush=True)

    width = shutil.get_terminal_size((100, 24)).columns

    def progress(head: str, text: str) -> None:  # the stage's own progress bar, one line
        line = f"{head} {text}" if text else head
        print("\r" + line[: width - 1] + "\x1b[K", end="", flush=True)

    try:
        chain_opts = {
            "force": ns.force,
            "only": ns.only,
            "cwd": ROOT,
            "env": env,
            "verbose": ns.verbose,
            "out": out,
            "started": started if tty else None,
            "progress": progress if tty else None,
        }
        chains = []
        for task in tasks:
            stages = task_stages(task, build=build, data=data, sweep=ns.sweep, target=target,
                                 config=config)  # fmt: skip
            names = [s.name for s in stages]
            if ns.only is not None and ns.only not in names:
                chains.append((task, None, stamped_link(stamps / task, names[-1])))
            else:
                chains.append((task, stages, ""))
        links = _run_chains(chains, stamps, alongside=ns.only is None and not ns.verbose,
                            **chain_opts)  # fmt: skip
        if ns.only in (None, "report"):
            run_chain(
                [report_stage(tasks, build=build, target=target)],
                task=REPORT_TASK,
                stamp_dir=stamps / REPORT_TASK,
                prev=_combine(links),
                **chain_opts,
            )
        if ns.only is None:
            argv = [sys.executable, "-m", "edge_runtime.summary", *(str(build / t) for t in tasks)]
            rc = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode
            if rc != 0:
                raise StageFailed(REPORT_TASK, "summary", rc)
    except StageFailed as e:
        print(str(e), file=sys.stderr, flush=True)
        return 1
    except SettingsError as e:  # a malformed switch in a config, e.g. [qat] enabled
        print(f"pipeline: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    return demo(ns)


if __name__ == "__main__":
    sys.exit(main())
