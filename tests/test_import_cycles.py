"""No import cycle among the project's modules: every import counts, also one inside a
function (that is how ``edge_runtime.device`` and ``edge_runtime.qemu_launch`` once
imported each other), so each module can be read, tested and moved with what is
below it only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_runtime", "train", "quantize", "firmware_export", "report", "pipeline")


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the packages (a package is its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x / from .m import x
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    deps.add(sub if sub in mods else base)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*path[path.index(d) :], d]
            if d not in state and (found := visit(d)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_module_imports_itself_through_others() -> None:
    mods = modules()
    assert {"edge_runtime.device", "edge_runtime.qemu_launch", "edge_runtime.connect"} <= set(mods)
    found = cycle(import_graph(mods))
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_the_device_link_is_below_the_emulator_and_the_factory_above_both() -> None:
    g = import_graph(modules())
    assert "edge_runtime.qemu_launch" not in g["edge_runtime.device"]
    assert "edge_runtime.connect" not in g["edge_runtime.device"] | g["edge_runtime.qemu_launch"]
    assert {"edge_runtime.device", "edge_runtime.qemu_launch"} <= g["edge_runtime.connect"]


def test_the_scanner_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n    from . import c\n")
    (pkg / "c.py").write_text("")
    mods = {"pkg": pkg / "__init__.py", **{f"pkg.{m}": pkg / f"{m}.py" for m in "abc"}}
    g = import_graph(mods)
    assert g["pkg.b"] == {"pkg.a", "pkg.c"}
    assert cycle(g) == ["pkg.a", "pkg.b", "pkg.a"]
