"""``python -m report BUNDLE [BUNDLE ...] --out DIR`` and ``python -m report readme``.

python -m report build/har build/anomaly --out build/reports
python -m report readme --from build/reports/report.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from report import figures, readme, render
from report.collect import ReportError, collect, public

SCHEMA = 1


def build(bundles: list[str], out: str | Path, target: str | None = None) -> dict[str, Any]:
    """Write report.md, report.html, report.json and the figures' PNGs into ``out``;
    with a ``target`` file, each Cortex-M row's time per step and share of the sample
    period at its clock."""
    from edge_runtime.targets import TargetError, load_target

    try:
        t = load_target(target) if target else None
    except TargetError as e:
        raise ReportError(str(e)) from None
    tasks = [collect(b, t) for b in bundles]
    names = [t["name"] for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ReportError(f"two bundles are named {dup[0]!r} (manifest field name)")
    figs = {t["name"]: figures.figures(t) for t in tasks}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "title": render.TITLE, "tasks": [public(t) for t in tasks]}
    for t in doc["tasks"]:
        t["figures"] = [
            {"file": f.name, "title": f.title, "caption": f.caption} for f in figs[t["name"]]
        ]
    figures.write([f for fs in figs.values() for f in fs], out)
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render.markdown(tasks, figs), encoding="utf-8")
    (out / "report.html").write_text(render.page(tasks, figs), encoding="utf-8")
    return doc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["readme"]:
            p = argparse.ArgumentParser(prog="python -m report readme")
            p.add_argument("--from", dest="source", default="build/reports/report.json")
            p.add_argument("--readme", default="README.md")
            ns = p.parse_args(args[1:])
            src = Path(ns.source).resolve()
            here = Path(ns.readme).resolve().parent
            # named as the README's reader would find it: relative to the README, or
            # make demo's place (build/reports/) when it lies outside that checkout
            shown = src.relative_to(here) if src.is_relative_to(here) else Path(*src.parts[-3:])
            body = readme.table(readme.load(src), shown.as_posix())
            changed = readme.update(Path(ns.readme), body)
            print(f"{ns.readme}: results table {'updated' if changed else 'unchanged'}")
            return 0
        p = argparse.ArgumentParser(
            prog="python -m report",
            description="Write the parity report (report.md, report.html, report.json).",
        )
        p.add_argument("bundles", nargs="+", metavar="BUNDLE")
        p.add_argument("--out", required=True, metavar="DIR")
        p.add_argument("--target", metavar="FILE", help="a target file (configs/targets/)")
        ns = p.parse_args(args)
        build(ns.bundles, ns.out, ns.target)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    print(f"report: wrote {Path(ns.out) / 'report.html'}, report.md, report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
