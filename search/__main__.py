"""python -m search: the best GRU of the family for a target chip.

    python -m search --config configs/har.toml --target configs/targets/cortex-m4-80mhz.toml \\
        --trials 40 [--storage postgresql://user@host/db] [--study NAME] [--resume]
    python -m search worker --study NAME --storage postgresql://user@host/db
    python -m search create ...   (the study only: workers elsewhere run its trials)
    python -m search finish --study NAME [--storage URL] [--seeds 5]

``run`` (the default command) creates the study (or resumes it with ``--resume``),
runs trials in this process until N have finished (other workers may join), then
re-scores the front over group folds, writes the chosen config, the report and
``summary.json`` under ``<build>/search/<study>/``, and finally trains the chosen
config and the default with ``--seeds`` seeds (the only step that reads test data).
Every failure exits with status 2 and one line: ``search: error: <reason>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

COMMANDS = ("run", "create", "worker", "finish")


def _seeds(text: str) -> list[int]:
    try:
        if "," in text:
            return [int(v) for v in text.split(",") if v.strip()]
        return list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count (5) or seeds (0,1,2), found {text!r}"
        ) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage", help="database URL (default: SQLite file <build>/search/studies.db)"
    )
    p.add_argument("--build", default="build", help="build folder (default: build)")
    p.add_argument("--heartbeat", type=int, default=30, help="seconds between trial heartbeats")
    p.add_argument("--grace", type=int, help="seconds without heartbeat before a trial is failed "
                   "and retried (default: 4 × heartbeat)")  # fmt: skip
    p.add_argument("--threads", type=int, help="TensorFlow threads of this worker (default 2)")


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m search {command}".replace(" run", ""),
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    _common(p)
    if command in ("worker", "finish"):
        p.add_argument("--study", required=True, help="study name")
    if command == "finish":
        p.add_argument("--seeds", type=_seeds, default=list(range(5)),
                       help="seeds of the test runs: a count or a list (default 5; 0 = none)")  # fmt: skip
        p.add_argument("--front", type=int, help="front points re-scored, at most (default: "
                       "the study's)")  # fmt: skip
    if command in ("run", "create"):
        p.add_argument("--config", required=True, help="stage config, e.g. configs/har.toml")
        p.add_argument("--target", required=True, help="target file, configs/targets/*.toml")
        p.add_argument("--trials", type=int, required=True, help="trials to finish in the study")
        p.add_argument("--study", help="study name (default: <config name>-<target name>)")
        p.add_argument("--resume", action="store_true", help="continue the study of that name")
        p.add_argument("--data", help="bring-your-own data file (as python -m train --data)")
        p.add_argument("--epochs", type=int, help="training epochs per trial, at most (default: "
                       "the config's, at most 30)")  # fmt: skip
        p.add_argument("--patience", type=int, help="early-stopping patience per trial "
                       "(default: the config's, at most 8)")  # fmt: skip
        p.add_argument(
            "--prune-epochs", type=int, default=16, help="prune ramp + fine-tuning epochs"
        )
        p.add_argument("--calibration-samples", type=int, default=1000)
        p.add_argument("--folds", type=int, default=3, help="group folds re-scoring the front")
        p.add_argument("--front", type=int, default=8, help="front points re-scored, at most")
        p.add_argument("--sampler", choices=("tpe", "nsga2"), default="tpe")
        p.add_argument("--sampler-seed", type=int, default=0)
        p.add_argument("--space", help="TOML file narrowing the search space (see search/space.py)")
        p.add_argument("--baseline-bundle", help="bundle of the hand-picked default "
                       "(default: <build>/<config name> when it exists, else the config's [model])")  # fmt: skip
    if command == "run":
        p.add_argument("--seeds", type=_seeds, default=list(range(5)),
                       help="seeds of the test runs: a count or a list (default 5; 0 = none)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    args = _parser(command).parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        print("search: warning: PYTHONHASHSEED is not 0: converted models may differ from run "
              "to run (make search sets it)", file=sys.stderr)  # fmt: skip
    from search.study import SearchError

    try:
        return _run(command, args)
    except SearchError as e:
        print(f"search: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("search: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, exit 2
        if os.environ.get("TINYGRU_TRACEBACK"):
            raise
        from search.study import one_line

        print(f"search: error: {command}: {one_line(e)}", file=sys.stderr)
        return 2


def _run(command: str, args: argparse.Namespace) -> int:
    from search import driver
    from search.study import SearchError, storage_url

    build = Path(args.build)
    url = storage_url(args.storage, build)
    grace = args.grace or 4 * args.heartbeat
    if args.heartbeat < 1 or grace <= args.heartbeat:
        raise SearchError(
            f"--heartbeat {args.heartbeat} / --grace {grace}: need 1 <= heartbeat < grace"
        )
    # Before anything runs TensorFlow (the budget check converts a model): its thread
    # pools are fixed from the first operation on.
    driver.configure_threads(args.threads)
    if command in ("run", "create"):
        from search.evaluate import Recipe
        from train.config import ConfigError, load_config

        if args.trials < 1:
            raise SearchError(f"--trials: expected a count >= 1, found {args.trials}")
        try:
            cfg = load_config(args.config)
        except ConfigError as e:
            raise SearchError(str(e)) from None
        recipe = Recipe(
            epochs=args.epochs or min(cfg.train.epochs, 30),
            patience=args.patience or min(cfg.train.patience, 8),
            prune_epochs=args.prune_epochs,
            seed=cfg.train.seed,
            calibration_samples=args.calibration_samples,
        )
        settings = driver.Settings(
            n_trials=args.trials, recipe=recipe, folds=args.folds, front_size=args.front,
            sampler=args.sampler, sampler_seed=args.sampler_seed, data_path=args.data,
            space_file=args.space,
        )  # fmt: skip
        bb = Path(args.baseline_bundle) if args.baseline_bundle else build / cfg.name
        study, worker = driver.create(
            args.config, args.target, settings, name=args.study, url=url, build=build,
            heartbeat=args.heartbeat, grace=grace, resume=args.resume, baseline_bundle=bb,
        )  # fmt: skip
        if command == "create":
            print(study.study_name)
            return 0
    else:
        study, worker = driver.join(args.study, url, build, args.heartbeat, grace)
    n = int(study.user_attrs["n_trials"])
    if command in ("run", "worker"):
        ran = worker.run(study, n)
        driver.log(f"worker {worker.name}: ran {ran}")
    if command in ("run", "finish"):
        if command == "finish":
            worker.run(study, n)  # waits for running trials; runs missing ones
        front_size = getattr(args, "front", None) if command == "finish" else None
        driver.finish(study, worker, seeds=args.seeds, build=build, url=url, front_size=front_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
