"""``tinygru-edge`` (or ``python -m edge_runtime``): run, benchmark and check a bundle.

::

    tinygru-edge run   --bundle build/har --source serial:/dev/ttyUSB0 [--mode window-exact]
                       [--smooth N] [--out FILE|-]
    tinygru-edge bench --bundle build/har [--seconds 3] [--json FILE|-]
    tinygru-edge check --bundle build/har [--min-accuracy X] [--min-agreement Y] [--junit FILE]
                       [--device URL] [--json FILE|-]

``run`` writes one JSON object per line, flushed per line: ``time`` (Unix
seconds), ``sample``, ``label`` and ``probabilities`` (classifier) or
``forecast``, ``score`` and ``anomaly`` (forecaster), ``y_int8``,
``latency_us``; a ``{"time": ..., "gap": {...}}`` line where the stream broke
(the state is reset there). SIGINT and SIGTERM stop it cleanly with a summary
line on stderr. Exit status: 0 done, 1 a check failed, 2 bad usage or a
bundle/source/device error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import IO, Any

from edge_runtime.bundle import BundleError
from edge_runtime.interpreter import (
    INTERPRETER_PYTHON_HELP,
    InterpreterError,
    InterpreterPythonAction,
)

EXIT_OK = 0
RUN_BACKENDS = ("litert", "xnnpack", "auto", "engine")
BACKEND_HELP = (
    "litert: LiteRT built-in kernels (default); xnnpack: LiteRT with XNNPACK; auto: whichever "
    "interpreter runs; engine: the bundle's exported C engine built with this host's C "
    "compiler on first use (the microcontroller's arithmetic, bit for bit)"
)
EXIT_FAIL = 1
EXIT_ERROR = 2


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signame = signal.Signals(signum).name


def _err(msg: str) -> None:
    print(f"tinygru-edge: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.api import open_bundle
    from edge_runtime.sources import Bad, Gap, Sample, SourceError, iter_events, open_source
    from edge_runtime.stream import Streamer

    b = open_bundle(args.bundle)
    streamer = Streamer(b, args.mode, backend=args.backend, smooth=args.smooth)
    labels = streamer.labels if streamer.classify else None
    try:
        src = open_source(
            args.source,
            b.manifest,
            encoding=args.encoding,
            units=args.units,
            realtime=args.realtime,
        )
    except SourceError as e:
        _err(f"run: {e}")
        return EXIT_ERROR
    out: IO[str] = sys.stdout if args.out in (None, "-") else open(args.out, "w", encoding="utf-8")
    counts = {"samples": 0, "results": 0, "bad": 0, "gaps": 0, "missing": 0}
    reason = "end of stream"
    status = EXIT_OK
    t_start = time.time()

    def on_signal(signum: int, _frame: Any) -> None:
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for ev in iter_events(src):
            if isinstance(ev, Sample):
                counts["samples"] += 1
                for r in streamer.push(ev.counts):
                    d = {"time": round(time.time(), 6), **r.to_dict(labels)}
                    if ev.seq is not None:
                        d["seq"] = ev.seq
                    out.write(json.dumps(d) + "\n")
                    out.flush()
                    counts["results"] += 1
                if args.max_samples and counts["samples"] >= args.max_samples:
                    reason = f"--max-samples {args.max_samples}"
                    break
            elif isinstance(ev, Gap):
                streamer.reset()
                counts["gaps"] += 1
                counts["missing"] += int(ev.missing)
                gap = {"missing": int(ev.missing), "reason": getattr(ev, "reason", None)}
                out.write(json.dumps({"time": round(time.time(), 6), "gap": gap}) + "\n")
                out.flush()
            elif isinstance(ev, Bad):
                counts["bad"] += 1
                if counts["bad"] <= args.show_bad:
                    _err(f"run: bad sample: {ev.reason}")
    except (_Stop, KeyboardInterrupt) as e:
        reason = e.signame if isinstance(e, _Stop) else "SIGINT"
    except BrokenPipeError:
        reason = "output closed"
    except SourceError as e:
        reason = f"source failed: {e}"
        status = EXIT_ERROR
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        try:
            src.close()
        finally:
            if out is not sys.stdout:
                out.close()
    elapsed = time.time() - t_start
    print(
        f"tinygru-edge run: stopped ({reason}): samples {counts['samples']}, results "
        f"{counts['results']}, bad samples {counts['bad']}, gaps {counts['gaps']} "
        f"({counts['missing']} samples missing), {elapsed:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return status


# --------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_runtime.api import open_bundle
    from edge_runtime.bench import BENCH_BACKENDS, bench, render

    b = open_bundle(args.bundle)
    backends = tuple(args.backend) if args.backend else BENCH_BACKENDS
    report = bench(b, seconds=args.seconds, backends=backends, num_threads=args.threads)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
                f.write("\n")
    return EXIT_OK


# --------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    from edge_runtime.api import open_bundle
    from edge_runtime.check import DeviceLinkUnavailable, check_bundle, render, write_junit
    from edge_runtime.device import DeviceError

    b = open_bundle(args.bundle)
    overrides = {
        "min_accuracy": args.min_accuracy,
        "min_argmax_agreement": args.min_agreement,
        "min_point_auc": args.min_point_auc,
        "min_margin": args.min_margin,
        "max_false_alarms": args.max_false_alarms,
        "require_hit": args.require_hit,
    }
    try:
        result = check_bundle(b, backend=args.backend, device=args.device, overrides=overrides)
    except (DeviceLinkUnavailable, DeviceError) as e:
        _err(f"check: {e}")
        return EXIT_ERROR
    except ValueError as e:
        _err(f"check: {e}")
        return EXIT_ERROR
    print(render(result), flush=True)
    if args.junit:
        write_junit(result, args.junit)
    if args.json:
        text = json.dumps(result.to_dict(), indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return EXIT_OK if result.passed else EXIT_FAIL


# --------------------------------------------------------------------------- parser


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, found {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinygru-edge",
        description="Run, benchmark and check a tinygru bundle without TensorFlow.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="stream a sensor source through the model (JSON lines out)")
    r.add_argument("--bundle", required=True, help="bundle folder (with step_int8.tflite)")
    r.add_argument(
        "--source",
        required=True,
        help="serial:/dev/ttyUSB0[@BAUD], socket://HOST:PORT, csv:FILE or - (stdin)",
    )
    r.add_argument("--mode", choices=("window-exact", "continuous"), default=None)
    r.add_argument("--smooth", type=int, default=1, help="average the last N probabilities")
    r.add_argument("--out", default="-", help="output file, or - for stdout (default)")
    r.add_argument("--backend", choices=RUN_BACKENDS, default="litert", help=BACKEND_HELP)
    r.add_argument("--encoding", choices=("auto", "line", "frame"), default="auto")
    r.add_argument("--units", choices=("counts", "physical"), default="counts")
    r.add_argument("--realtime", action="store_true", help="pace csv: and stdin at the sample rate")
    r.add_argument("--max-samples", type=int, default=0, help="stop after N samples")
    r.add_argument("--show-bad", type=int, default=5, help="report the first N bad samples")
    r.add_argument(
        "--interpreter-python", action=InterpreterPythonAction, help=INTERPRETER_PYTHON_HELP
    )
    r.set_defaults(func=cmd_run)

    bp = sub.add_parser("bench", help="latency and throughput on this machine")
    bp.add_argument("--bundle", required=True)
    bp.add_argument("--seconds", type=float, default=3.0, help="measuring budget (default 3)")
    bp.add_argument(
        "--backend", action="append", choices=RUN_BACKENDS, help="repeatable; " + BACKEND_HELP
    )
    bp.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    bp.add_argument("--json", default=None, help="also write the figures as JSON (- = stdout)")
    bp.add_argument(
        "--interpreter-python", action=InterpreterPythonAction, help=INTERPRETER_PYTHON_HELP
    )
    bp.set_defaults(func=cmd_bench)

    c = sub.add_parser("check", help="acceptance check against the bundle's reference data")
    c.add_argument("--bundle", required=True)
    c.add_argument("--device", default=None,
                   help="qemu:<board> (an386, m4, stm32f405, ...: edge_runtime/boards.py), "
                   "a pyserial URL or a tty")  # fmt: skip
    c.add_argument("--backend", choices=RUN_BACKENDS, default="litert", help=BACKEND_HELP)
    c.add_argument("--min-accuracy", type=float, default=None)
    c.add_argument("--min-agreement", type=float, default=None, help="min argmax agreement")
    c.add_argument("--min-point-auc", type=float, default=None)
    c.add_argument("--min-margin", type=float, default=None)
    c.add_argument("--max-false-alarms", type=int, default=None)
    c.add_argument("--require-hit", type=_bool, default=None, metavar="true|false")
    c.add_argument("--junit", default=None, help="write JUnit XML (one testcase per mark)")
    c.add_argument(
        "--interpreter-python", action=InterpreterPythonAction, help=INTERPRETER_PYTHON_HELP
    )
    c.add_argument("--json", default=None, help="write the figures as JSON (- = stdout)")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "smooth", 1) < 1:
        _err("--smooth must be >= 1")
        return EXIT_ERROR
    try:
        return int(args.func(args))
    except (BundleError, InterpreterError) as e:
        _err(f"{args.command}: {e}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
