"""The Pareto front of a study, its re-scoring over K group folds, and the choice.

Front: the complete trials inside the budget that no other such trial dominates
on all four objectives (validation score, instructions per second of sensor
data, flash, RAM). When more than ``size`` trials are on it, ``size`` of them
are kept: the best validation score, the fewest instructions per second, then
the largest crowding distance (NSGA-II's spread measure) over the objectives
normalised to [0, 1], ties by trial number.

Re-scoring: each kept point is trained again on every fold of the non-test
groups (:func:`search.data.folds`), with the search's recipe, and scored on that
fold's held-out groups; its fold mean is what the choice compares. Fold results
are stored in the study (``fold:<trial>:<k>``), so a resumed study does not
train them again.

Choice: the highest fold mean (a forecaster: the lowest forecast error) among the
front; ties go to fewer instructions per second. Every front point is inside the
budget by construction.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from search import evaluate
from search.space import Candidate


def feasible(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials whose measured flash and RAM fit the budget."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        c = t.user_attrs.get("constraints") or [0.0, 0.0]
        if all(v <= 0 for v in c) and t.values is not None:
            out.append(t)
    return out


def _oriented(values: list[float], dirs: list[str]) -> np.ndarray:
    """Objective vector with every component to be minimized."""
    return np.array([v if d == "minimize" else -v for v, d in zip(values, dirs, strict=True)])


def pareto(trials: list[FrozenTrial], dirs: list[str]) -> list[FrozenTrial]:
    """Trials not dominated by another (all objectives at least as good, one better)."""
    pts = [_oriented(t.values, dirs) for t in trials]
    out = []
    for i, p in enumerate(pts):
        dominated = any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(pts) if j != i)
        if not dominated:
            out.append(trials[i])
    return sorted(out, key=lambda t: t.number)


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row (objectives already oriented)."""
    n, m = points.shape
    d = np.zeros(n)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        lo, hi = points[order[0], j], points[order[-1], j]
        d[order[0]] = d[order[-1]] = math.inf
        if hi == lo:
            continue
        for a in range(1, n - 1):
            d[order[a]] += (points[order[a + 1], j] - points[order[a - 1], j]) / (hi - lo)
    return d


def thin(front: list[FrozenTrial], dirs: list[str], size: int) -> list[FrozenTrial]:
    """At most ``size`` points of the front (module doc)."""
    if len(front) <= size:
        return list(front)
    pts = np.stack([_oriented(t.values, dirs) for t in front])
    keep = {int(np.argmin(pts[:, 0])), int(np.argmin(pts[:, 1]))}
    dist = crowding(pts)
    for i in sorted(range(len(front)), key=lambda i: (-dist[i], front[i].number)):
        if len(keep) >= size:
            break
        keep.add(i)
    return sorted((front[i] for i in keep), key=lambda t: t.number)


def fold_key(trial: int, k: int) -> str:
    return f"fold:{trial}:{k}"


def rescore(
    study: optuna.Study,
    trial: FrozenTrial,
    worker: Any,
    splits: list[dict[str, list[str]]],
    log: Any = print,
) -> list[dict[str, Any]]:
    """The trial's candidate trained and scored on every fold (stored in the study)."""
    from search.data import arrays

    cand = Candidate.from_dict(trial.user_attrs["candidate"])
    out = []
    for k, split in enumerate(splits):
        key = fold_key(trial.number, k)
        done = study.user_attrs.get(key)
        if done is None:
            t0 = time.perf_counter()
            arr = arrays(worker.data, worker.ctx.cfg, cand.window, cand.hop, split,
                         cache=worker.study_dir / "cache")  # fmt: skip
            work = worker.study_dir / "folds" / f"{trial.number:04d}-{k}"
            rec = evaluate.evaluate(worker.ctx, cand, arr, work, cost=False)
            done = {
                "fold": k,
                "score": rec["val"]["score"],
                "val": rec["val"],
                "val_groups": list(split.get("val", split.get("fold", []))),
                "epochs_run": rec["train"]["epochs_run"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            study.set_user_attr(key, done)
            log(f"fold {k + 1}/{len(splits)} of trial {trial.number} ({cand.label()}): "
                f"val {done['score']:.4f} ({done['seconds']} s)")  # fmt: skip
        out.append(done)
    return out


def row(trial: FrozenTrial, folds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One front point as the report and summary.json show it."""
    r = trial.user_attrs["result"]
    c = r["cost"]
    out = {
        "trial": trial.number,
        "label": trial.user_attrs.get("label"),
        "candidate": trial.user_attrs["candidate"],
        "baseline": bool(trial.user_attrs.get("baseline")),
        "val_score": r["val"]["score"],
        "val": r["val"],
        "instructions_per_step": c["instructions_per_step"],
        "steps_per_second": c["steps_per_second"],
        "instructions_per_second": c["instructions_per_second"],
        "flash_bytes": c["flash_bytes"],
        "ram_bytes": c["ram_bytes"],
        "params": r["train"]["params"],
        "probe": trial.user_attrs.get("probe"),
    }
    if folds is not None:
        s = np.array([f["score"] for f in folds], dtype=np.float64)
        out["fold_scores"] = s.tolist()
        out["fold_mean"] = float(s.mean())
        out["fold_std"] = float(s.std(ddof=0))
    return out


def choose(rows: list[dict[str, Any]], higher_is_better: bool) -> dict[str, Any]:
    """The best fold mean (ties: fewer instructions per second)."""
    sign = -1.0 if higher_is_better else 1.0
    return min(rows, key=lambda r: (sign * r["fold_mean"], r["instructions_per_second"]))
