"""Flash, RAM and stack of the exported engine on a Cortex-M4, and the no-heap/no-float proof.

Every engine source of the export (as its ``files.json`` lists them) and the generated
``<prefix>_model.c`` are compiled on their own with ``arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
-Os -ffunction-sections -fdata-sections -fstack-usage -fcallgraph-info=su -c``
(hard float on purpose: any float in the engine would then show up as VFP
instructions, any double as an ``__aeabi_d*`` call).

Flash: the model object's symbols (``nm -S``) sorted into weights, biases,
multipliers/shifts, lookup tables, input quantization and the descriptor
struct; the engine is the ``size`` text + data of the engine objects. Object sizes,
before any link-time ``--gc-sections`` (an upper bound of the linked figure).

RAM: state (GRU states + ring of the last k samples) and scratch are the
``<P>_STATE_BYTES`` / ``<P>_SCRATCH_BYTES`` of the generated header (what
``tg_state_buffer_size`` / ``tg_scratch_buffer_size`` return), plus
``sizeof(tg_stream)`` on the target. Stack: the deepest path of the call graphs
gcc writes (``.ci``), each function weighted by its ``.su`` frame, from
``tg_window`` and from ``tg_push_sample``; library calls (memset, memmove) have no
``.su`` and count 0 — they are listed under ``stack.unresolved``.

Checks on the objects: no reference to malloc/calloc/realloc/free, no float helper
(``__aeabi_f*``, ``__aeabi_d*``, ``__*sf*``/``__*df*`` libgcc routines), no VFP
instruction (any ``v*`` mnemonic in ``objdump -d``).

    python -m firmware_export.sizes --bundle B   # prints the dict as JSON
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge_runtime.boards import board

TOOLS = {"cc": "arm-none-eabi-gcc", "nm": "arm-none-eabi-nm", "size": "arm-none-eabi-size",
         "objdump": "arm-none-eabi-objdump"}  # fmt: skip
CFLAGS = ("-std=c99", "-Os", "-Wall", "-Wextra", "-Werror", f"-mcpu={board('m4').cpu}", "-mthumb",
          "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffunction-sections", "-fdata-sections",
          "-fstack-usage", "-fcallgraph-info=su")  # fmt: skip
ENTRY_POINTS = ("tg_window", "tg_push_sample")
HEAP = ("malloc", "calloc", "realloc", "free", "_malloc_r", "_calloc_r", "_realloc_r", "_free_r")
_FLOAT_HELPER = re.compile(r"^(__aeabi_[fd]\w*|__\w*[sd]f\d?\w*|__aeabi_[ui]?[lf]2[fd]\w*)$")
_VFP = re.compile(r"^\s*[0-9a-f]+:\s+(?:[0-9a-f]{4}\s?){1,2}\s+(v[a-z0-9.]+)", re.M)
PROBE = '#include "tinygru.h"\ntg_stream tg_sizeof_stream_probe;\n'


def missing_tools() -> str | None:
    for tool in TOOLS.values():
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian: gcc-arm-none-eabi, see debian-packages.txt)"
    return None


def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc.stdout


def model_part(symbol: str, prefix: str) -> str:
    """Which flash part a model data symbol is."""
    name = symbol[len(prefix) + 1 :] if symbol.startswith(prefix + "_") else symbol
    if name in ("model", "data_parts"):  # the model's structure; the list of its hashed data
        return "descriptor"
    if name in ("input_multiplier", "input_bias"):
        return "input_quantization"
    if name.endswith("weights"):
        return "weights"
    if name.endswith("bias"):
        return "biases"
    if name.endswith(("mult", "shift")):
        return "multipliers_shifts"
    if name.split("_", 1)[-1] in ("sigmoid", "tanh") or name.endswith("softmax_exp"):
        return "tables"
    return "other"


def _nm(obj: Path) -> list[tuple[str, int, str]]:
    """(name, size, type) of every sized symbol."""
    rows = []
    for line in _run(TOOLS["nm"], "-S", "--size-sort", str(obj)).splitlines():
        parts = line.split()
        if len(parts) == 4:
            rows.append((parts[3], int(parts[1], 16), parts[2]))
    return rows


def _undefined(objs: Iterable[Path]) -> set[str]:
    out = _run(TOOLS["nm"], "-u", *map(str, objs))
    return {line.split()[-1] for line in out.splitlines() if line.strip().startswith("U ")}


def _size(obj: Path) -> int:
    """text + data of one object (Berkeley format: rodata counts as text)."""
    line = _run(TOOLS["size"], str(obj)).splitlines()[1].split()
    return int(line[0]) + int(line[1])


_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_FRAME = re.compile(r"\\n(\d+) bytes \((\w+(?:,\w+)*)\)")


def call_graph(ci_files: Iterable[Path]) -> tuple[dict[str, tuple[int, str]], dict[str, set[str]]]:
    """Frames {function: (bytes, qualifier)} and edges {caller: callees} of gcc's .ci files."""
    frames: dict[str, tuple[int, str]] = {}
    edges: dict[str, set[str]] = {}
    for ci in ci_files:
        text = ci.read_text()
        for title, label in _NODE.findall(text):
            m = _FRAME.search(label)
            if m:
                frames[title] = (int(m.group(1)), m.group(2))
        for a, b in _EDGE.findall(text):
            edges.setdefault(a, set()).add(b)
    return frames, edges


