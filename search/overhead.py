"""What sharing a study costs: trials per hour of N workers against 1 on one storage.

    python -m search.overhead [--storage postgresql://...] [--trials 12] [--workers 2]

Runs the same study twice, one after the other, on the same storage (a throwaway
PostgreSQL server of :mod:`search.pgserver` unless ``--storage`` names one):
once with 1 worker and once with ``--workers`` workers, every worker a separate
``python -m search worker`` process with ``--threads 1``. So that the ratio
measures the coordination (locks, heartbeats, the database, caches filled twice,
the last trial's tail) and not the luck of the draw, every trial is the same
work: one shape (the config's model; ``--space`` changes it) and one learning
rate, the same seed, so the trials train identically. Figures per run:

- ``span_seconds``: first trial started to last trial finished (the study's times);
- ``process_seconds``: workers launched to the last one exited (imports, data,
  the budget gate's probe included);
- trials per hour over each, and the ratio N workers / 1 worker (ideal: N);
- the 1-minute load average before and after, since other work on the machine
  competes for the same cores.

The result goes to ``<build>/search/overhead.json`` and a one-line summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    return env


def one_shape_space(cfg_path: str, lr: float | None) -> str:
    """A space of one candidate: the config's window, model and learning rate."""
    from train.config import load_config

    cfg = load_config(cfg_path)
    m = cfg.model
    if len(set(m.get("gru_units", [32]))) > 1:
        raise SystemExit(f"{cfg_path}: GRU layers of different sizes: give --space (one shape)")
    filters = int(m.get("front_end_filters", 0))
    rate = float(lr if lr is not None else cfg.train.learning_rate)
    lines = [
        f"windows = [{cfg.window}]",
        f"filters = [{filters}]",
        f"kernels = [{int(m.get('front_end_kernel', 1))}]",
        f"strides = [{int(m.get('front_end_stride', 1))}]",
        f"layers = [{len(m.get('gru_units', [32]))}]",
        f"units = [{', '.join(str(u) for u in sorted(set(m.get('gru_units', [32]))))}]",
        "sparsities = [0.0]",
        f"learning_rate = [{rate!r}, {rate!r}]",
    ]
    return "\n".join(lines) + "\n"


def run_study(
    name: str, n_workers: int, args: argparse.Namespace, url: str, space: Path, logs: Path
) -> dict[str, Any]:
    """Create the study, run ``n_workers`` worker processes to the end; its figures."""
    import optuna
    from optuna.trial import TrialState

    from search.study import storage_url

    common = ["--storage", url, "--build", str(args.build), "--threads", "1"]
    create = [sys.executable, "-m", "search", "create", "--config", args.config,
              "--target", args.target, "--trials", str(args.trials), "--study", name,
              "--epochs", str(args.epochs), "--space", str(space), *common]  # fmt: skip
    r = subprocess.run(create, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "create failed")
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with ExitStack() as stack:
        procs = []
        for i in range(n_workers):
            f = stack.enter_context(open(logs / f"{name}-worker{i}.log", "w", encoding="utf-8"))
            cmd = [sys.executable, "-m", "search", "worker", "--study", name, *common]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=f,
                                          stderr=subprocess.STDOUT))  # fmt: skip
        codes = [p.wait() for p in procs]
    process_seconds = time.monotonic() - t0
    if any(codes):
        raise SystemExit(f"{name}: worker exit codes {codes} (logs in {logs})")
    storage = optuna.storages.RDBStorage(storage_url(url, Path(args.build)))
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    span = (end - start).total_seconds()
    return {
        "study": name,
        "workers": n_workers,
        "trials": len(done),
        "complete": sum(t.state == TrialState.COMPLETE for t in done),
        "by_worker": {
            w: sum(t.user_attrs.get("worker") == w for t in done)
            for w in sorted({t.user_attrs.get("worker") for t in done})
        },  # fmt: skip
        "trial_seconds_median": sorted(t.user_attrs.get("seconds", 0.0) for t in done)[
            len(done) // 2
        ],
        "span_seconds": round(span, 1),
        "process_seconds": round(process_seconds, 1),
        "trials_per_hour_span": round(3600 * len(done) / span, 1),
        "trials_per_hour_process": round(3600 * len(done) / process_seconds, 1),
        "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m search.overhead", description=__doc__.split("\n")[0]
    )
    p.add_argument("--storage", help="database URL (default: a throwaway PostgreSQL server)")
    p.add_argument("--config", default="configs/basic_motions.toml")
    p.add_argument("--target", default="configs/targets/cortex-m4-80mhz.toml")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30, help="training epochs per trial")
    p.add_argument("--learning-rate", type=float, help="(default: the config's)")
    p.add_argument("--space", help="TOML space file (default: the config's one shape)")
    p.add_argument("--build", default="build")
    args = p.parse_args(argv)

    from search.pgserver import temporary

    out = Path(args.build) / "search" / "overhead"
    out.mkdir(parents=True, exist_ok=True)
    space = Path(args.space) if args.space else out / "space.toml"
    if not args.space:
        space.write_text(one_shape_space(args.config, args.learning_rate), encoding="utf-8")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with ExitStack() as stack:
        url = args.storage or stack.enter_context(temporary())
        runs = [run_study(f"overhead-{n}w-{stamp}", n, args, url, space, out)
                for n in (1, args.workers)]  # fmt: skip
    one, many = runs
    result = {
        "storage": "throwaway PostgreSQL 15" if not args.storage else "given",
        "config": args.config,
        "target": args.target,
        "space": space.read_text(encoding="utf-8"),
        "epochs": args.epochs,
        "runs": runs,
        "ratio_span": round(many["trials_per_hour_span"] / one["trials_per_hour_span"], 3),
        "ratio_process": round(many["trials_per_hour_process"] / one["trials_per_hour_process"], 3),
        "cpus": os.cpu_count(),
    }
    (Path(args.build) / "search" / "overhead.json").write_text(
        json.dumps(result, indent=1) + "\n", encoding="utf-8"
    )
    print(
        f"[search] overhead: {args.trials} trials, 1 worker {one['trials_per_hour_span']}/h, "
        f"{args.workers} workers {many['trials_per_hour_span']}/h: ratio "
        f"{result['ratio_span']} over the trials' span, {result['ratio_process']} over the "
        f"processes' wall time (load {one['load_before']} / {many['load_before']} before)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
