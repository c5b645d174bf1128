"""A study from start to finish: create (or resume), run workers, then front, folds,
choice, config file, report and the seed runs."""

from __future__ import annotations

import json
import time
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from search import configfile, evaluate, front, report, space
from search.evaluate import Context, Recipe
from search.space import Candidate
from search.study import Pruner, SearchError, Worker, directions, make_sampler, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and retries are marked experimental in Optuna 5; the converter's calibration
# uses tf.lite.Interpreter, which warns of its deprecation on every conversion.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
# The worker asks and tells trials itself and records their heartbeats in its own thread
# (search.study.Heartbeat); Optuna warns on every ask outside Study.optimize.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def log(msg: str) -> None:
    print(f"[search] {msg}", flush=True)


@dataclass(frozen=True)
class Settings:
    """What a study is created with (stored in the study for every worker)."""

    n_trials: int
    recipe: Recipe
    folds: int = 3
    front_size: int = 8
    sampler: str = "tpe"
    sampler_seed: int = 0
    data_path: str | None = None
    space_file: str | None = None


# --------------------------------------------------------------------------- inputs


def load_inputs(config: str | Path, target: str | Path, data_path: str | None) -> tuple:
    """Config, target and the test-free data; bad input is a one-line SearchError."""
    from edge_runtime.targets import TargetError, load_target
    from search.data import load_without_test
    from train.config import ConfigError, load_config
    from train.data import DataError

    try:
        tgt = load_target(target)
    except TargetError as e:
        raise SearchError(str(e)) from None
    if tgt.kind != "mcu" or tgt.board is None:
        raise SearchError(
            f"{target}: kind {tgt.kind!r}: the search measures instructions on an emulated "
            "board; use an mcu target (configs/targets/cortex-m*.toml)"
        )
    try:
        cfg = load_config(config)
        data = load_without_test(cfg, data_path)
    except (ConfigError, DataError) as e:
        raise SearchError(str(e)) from None
    return cfg, tgt, data


def space_for(cfg: Any, data: Any, space_file: str | None) -> space.Space:
    """The default space around the config's window, narrowed by an optional TOML file."""
    from edge_runtime.settings import SettingsError, check_keys, read_toml

    if data.windows is not None:
        longest = int(data.windows.shape[1])
    else:
        longest = min(len(r.counts) for r in data.recordings)
    sp = space.default_space(cfg.window, cfg.hop, data.task == "forecast", max_window=longest)
    if data.windows is not None:
        sp = space.Space(**{**sp.__dict__, "windows": (longest,)})
    if space_file is None:
        return sp
    try:
        raw = read_toml(space_file)
        keys = ("windows", "filters", "kernels", "strides", "units", "layers", "sparsities",
                "granularities", "learning_rate")  # fmt: skip
        check_keys(raw, keys, str(space_file))
    except SettingsError as e:
        raise SearchError(str(e)) from None
    fields = dict(sp.__dict__)
    for k, v in raw.items():
        if not isinstance(v, list) or not v:
            raise SearchError(f"{space_file}: {k}: expected a non-empty list, found {v!r}")
        fields[k] = tuple(v)
    if len(fields["learning_rate"]) != 2:
        raise SearchError(f"{space_file}: learning_rate: expected [low, high]")
    if sp.forecast and set(fields["strides"]) != {1}:
        raise SearchError(f"{space_file}: strides: a forecaster steps on every sample, use [1]")
    return space.Space(**fields)


def dataset_info(data: Any) -> dict[str, Any]:
    return {
        "id": data.dataset_id,
        "sha256": data.source_sha256,
        "source": data.source,
        "channels": [{"name": c.name, "unit": c.unit, "scale": c.scale} for c in data.channels],
    }


def baseline(cfg: Any, sp: space.Space, bundle: Path | None) -> tuple[Candidate, str]:
    """The hand-picked default: a bundle's model (``make demo``'s), else the config's [model]."""
    if bundle is not None and (bundle / "manifest.json").is_file():
        m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        mc, pre = m["model"]["config"], m["preprocess"]
        sp_ = m.get("sparsity") or {}
        lr = m["stages"]["train"]["config"].get("train", {}).get("learning_rate",
                                                                  cfg.train.learning_rate)  # fmt: skip
        cand = Candidate(
            window=int(pre["window"]), hop=int(pre["hop"]),
            front_end_filters=int(mc["front_end_filters"]),
            front_end_kernel=int(mc["front_end_kernel"]),
            front_end_stride=int(mc["front_end_stride"]),
            gru_units=tuple(int(u) for u in mc["gru_units"]),
            sparsity=float(sp_.get("target", 0.0)),
            granularity=str(sp_.get("granularity", "weight")), learning_rate=float(lr),
        )  # fmt: skip
        return cand, f"bundle {bundle}"
    mc = cfg.model
    pr = cfg.raw.get("prune", {})
    cand = Candidate(
        window=cfg.window, hop=cfg.hop,
        front_end_filters=int(mc.get("front_end_filters", 0)),
        front_end_kernel=int(mc.get("front_end_kernel", 1)),
        front_end_stride=int(mc.get("front_end_stride", 1)),
        gru_units=tuple(int(u) for u in mc.get("gru_units", [32])),
        sparsity=float(pr.get("sparsity", 0.0)), granularity=str(pr.get("granularity", "weight")),
        learning_rate=float(cfg.train.learning_rate),
    )  # fmt: skip
    return cand, f"config {cfg.path} [model]"