def deepest(
    entry: str, frames: dict[str, tuple[int, str]], edges: dict[str, set[str]]
) -> tuple[int, list[str], set[str]]:
    """Largest sum of frames along a call path from ``entry``; the path; callees without a frame."""
    unresolved: set[str] = set()
    memo: dict[str, tuple[int, list[str]]] = {}

    def walk(f: str, active: tuple[str, ...]) -> tuple[int, list[str]]:
        if f in active:
            raise ValueError(f"recursion through {f}: no static stack bound")
        if f in memo:
            return memo[f]
        if f not in frames:
            unresolved.add(f)
            return 0, [f]
        best: tuple[int, list[str]] = (0, [])
        for g in sorted(edges.get(f, ())):
            best = max(best, walk(g, (*active, f)), key=lambda t: t[0])
        memo[f] = (frames[f][0] + best[0], [f, *best[1]])
        return memo[f]

    total, path = walk(entry, ())
    return total, [p.rsplit(":", 1)[-1] for p in path], unresolved


def _header_define(header: Path, name: str) -> int:
    m = re.search(rf"#define {name} (\d+)", header.read_text())
    if m is None:
        raise ValueError(f"{header}: no #define {name}")
    return int(m.group(1))


def engine_sources(firmware_dir: str | Path) -> list[Path]:
    """The engine's ``.c`` files of an export, as its ``files.json`` lists them (a file an
    older export left in ``engine/`` is not part of it)."""
    fw = Path(firmware_dir)
    index = fw / "files.json"
    try:
        files = json.loads(index.read_text())["files"]
        paths = [f["path"] for f in files]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: not an export's file list ({e}): run the export") from e
    return sorted(fw / p for p in paths if p.startswith("engine/") and p.endswith(".c"))


