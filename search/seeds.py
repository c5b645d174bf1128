"""After the choice: a config trained with N seeds through the stage commands; test figures.

This is the only part of a search that reads test data, and it reads it only
through the stages, exactly as ``make demo`` does, per seed k:

    python -m train --config <config with [train] seed = k> --out B_k [--data F]
    python -m quantize prune --bundle B_k --sparsity S --granularity G --seed k   (S > 0)
    python -m quantize qat --bundle B_k --config <config> [--data F]   ([qat] enabled)
    python -m quantize int8 --bundle B_k --no-arena [--data F]
    python -m quantize parity --bundle B_k --no-progress
    python -m firmware_export export --bundle B_k

The test figures are ``reports/parity.json``'s: the float model that was
converted (``float``: the pruned one when pruned) and int8 TFLM (``tflm``, which
the C engine equals bit for bit). The deployed seed is picked on validation
alone: the int8 engine's validation score of each seed's export (the same
measure as the search's), ties to the lower seed. Reported: every seed's
figures, test mean ± std (population std, ddof 0) over the seeds for float and
int8, and the deployed seed's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantize.qat_config import qat_enabled
from search import configfile
from search.space import Candidate

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER_KEYS = ("accuracy", "macro_f1")
FORECAST_KEYS = ("margin", "point_auc", "window_auc", "forecast_mae")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = log.read_text(encoding="utf-8").strip().splitlines()[-1:]
        raise RuntimeError(
            f"{' '.join(cmd[1:4])} failed (exit {r.returncode}): {tail[0] if tail else ''} "
            f"(log: {log})"
        )


def stage_commands(
    config: Path, bundle: Path, cand: Candidate, seed: int, data: str | None
) -> list[list[str]]:
    """The stage commands that train, prune, convert and check one seed."""
    py = sys.executable
    d = ["--data", data] if data else []
    cmds = [[py, "-m", "train", "--config", str(config), "--out", str(bundle), *d]]
    if cand.sparsity > 0:
        cmds.append([py, "-m", "quantize", "prune", "--bundle", str(bundle),
                     "--sparsity", repr(cand.sparsity), "--granularity", cand.granularity,
                     "--seed", str(seed), *d])  # fmt: skip
    if qat_enabled(config):  # as make demo CONFIG=… runs it
        cmds.append([py, "-m", "quantize", "qat", "--bundle", str(bundle),
                     "--config", str(config), *d])  # fmt: skip
    cmds += [
        [py, "-m", "quantize", "int8", "--bundle", str(bundle), "--no-arena", *d],
        [py, "-m", "quantize", "parity", "--bundle", str(bundle), "--no-progress"],
        [py, "-m", "firmware_export", "export", "--bundle", str(bundle)],
    ]
    return cmds


def test_figures(bundle: Path, task: str) -> dict[str, dict[str, Any]]:
    """float and int8 (TFLM) test figures of a bundle's parity report."""
    rep = json.loads((bundle / "reports" / "parity.json").read_text(encoding="utf-8"))
    keys = CLASSIFIER_KEYS if task == "classification" else FORECAST_KEYS
    return {
        name: {k: rep["backends"][b].get(k) for k in keys}
        for name, b in (("float", "float"), ("int8", "tflm"))
    }


def val_score(bundle: Path, arrays: Any) -> dict[str, Any]:
    """The int8 engine of the bundle's export on the search's validation data."""
    from search.evaluate import int8_score

    fw = bundle / "firmware"
    prefix = json.loads((fw / "files.json").read_text(encoding="utf-8"))["prefix"]
    return int8_score(fw, arrays, (bundle / "step_int8.tflite").read_bytes(), prefix)


def _stats(values: list[float]) -> dict[str, Any]:
    a = np.array([v for v in values if v is not None], dtype=np.float64)
    if a.size == 0:
        return {"mean": None, "std": None, "values": values}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=0)), "values": values}


def run(
    raw: dict[str, Any],
    cand: Candidate,
    out: Path,
    seeds: list[int],
    *,
    task: str,
    arrays: Any,
    higher_is_better: bool,
    data: str | None = None,
    header: list[str] | None = None,
    name: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Train ``cand`` (pinned into the config ``raw``) with every seed; the figures (module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in seeds:
        result = out / f"seed{seed}.json"
        if result.is_file():
            per_seed.append(json.loads(result.read_text(encoding="utf-8")))
            continue
        t0 = time.perf_counter()
        config = configfile.write(
            out / f"seed{seed}.toml",
            configfile.candidate_config(raw, cand, seed=seed, name=name),
            header,
        )
        bundle = out / f"seed{seed}"
        logfile = out / f"seed{seed}.log"
        logfile.write_text("", encoding="utf-8")
        for cmd in stage_commands(config, bundle, cand, seed, data):
            _run(cmd, logfile)
        rec = {
            "seed": seed,
            "bundle": str(bundle),
            "val": val_score(bundle, arrays),
            "test": test_figures(bundle, task),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        result.write_text(json.dumps(rec, indent=1), encoding="utf-8")
        log(f"seed {seed}: val {rec['val']['score']:.4f}, test int8 {rec['test']['int8']} "
            f"({rec['seconds']} s)")  # fmt: skip
        per_seed.append(rec)
    sign = 1.0 if higher_is_better else -1.0
    deployed = max(per_seed, key=lambda r: (sign * r["val"]["score"], -r["seed"]))
    keys = CLASSIFIER_KEYS if task == "classification" else FORECAST_KEYS
    return {
        "candidate": cand.to_dict(),
        "label": cand.label(),
        "seeds": seeds,
        "per_seed": per_seed,
        "test": {
            kind: {k: _stats([r["test"][kind][k] for r in per_seed]) for k in keys}
            for kind in ("float", "int8")
        },
        "val": _stats([r["val"]["score"] for r in per_seed]),
        "deployed_seed": deployed["seed"],
        "deployed": deployed,
    }