def smallest(sp: space.Space) -> Candidate:
    """The cheapest shape of the space: no front end, one small layer, sparsest blocks."""
    s = max(sp.sparsities)
    w = min(sp.windows)
    return Candidate(
        window=w, hop=sp.hop_for(w), front_end_filters=0, front_end_kernel=1,
        front_end_stride=1, gru_units=(min(sp.units),), sparsity=s,
        granularity="block4" if s > 0 and "block4" in sp.granularities else sp.granularities[0],
        learning_rate=sp.learning_rate[0],
    )  # fmt: skip


# --------------------------------------------------------------------------- study


def study_dir(build: Path, name: str) -> Path:
    return build / "search" / name


def configure_threads(threads: int | None) -> None:
    """TensorFlow's thread budget (after train.fit's own configuration)."""
    from train.fit import configure_tf

    configure_tf()
    if threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass


def create(
    config: str,
    target: str,
    settings: Settings,
    *,
    name: str | None,
    url: str,
    build: Path,
    heartbeat: int,
    grace: int,
    resume: bool,
    baseline_bundle: Path | None,
) -> tuple[optuna.Study, Worker]:
    """Create the study (or resume it) and a worker of this process for it."""
    storage = open_storage(url, heartbeat, grace)
    cfg, tgt, data = load_inputs(config, target, settings.data_path)
    sp = space_for(cfg, data, settings.space_file)
    name = name or f"{cfg.name}-{tgt.name}"
    exists = name in {s.study_name for s in optuna.get_all_study_summaries(storage, False)}
    if exists and not resume:
        raise SearchError(
            f"study {name!r} exists in {report_url(url)}: --resume continues it, "
            "--study NAME starts another"
        )
    if not exists and resume:
        raise SearchError(f"study {name!r}: not in {report_url(url)}, nothing to resume")
    sdir = study_dir(build, name)
    ctx = Context(cfg, tgt, tgt.sample_rate_hz or data.sample_rate, dataset_info(data),
                  settings.recipe, sdir)  # fmt: skip
    worker = Worker(ctx, sp, data, url, storage, name, log=log)
    if not exists:
        check_budget(worker, sp)
    sampler = make_sampler(settings.sampler, settings.n_trials, settings.sampler_seed)
    if exists:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        study.set_user_attr("n_trials", settings.n_trials)
        log(f"resuming study {name} ({len(study.trials)} trials so far, {settings.n_trials} asked)")
        return study, worker
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, directions=directions(data.task)
    )
    base, source = baseline(cfg, sp, baseline_bundle)
    attrs = {
        "config_file": Path(config).name, "config_text": Path(config).read_text(encoding="utf-8"),
        "config_path": str(config), "target_file": Path(target).name,
        "target_text": Path(target).read_text(encoding="utf-8"), "target_path": str(target),
        "data_path": settings.data_path, "n_trials": settings.n_trials,
        "recipe": settings.recipe.to_dict(), "space": sp.to_dict(), "folds": settings.folds,
        "front_size": settings.front_size, "sampler": settings.sampler,
        "sampler_seed": settings.sampler_seed, "task": data.task, "created": time.time(),
        "baseline": {"candidate": base.to_dict(), "source": source},
    }  # fmt: skip
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    params = space.params_of(base, sp)
    if params is not None:
        study.enqueue_trial(params, user_attrs={"baseline": True})
    log(f"created study {name} in {report_url(url)}: {settings.n_trials} trials, "
        f"default {base.label()} ({source}) {'enqueued first' if params else 'outside the space'}")  # fmt: skip
    return study, worker


def report_url(url: str) -> str:
    from search.study import shown_url

    return shown_url(url)


def check_budget(worker: Worker, sp: space.Space) -> None:
    """Refuse a target that not even the cheapest candidate of the space fits."""
    cand = smallest(sp)
    cost = evaluate.probe(worker.ctx, cand, worker.arrays(cand))
    over = worker.over_budget(cost)
    if over:
        t = worker.ctx.target
        raise SearchError(
            f"{t.path}: no candidate can fit: the smallest in the search space ({cand.label()}) "
            f"needs {cost['flash_bytes']:,} B flash (engine code {cost['flash_engine_bytes']:,} B) "
            f"and {cost['ram_bytes']:,} B RAM; budget {t.flash_bytes:,} B flash, "
            f"{t.ram_bytes:,} B RAM"
        )