def firmware_sizes(
    firmware_dir: str | Path, prefix: str, work: Path | None = None
) -> dict[str, Any]:
    """Sizes and checks of ``firmware_dir`` (an export: files.json, engine/, <prefix>_model.*)."""
    fw = Path(firmware_dir).resolve()
    engine_srcs = engine_sources(fw)
    model_src = fw / f"{prefix}_model.c"
    with tempfile.TemporaryDirectory(prefix="tg_sizes_") as tmp:
        d = Path(work) if work is not None else Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        (d / "probe.c").write_text(PROBE)
        objs: dict[Path, Path] = {}
        for src in [*engine_srcs, model_src, d / "probe.c"]:
            obj = d / (src.stem + ".o")
            _run(TOOLS["cc"], *CFLAGS, f"-I{fw}", f"-I{fw / 'engine'}", "-c", str(src),
                 "-o", str(obj), cwd=d)  # fmt: skip
            objs[src] = obj
        engine_objs = [objs[s] for s in engine_srcs]
        model_obj = objs[model_src]

        parts: dict[str, int] = {}
        symbols: dict[str, dict[str, int]] = {}
        for name, size, _ in _nm(model_obj):
            part = model_part(name, prefix)
            parts[part] = parts.get(part, 0) + size
            symbols.setdefault(part, {})[name] = size
        model_total = _size(model_obj)
        engine_by_object = {o.stem: _size(o) for o in engine_objs}
        engine_total = sum(engine_by_object.values())
        stream_size = next(
            s for n, s, _ in _nm(objs[d / "probe.c"]) if n == "tg_sizeof_stream_probe"
        )

        frames, edges = call_graph(d.glob("*.ci"))
        stack: dict[str, Any] = {"method": "deepest .ci call path, frames from .su (-Os)",
                                 "unresolved": []}  # fmt: skip
        unresolved: set[str] = set()
        for entry in ENTRY_POINTS:
            total, path, unres = deepest(entry, frames, edges)
            stack[entry] = {"bytes": total, "path": path}
            unresolved |= unres
        stack["unresolved"] = sorted(unresolved)
        stack["bytes"] = max(stack[e]["bytes"] for e in ENTRY_POINTS)
        stack["dynamic"] = sorted(f for f, (_, q) in frames.items() if q != "static")

        undefined = _undefined([*engine_objs, model_obj])
        heap = sorted(undefined & set(HEAP))
        floats = sorted(u for u in undefined if _FLOAT_HELPER.match(u))
        vfp: dict[str, list[str]] = {}
        for o in engine_objs:
            found = sorted(set(_VFP.findall(_run(TOOLS["objdump"], "-d", str(o)))))
            if found:
                vfp[o.stem] = found

    P = prefix.upper()
    header = fw / f"{prefix}_model.h"
    state = _header_define(header, f"{P}_STATE_BYTES")
    scratch = _header_define(header, f"{P}_SCRATCH_BYTES")
    flash_parts = {**parts, "engine_code": engine_total}
    return {
        "prefix": prefix,
        "cflags": " ".join(CFLAGS),
        "flash": {
            "parts": flash_parts,
            "model_data": model_total,
            "engine_code": engine_total,
            "total": model_total + engine_total,
            "engine_by_object": engine_by_object,
            "model_symbols": symbols,
            "note": "object sizes before --gc-sections",
        },
        "ram": {
            "state": state,
            "scratch": scratch,
            "stream_struct": stream_size,
            "stack": stack["bytes"],
            "total": state + scratch + stream_size + stack["bytes"],
        },
        "stack": stack,
        "checks": {
            "heap_references": heap,
            "float_helpers": floats,
            "vfp_instructions": vfp,
            "undefined_symbols": sorted(undefined),
            "ok": not heap and not floats and not vfp and not stack["dynamic"],
        },
    }


def engine_sizes(bundle_dir: str | Path) -> dict[str, Any]:
    """Export the bundle and measure its firmware (see the module docstring)."""
    from firmware_export.export import export

    result = export(bundle_dir)
    return firmware_sizes(result["out"], result["prefix"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_export.sizes")
    parser.add_argument("--bundle", required=True)
    ns = parser.parse_args(argv)
    why = missing_tools()
    if why:
        print(f"firmware_export.sizes: {why}", file=sys.stderr)
        return 1
    rep = engine_sizes(ns.bundle)
    rep["flash"].pop("model_symbols")
    print(json.dumps(rep, indent=1))
    return 0 if rep["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
