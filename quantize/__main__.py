"""python -m quantize {prune,qat,int8,parity} --bundle B …

    prune   magnitude-prune model_float.keras and fine-tune it → model_pruned.keras
    qat     quantization-aware fine-tuning → model_qat.keras, when it wins on validation
    int8    convert the model (pruned when present) to one full-int8 GRU step → step_int8.tflite
    check   host parity on reference.npz: float vs LiteRT vs LiteRT+XNNPACK vs TFLM

Every failure exits with status 2 and one line: ``quantize: error: <command>: <reason>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, found {text!r}"
        ) from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, found {text!r}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m quantize",
        description="The quantize stage: prune, convert to one int8 GRU step, check parity.",
    )
    p.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _prune_parser(sub)
    _qat_parser(sub)
    _int8_parser(sub)
    _check_parser(sub)
    return p


def _prune_parser(sub: Any) -> None:
    pr = sub.add_parser(
        "prune",
        help="magnitude-prune and fine-tune model_float.keras → model_pruned.keras",
        description="Prune model_float.keras (cubic schedule, masks kept through fine-tuning); "
        "writes model_pruned.keras, reports/prune.json and the manifest's sparsity section.",
    )
    pr.add_argument("--bundle", required=True, help="bundle folder written by python -m train")
    pr.add_argument("--sparsity", type=float, default=0.75, help="target sparsity (default 0.75)")
    pr.add_argument("--granularity", choices=("weight", "block4"), default=None,
                    help="default: weight; with --choose the config's [prune] granularity (block4)")  # fmt: skip
    pr.add_argument(
        "--sweep",
        type=_floats,
        help="also prune at these sparsities and plot metric vs sparsity "
        "(the point at --sparsity is the pruned model itself, not trained twice)",
    )
    pr.add_argument(
        "--sweep-granularity",
        choices=("weight", "block4"),
        action="append",
        help="granularities of the sweep, repeatable (default: --granularity's)",
    )
    pr.add_argument("--epochs", type=int, help="ramp + fine-tuning epochs, at most (default 60)")
    pr.add_argument("--batch-size", type=int, help="default: the train stage's batch size")
    pr.add_argument("--learning-rate", type=float, help="learning rate of the ramp (default 1e-3)")
    pr.add_argument("--frequency", type=int, help="optimizer steps between mask updates")
    pr.add_argument(
        "--finetune-learning-rate",
        type=float,
        help="learning rate once the masks are final (default 3e-4)",
    )
    pr.add_argument(
        "--patience", type=int, help="fine-tuning epochs without val-loss gain (default 10)"
    )
    pr.add_argument(
        "--distill",
        type=float,
        help="weight α of the KL term to the dense model's softened outputs "
        "(default 0.9; 0 = labels only)",
    )
    pr.add_argument("--temperature", type=float, help="distillation temperature T (default 4)")
    pr.add_argument(
        "--no-augment",
        action="store_true",
        help="prune and fine-tune without the train stage's augmentation",
    )
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--data", help="the bring-your-own data file the bundle was trained on")
    pr.add_argument(
        "--choose",
        action="store_true",
        help="deploy by budget: the sparsest --sweep point within --max-val-drop of the dense "
        "model on validation and within the target's flash; else the dense model. The "
        "bundle config's [prune] section gives the defaults (sparsity there pins one point)",
    )
    pr.add_argument(
        "--max-val-drop",
        type=float,
        help="with --choose: validation macro-F1 points a classifier may lose (default 1), "
        "or % a forecaster's validation error may grow (default 10)",
    )
    pr.add_argument("--target", help="with --choose: a target file (configs/targets/*.toml)")
    pr.add_argument(
        "--jobs",
        type=_positive,
        help="with --choose: sweep points trained at once, each in its own process "
        "(default: one per CPU core; the chosen model is the same for any value)",
    )


def _qat_parser(sub: Any) -> None:
    q = sub.add_parser(
        "qat",
        help="quantization-aware fine-tuning → model_qat.keras (when validation chooses it)",
        description="Fine-tune the model the int8 stage would convert (model_pruned.keras, "
        "else model_float.keras) through the fake-quant int8 step; writes model_qat.keras "
        "and reports/qat.json only when a fine-tuned epoch beats the pre-QAT model on the "
        "validation data, else nothing. Settings: the config's [qat] section.",
    )
    q.add_argument("--bundle", required=True)
    q.add_argument("--config", help="a stage config whose [qat] section holds the settings")
    q.add_argument("--seed", type=int, help="override [qat] seed")
    q.add_argument("--epochs", type=int, help="override [qat] epochs")
    q.add_argument("--data", help="the bring-your-own data file the bundle was trained on")


def _int8_parser(sub: Any) -> None:
    q = sub.add_parser(
        "int8",
        help="convert to one full-int8 GRU step → step_int8.tflite",
        description="Calibrate on (x, h_{t-1}) pairs from training windows, convert the "
        "single-step model to full int8 (state scale 1/128, zero point 0) in a fresh "
        "process, check purity, measure the smallest host TFLM arena; writes "
        "step_int8.tflite, the manifest's quantization section and preprocess.input_quant.",
    )
    q.add_argument("--bundle", required=True)
    q.add_argument("--window-model", action="store_true", help="also write window_int8.tflite")
    q.add_argument("--calibration-samples", type=int, default=1000, help="(x, h) pairs")
    q.add_argument("--seed", type=int, default=0, help="calibration draw")
    q.add_argument("--no-arena", action="store_true", help="skip the TFLM arena measurement")
    q.add_argument("--data", help="the bring-your-own data file the bundle was trained on")
    q.add_argument(
        "--in-process",
        action="store_true",
        help="convert in this process (faster; the bytes are then not guaranteed reproducible)",
    )


def _check_parser(sub: Any) -> None:
    c = sub.add_parser(
        "parity",
        aliases=["check"],
        help="host parity of the int8 step chain → reports/parity.json, parity.md",
        description="Run the step chain on reference.npz in float (Keras), LiteRT built-in "
        "kernels, LiteRT default (XNNPACK) and TFLM; writes reports/parity.json, "
        "reports/parity.md and thresholds.device in the manifest.",
    )
    c.add_argument("--bundle", required=True)
    c.add_argument("--limit", type=int, help="first N reference windows only (no thresholds)")
    c.add_argument("--no-progress", action="store_true")


def _choose(args: argparse.Namespace) -> int:
    """``prune --choose``: the deployed sparsity chosen by budget (see prune_stage.choose)."""
    from edge_runtime.bundle import Bundle
    from quantize.prune import PruneSettings
    from quantize.prune_stage import choose, run
    from train.config import parse_config

    b = Bundle.open(args.bundle)
    pc = parse_config(b.manifest["stages"]["train"]["config"], b.root / "manifest.json").prune
    batch = b.manifest["stages"]["train"]["config"].get("train", {}).get("batch_size", 64)
    optional = {"epochs": args.epochs, "learning_rate": args.learning_rate,
                "frequency": args.frequency, "finetune_learning_rate": args.finetune_learning_rate,
                "patience": args.patience, "distill": args.distill,
                "temperature": args.temperature}  # fmt: skip
    kw = {k: v for k, v in optional.items() if v is not None}
    granularity = args.granularity or pc.granularity  # the command line, else the config
    settings = PruneSettings(target=pc.sparsity or 0.75, granularity=granularity,
                             batch_size=batch, seed=args.seed, augment=not args.no_augment, **kw)  # fmt: skip
    if pc.sparsity is not None and pc.sparsity > 0:  # [prune] sparsity pins the point
        run(args.bundle, settings, data_path=args.data)
        print(f"[quantize] prune: sparsity {pc.sparsity:g} pinned by the config's [prune]")
        return 0
    sweep = [] if pc.sparsity == 0 else list(args.sweep or pc.sweep)
    max_drop = args.max_val_drop if args.max_val_drop is not None else pc.max_val_drop
    choose(args.bundle, settings, sweep, max_val_drop=max_drop, target_file=args.target,
           data_path=args.data, jobs=args.jobs)  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if args.command == "prune":
        if args.choose:
            return _choose(args)
        from quantize.prune_stage import prune

        section = prune(
            args.bundle,
            sparsity=args.sparsity,
            granularity=args.granularity or "weight",
            sweep=args.sweep,
            sweep_granularities=args.sweep_granularity,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            frequency=args.frequency,
            finetune_learning_rate=args.finetune_learning_rate,
            patience=args.patience,
            distill=args.distill,
            temperature=args.temperature,
            augment=not args.no_augment,
            seed=args.seed,
            data_path=args.data,
        )
        overall = section.get("overall")
        print(
            "[quantize] prune: wrote model_pruned.keras"
            + (f", sparsity {100 * overall:.1f}%" if isinstance(overall, float) else "")
        )
    elif args.command == "qat":
        _qat(args)
    elif args.command == "int8":
        from quantize.int8 import int8

        int8(
            args.bundle,
            window_model=args.window_model,
            calibration_samples=args.calibration_samples,
            seed=args.seed,
            data_path=args.data,
            arena=not args.no_arena,
            fresh_process=not args.in_process,
        )
    else:
        from quantize.parity import check

        check(args.bundle, progress=not args.no_progress, limit=args.limit)
    return 0


def _qat(args: argparse.Namespace) -> None:
    import dataclasses

    from quantize.qat_config import QATSettings, read_qat_config

    settings = read_qat_config(args.config)[1] if args.config else QATSettings()
    over = {k: v for k, v in (("seed", args.seed), ("epochs", args.epochs)) if v is not None}
    if over:
        settings = QATSettings.from_dict(
            {**dataclasses.asdict(settings), **over}, "the command line"
        )
    from quantize.qat import qat_stage

    qat_stage(args.bundle, settings, data_path=args.data)


def _one_line(e: BaseException) -> str:
    text = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
    if not text:
        text = type(e).__name__
    known = ("BundleError", "StageError", "PurityError", "DataError", "ConfigError", "QATError")
    if type(e).__name__ not in known and not isinstance(e, (ValueError, OSError)):
        text = f"{type(e).__name__}: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"quantize: error: {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line
        if args.traceback:
            traceback.print_exc()
        print(f"quantize: error: {args.command}: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
