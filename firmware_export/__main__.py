"""``python -m firmware_export [export] --bundle B [--out DIR] [--prefix NAME]
[--sparse auto|never|always] [--max-flash BYTES] [--max-ram BYTES]``
``python -m firmware_export engine --bundle B [--prefix NAME] [--target FILE]``
``python -m firmware_export mcu --bundle B [--target m4|m3|m7 ...] [--windows N] [--report]``
``python -m firmware_export sizes --bundle B``
``python -m firmware_export cycles --bundle B [--target m4 ...] [--target-file T.toml] [--validate]``

Export writes the C files (see export.py) and prints the list of files written as
JSON; engine runs every reference window through the C engine and the TFLM
interpreter, step by step, and writes engine_outputs.npz and reports/engine.json;
mcu runs them through the engine on emulated Cortex-M boards. Each subcommand is
named like the `make demo` stage that runs it; the earlier names `check` (engine)
and `qemu` (mcu) are still accepted.
Any failure exits non-zero with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import sys

# Subcommands run by a module's own main(): command -> module.
MODULES = {"mcu": "qemu", "sizes": "sizes", "cycles": "cycles"}
# Earlier names, still accepted: `check` is `engine`, `qemu` is `mcu`.
OLD_NAMES = {"check": "engine", "qemu": "mcu"}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in OLD_NAMES:
        args[0] = OLD_NAMES[args[0]]
    if args and args[0] in MODULES:
        import importlib

        return importlib.import_module(f"firmware_export.{MODULES[args[0]]}").main(args[1:])
    command = args.pop(0) if args and args[0] in ("export", "engine") else "export"
    parser = argparse.ArgumentParser(prog=f"python -m firmware_export {command}")
    parser.add_argument("--bundle", required=True, help="bundle folder with step_int8.tflite")
    parser.add_argument("--out", help="output folder (default: BUNDLE/firmware)")
    parser.add_argument("--prefix", help="C symbol prefix (default: from the bundle name)")
    if command == "export":
        parser.add_argument("--sparse", choices=("auto", "never", "always"), default="auto",
                            help="FC weight storage: block-sparse when smaller (auto), never, always")  # fmt: skip
        parser.add_argument("--max-flash", type=int, metavar="BYTES",
                            help="fail when the model data (weights, params, tables) is larger")  # fmt: skip
        parser.add_argument("--max-ram", type=int, metavar="BYTES",
                            help="fail when engine state + scratch is larger")  # fmt: skip
    parser.add_argument("--target", metavar="FILE",
                        help="a target file: fail when the model does not fit its budgets "
                        "(export: model data, state + scratch; engine: the Cortex-M4 objects, "
                        "engine code and stack included)")  # fmt: skip
    ns = parser.parse_args(args)
    try:
        if command == "export":
            from firmware_export.export import export

            result = export(ns.bundle, ns.out, ns.prefix, sparse=ns.sparse,
                            max_flash=ns.max_flash, max_ram=ns.max_ram, target=ns.target)  # fmt: skip
            print(json.dumps({"out": result["out"], "written": result["written"],
                              "unchanged": sorted(set(result["files"]) - set(result["written"]))}))  # fmt: skip
            return 0
        from firmware_export.check import check

        report = check(ns.bundle, ns.out, ns.prefix, target=ns.target)
        print(json.dumps({k: report[k] for k in ("steps_compared", "mismatches", "windows")}))
        return 0 if report["mismatches"] == 0 else 1
    except Exception as e:  # noqa: BLE001 - the CLI contract: one line, non-zero exit
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"firmware_export {command}: {type(e).__name__}: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
