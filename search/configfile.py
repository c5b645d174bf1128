"""A candidate as a stage config file: what ``python -m train --config FILE`` and the
pipeline read.

The chosen point is written as the search's config with its window and hop, its
``[model]`` shape, its learning rate, selection off, and a ``[prune]`` section
that pins the prune stage::

    [prune]
    sparsity = 0.75          # 0 = the prune stage does not run
    granularity = "block4"

Everything else (data set, split, training settings, augmentation, threshold) is
the original config's, apart from its name: ``<name>-<target>`` (e.g.
``har-cortex-m4-80mhz``), so that ``python -m train --config chosen.toml`` writes
``build/har-cortex-m4-80mhz`` beside the default's ``build/har``. The header comments say where the file came from.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from search.space import Candidate


def candidate_config(
    raw: dict[str, Any], cand: Candidate, *, seed: int | None = None, name: str | None = None
) -> dict:
    """The config dict ``raw`` with the candidate pinned (and the training seed and the
    config's name, if given)."""
    out = copy.deepcopy(raw)
    if name is not None:
        out["name"] = name
    out.setdefault("data", {}).update(window=cand.window, hop=cand.hop)
    out.setdefault("model", {}).update(cand.model())
    train = out.setdefault("train", {})
    train["learning_rate"] = cand.learning_rate
    if seed is not None:
        train["seed"] = seed
    out["select"] = {"enabled": False}
    out["prune"] = {"sparsity": cand.sparsity, "granularity": cand.granularity}
    return out


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write a {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _table(lines: list[str], name: str, table: dict[str, Any]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if name:
        lines += ["", f"[{name}]"]
    lines += [f"{k} = {_scalar(v)}" for k, v in plain.items()]
    for k, v in table.items():
        full = f"{name}.{k}" if name else k
        if isinstance(v, dict):
            _table(lines, full, v)
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{full}]]"]
                lines += [f"{kk} = {_scalar(vv)}" for kk, vv in item.items()]


def dumps(config: dict[str, Any], header: list[str] | None = None) -> str:
    """TOML text of a config dict (tables, arrays of tables, scalars, lists of scalars)."""
    lines = [f"# {h}" if h else "#" for h in header or []]
    _table(lines, "", config)
    return "\n".join(lines).lstrip("\n") + "\n"


def write(path: Path, config: dict[str, Any], header: list[str] | None = None) -> Path:
    """Write the config and read it back with the train stage's loader (a config the
    stages refuse is never left behind)."""
    import tomllib

    from train.config import load_config

    text = dumps(config, header)
    if tomllib.loads(text) != config:
        raise ValueError(f"{path}: the TOML written does not read back as the config")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    load_config(tmp)
    tmp.replace(path)
    return path