def join(
    name: str, url: str, build: Path, heartbeat: int, grace: int
) -> tuple[optuna.Study, Worker]:
    """A worker for an existing study: its inputs come from the study's attributes."""
    storage = open_storage(url, heartbeat, grace)
    try:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    except KeyError:
        raise SearchError(f"study {name!r}: not in {report_url(url)}") from None
    sdir = study_dir(build, name)
    inputs = sdir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    cfg_path = inputs / attrs["config_file"]
    tgt_path = inputs / attrs["target_file"]
    cfg_path.write_text(attrs["config_text"], encoding="utf-8")
    tgt_path.write_text(attrs["target_text"], encoding="utf-8")
    cfg, tgt, data = load_inputs(cfg_path, tgt_path, attrs.get("data_path"))
    sp = space.Space(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in attrs["space"].items()})  # fmt: skip
    recipe = Recipe(**attrs["recipe"])
    ctx = Context(
        cfg, tgt, tgt.sample_rate_hz or data.sample_rate, dataset_info(data), recipe, sdir
    )
    worker = Worker(ctx, sp, data, url, storage, name, log=log)
    seed = int(attrs.get("sampler_seed", 0)) + 1 + (hash(worker.name) & 0xFFFF)
    sampler = make_sampler(attrs.get("sampler", "tpe"), int(attrs["n_trials"]), seed)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    return study, worker


# --------------------------------------------------------------------------- finishing


