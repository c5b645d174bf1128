"""python -m train --config configs/har.toml [--out build/har] [--data FILE] [--seeds 0,1,2]

python -m train summary build/har build/anomaly    print the trained figures

SIGINT (Ctrl-C) stops it with exit status 130 and one line; the bundle is left as it was.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # The bundle is written by one staged swap at the end (edge_runtime.bundle), so an
        # interrupted run leaves it as it was.
        print("\ntrain: interrupted (SIGINT); the bundle is as it was", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("summary", "bench"):
        from train.train import summary

        summary(argv[1:])
        return 0
    p = argparse.ArgumentParser(
        prog="python -m train", description="Train a float GRU into a bundle."
    )
    p.add_argument("--config", required=True, help="stage config (TOML), e.g. configs/har.toml")
    p.add_argument("--out", help="bundle folder (default: build/<config name>)")
    p.add_argument("--data", help="bring-your-own data: windows .npz or a CSV sample stream")
    p.add_argument("--seeds", help="comma-separated seeds; the first one's model is kept")
    args = p.parse_args(argv)
    from train.config import ConfigError, load_config
    from train.data import DataError

    try:
        cfg = load_config(args.config)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        from train.train import run

        run(args.config, args.out or f"build/{cfg.name}", args.data, seeds)
    except (ConfigError, DataError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