def _counts(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    fin = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    secs = [t.user_attrs["seconds"] for t in trials if "seconds" in t.user_attrs]
    ends = [t.datetime_complete.timestamp() for t in fin if t.datetime_complete]
    start = float(study.user_attrs.get("created", min(ends, default=time.time())))
    return {
        "total": len(fin),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(
            t.state == TrialState.PRUNED and "rejected" not in t.user_attrs for t in trials
        ),  # fmt: skip
        "rejected": sum("rejected" in t.user_attrs for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "retried": sum("failed_trial" in t.system_attrs for t in trials),
        "wall_seconds": round(max(ends, default=start) - start, 1),
        "trial_seconds": {
            "median": float(np.median(secs)) if secs else 0.0,
            "total": round(float(sum(secs)), 1),
        },  # fmt: skip
    }


def _probe_error(trials: list[Any]) -> dict[str, Any]:
    rel, dflash, dram = [], [], []
    for t in trials:
        p, r = t.user_attrs.get("probe"), t.user_attrs.get("result")
        if not p or not r:
            continue
        c = r["cost"]
        rel.append(abs(p["instructions_per_step"] / c["instructions_per_step"] - 1))
        dflash.append(abs(p["flash_bytes"] - c["flash_bytes"]))
        dram.append(abs(p["ram_bytes"] - c["ram_bytes"]))
    if not rel:
        return {"n": 0}
    return {"n": len(rel), "instructions_max_rel": max(rel),
            "instructions_median_rel": float(np.median(rel)), "flash_max_abs": max(dflash),
            "ram_max_abs": max(dram)}  # fmt: skip


def finish(
    study: optuna.Study,
    worker: Worker,
    *,
    seeds: list[int],
    build: Path,
    url: str,
    front_size: int | None = None,
) -> dict[str, Any]:
    """Front, folds, choice, config file, report; then the seed runs (test data).

    ``front_size`` overrides the study's number of front points re-scored over folds."""
    from search.data import folds as make_folds

    attrs = study.user_attrs
    task = attrs["task"]
    higher = task == "classification"
    dirs = directions(task)
    sdir = worker.study_dir
    ok = front.feasible(study)
    if not ok:
        raise SearchError(f"study {study.study_name}: no complete trial inside the budget")
    full = front.pareto(ok, dirs)
    kept = front.thin(full, dirs, front_size or int(attrs.get("front_size", 8)))
    splits = make_folds(worker.data, int(attrs.get("folds", 3)))
    log(f"front: {len(full)} points, {len(kept)} re-scored over {len(splits)} folds")
    rows = [front.row(t, front.rescore(study, t, worker, splits, log)) for t in kept]
    chosen = front.choose(rows, higher)
    for r in rows:
        r["chosen"] = r is chosen
    base_row = _baseline_row(study, worker, splits, rows)
    cand = Candidate.from_dict(chosen["candidate"])
    header = [
        f"Chosen by `python -m search` (study {study.study_name}, trial #{chosen['trial']}) for "
        f"target {worker.ctx.target.name}.",
        f"Validation (int8 engine) {chosen['val_score']:.4f} on the config's validation groups; "
        f"mean over {len(splits)} group folds {chosen['fold_mean']:.4f} ± {chosen['fold_std']:.4f}.",
        f"Device: {chosen['instructions_per_step']:,.0f} instructions per step "
        f"({chosen['instructions_per_second']:,.0f} per second of sensor data), "
        f"{chosen['flash_bytes']:,} B flash, {chosen['ram_bytes']:,} B RAM "
        f"({worker.ctx.target.board.name}).",
        "[prune] pins the prune stage: sparsity 0 means no pruning.",
    ]
    raw = tomllib.loads(attrs["config_text"])
    chosen_name = f"{raw['name']}-{worker.ctx.target.name}"
    chosen_path = configfile.write(
        sdir / "chosen.toml", configfile.candidate_config(raw, cand, name=chosen_name), header
    )
    log(f"chosen: trial #{chosen['trial']} {cand.label()}: fold mean {chosen['fold_mean']:.4f}; "
        f"wrote {chosen_path}")  # fmt: skip
    summary = {
        "study": study.study_name,
        "storage": report_url(url),
        "config": attrs["config_path"],
        "target": {**worker.ctx.target.to_dict(), "board": worker.ctx.target.board.name},
        "task": task,
        "score": {
            "name": "val_macro_f1" if higher else "val_forecast_mae",
            "label": "validation macro-F1 (int8 engine)"
            if higher
            else "validation forecast MAE (int8 engine, sensor units)",
            "direction": dirs[0],
            "measured_on": "the int8 C engine (host build, bit-identical to TFLM) on the "
            "validation groups' windows from int16 counts"
            if higher
            else "the int8 C engine streaming the training series from a zero state; mean absolute "
            "forecast error on the held-out stretch (margin and AUC need a labelled anomaly, "
            "which only the test series has)",
        },  # fmt: skip
        "recipe": attrs["recipe"],
        "space": attrs["space"],
        "folds": len(splits),
        "trials": _counts(study),
        "probe_error": _probe_error(study.get_trials(deepcopy=False)),
        "fold_seconds": round(
            sum(f["seconds"] for k, f in study.user_attrs.items() if k.startswith("fold:")), 1
        ),  # fmt: skip
        "front": rows,
        "front_size": len(full),
        "baseline": base_row,
        "chosen": {**chosen, "config": str(chosen_path)},
        "seeds": None,
    }
    others = [front.row(t) for t in ok if t.number not in {r["trial"] for r in rows}]
    report.write(sdir, summary, others)
    if seeds:
        base = Candidate.from_dict(attrs["baseline"]["candidate"])
        points = {"chosen": (cand, chosen, chosen_name), "baseline": (base, base_row, None)}
        summary["seeds"] = run_seeds(study, worker, raw, points, seeds, higher)
        report.write(sdir, summary, others)
    log(f"report: {sdir / 'report.md'}, {sdir / 'report.html'}, {sdir / 'summary.json'}")
    return summary


def _baseline_row(
    study: optuna.Study, worker: Worker, splits: list, rows: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The default's point: its trial (enqueued first) re-scored over the same folds."""
    for r in rows:
        if r["baseline"]:
            return r
    t = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.user_attrs.get("baseline")), None)  # fmt: skip
    if t is None:
        log("default: no complete trial of it (outside the space, pruned or over budget)")
        return None
    r = front.row(t, front.rescore(study, t, worker, splits, log))
    r["chosen"] = False
    return r


def run_seeds(
    study: optuna.Study,
    worker: Worker,
    raw: dict[str, Any],
    points: dict[str, tuple[Candidate, dict[str, Any] | None, str | None]],
    seeds: list[int],
    higher: bool,
) -> dict[str, Any]:
    """The chosen and the default candidate over ``seeds`` (:mod:`search.seeds`); each
    point is (candidate, its front row, the config name its seed configs carry)."""
    from search import seeds as seed_runs
    from search.data import arrays

    sdir = worker.study_dir
    out: dict[str, Any] = {}
    for name, (c, point, config_name) in points.items():
        same = next((n for n, (cc, *_) in points.items() if cc == c and n in out), None)
        if same is not None:  # the default was chosen: one set of runs serves both
            out[name] = {**out[same], "same_as": same}
            continue
        log(f"seeds ({name}, {c.label()}): {seeds}")
        arr = arrays(worker.data, worker.ctx.cfg, c.window, c.hop, cache=sdir / "cache")
        res = seed_runs.run(raw, c, sdir / "seeds" / name, seeds, task=worker.task, arrays=arr,
                            higher_is_better=higher, data=study.user_attrs.get("data_path"),
                            name=config_name, log=log)  # fmt: skip
        res["instructions_per_second"] = point["instructions_per_second"] if point else None
        out[name] = res
    return out


__all__ = ["Pruner", "Settings", "create", "finish", "join", "log"]
