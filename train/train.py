"""The train stage: data → float model → bundle (manifest, model, reference, reports)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edge_runtime import anomaly, contract
from edge_runtime.bundle import stage_writer
from train import plots
from train.arrays import load_data
from train.classify import skill, train_classifier
from train.config import Config, load_config
from train.data import SensorData
from train.forecast import train_forecaster


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def _channels(data: SensorData, train_counts: np.ndarray) -> list[dict]:
    lo = train_counts.reshape(-1, data.n_channels).min(axis=0)
    hi = train_counts.reshape(-1, data.n_channels).max(axis=0)
    return [
        {"name": c.name, "unit": c.unit, "scale": c.scale, "raw_min": int(a), "raw_max": int(b)}
        for c, a, b in zip(data.channels, lo, hi, strict=True)
    ]


def _summary(runs: list[dict], key: str) -> dict:
    if any(r["test"][key] is None for r in runs):  # a series without labelled anomaly
        return {"mean": None, "std": None, "values": [r["test"][key] for r in runs]}
    vals = np.array([r["test"][key] for r in runs], dtype=np.float64)
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=0)), "values": vals.tolist()}


def run(
    config_path: str, out: str, data_path: str | None = None, seeds: list[int] | None = None
) -> Path:
    """Train per config and write a fresh bundle at ``out``; returns its path."""
    cfg = load_config(config_path)
    t0 = time.perf_counter()
    print(f"[train] {cfg.name}: loading data ({data_path or cfg.data.get('dataset')})")
    data = load_data(cfg, data_path)
    print(
        f"[train] {data.dataset_id}: {len(data.recordings)} recordings, {data.n_channels} channels"
    )
    result = (train_forecaster if cfg.task == "forecast" else train_classifier)(cfg, data, seeds)
    model, mcfg = result["model"], result["model_config"]
    out_dir = Path(out)
    with stage_writer(out_dir, "train", config=cfg.raw, fresh=True) as w:
        w.versions.update(versions())
        m = w.manifest
        m["name"] = cfg.name
        m["task"] = "forecast" if data.task == "forecast" else "classification"
        train_counts = (
            result["train"].counts
            if data.task != "forecast"
            else np.concatenate([r.counts for r in data.recordings_of("train")])
        )
        m["dataset"] = {
            "id": data.dataset_id,
            "sha256": data.source_sha256,
            "source": data.source,
            "sample_rate": data.sample_rate,
            "channels": _channels(data, train_counts),
            "split": data.split,
            "n_windows": result["n_windows"],
        }
        m["labels"] = list(data.label_names)
        m["preprocess"] = {
            "window": cfg.window,
            "hop": cfg.hop,
            "mean": [float(v) for v in result["mean"]],
            "std": [float(v) for v in result["std"]],
        }
        m["model"] = {
            "config": mcfg.to_dict(),
            "params": int(model.count_params()),
            "selection": [s["name"] for s in result["selection"] if s.get("selected")],
        }
        model.save(w.dir / contract.FLOAT_MODEL)
        w.add_file(contract.FLOAT_MODEL)
        report = _write_task_outputs(w, cfg, data, result)
        m.setdefault("metrics", {})["float"] = report["test"]
        report["seconds_total"] = round(time.perf_counter() - t0, 1)
        w.write_json("reports/train.json", report)
    print(f"[train] wrote {out_dir} in {time.perf_counter() - t0:.0f} s")
    return out_dir


def _write_task_outputs(w, cfg: Config, data: SensorData, r: dict) -> dict:
    runs = r["runs"]
    report: dict = {
        "dataset": data.dataset_id,
        "model": r["model_config"].to_dict(),
        "params": int(r["model"].count_params()),
        "selection": r["selection"],
        "selection_metric": cfg.select_metric if r["selection"] else None,
        "runs": runs,
        "test": runs[0]["test"],
        "n_windows": r["n_windows"],
    }
    if data.task == "forecast":
        rep = runs[0]["test"]
        report["baseline_persistence"] = r["baseline"]
        report["summary"] = {k: _summary(runs, k) for k in ("margin", "point_auc", "window_auc")}
        w.manifest.setdefault("thresholds", {})["anomaly_score"] = r["threshold"]
        w.manifest["thresholds"]["anomaly_warmup_samples"] = r["warmup"]
        test = data.recordings_of("test")[0]
        w.write_npz(
            contract.REFERENCE,
            series_counts=r["test_counts"].astype(np.int16),
            labels=r["test_labels"].astype(np.int8),
            forecast=r["test_forecast"].astype(np.float32),
            scores=r["test_scores"].astype(np.float32),
            baseline_scores=r["baseline_scores"].astype(np.float32),
            group=np.array([test.group]),
        )
        (w.dir / "reports").mkdir(exist_ok=True)
        shown = r["test_scores"].copy()
        shown[: r["warmup"]] = 0.0  # the zero-state warm-up is not scored
        plots.score_png(
            w.dir / "reports/scores_float.png",
            shown,
            rep["labelled"],
            rep["zone"],
            r["threshold"],
            r["baseline_scores"],
            f"{data.dataset_id}: float GRU forecast error ({anomaly.describe(rep)})"
            if rep["hit"] is None
            else f"{data.dataset_id}: float GRU forecast error (hit={rep['hit']}, "
            f"margin {rep['margin']:.1f}; persistence margin {r['baseline']['margin']:.1f})",
        )
        w.add_file("reports/scores_float.png")
        return report
    report["summary"] = {k: _summary(runs, k) for k in ("accuracy", "macro_f1")}
    report["skill"] = skill(r["train"].y, r["val"].y, runs[0]["val"]["accuracy"])
    if report["skill"]["at_chance"]:
        print(f"[train] warning: {report['skill']['warning']}")
    te = r["test"]
    rec = data.recordings_of("test") if data.windows is None else []
    offsets = np.cumsum([0] + [len(x.labels) for x in rec]).astype(np.int64)
    w.write_npz(
        contract.REFERENCE,
        x_counts=te.counts.astype(np.int16),
        x_float=r["x_test"].astype(np.float32),
        y=te.y.astype(np.int16),
        groups=te.groups.astype(str),
        starts=te.starts.astype(np.int64),
        probs=r["test_probs"].astype(np.float32),
        rec_counts=(
            np.concatenate([x.counts for x in rec]) if rec else np.zeros((0, data.n_channels))
        ).astype(np.int16),
        rec_labels=(np.concatenate([x.labels for x in rec]) if rec else np.zeros(0)).astype(
            np.int16
        ),
        rec_offsets=offsets,
        rec_groups=np.array([x.group for x in rec], dtype=str),
    )
    (w.dir / "reports").mkdir(exist_ok=True)
    acc = runs[0]["test"]["accuracy"]
    plots.confusion_png(
        w.dir / "reports/confusion_float.png",
        runs[0]["test"]["confusion"],
        data.label_names,
        f"{data.dataset_id} test, float model: accuracy {acc:.3f}",
    )
    w.add_file("reports/confusion_float.png")
    return report


def summary(bundles: list[str]) -> None:
    """Print the figures each bundle's train report holds."""
    for b in bundles:
        path = Path(b) / "reports/train.json"
        if not path.is_file():
            print(f"{b}: no train report (run `make demo`)")
            continue
        rep = json.loads(path.read_text())
        t = rep["test"]
        if "accuracy" in t:
            s = rep["summary"]
            print(
                f"{b}: {rep['dataset']} float test accuracy {t['accuracy']:.4f}, macro-F1 "
                f"{t['macro_f1']:.4f} over {t['n']} windows; {rep['params']} params "
                f"(seeds: acc {s['accuracy']['mean']:.4f} ± {s['accuracy']['std']:.4f})"
            )
        elif t.get("hit") is None:
            print(f"{b}: {rep['dataset']} {anomaly.describe(t)} (no labelled anomaly)")
        else:
            base = rep["baseline_persistence"]
            print(
                f"{b}: {rep['dataset']} peak {t['peak']} labelled {t['labelled']} hit={t['hit']} "
                f"margin {t['margin']:.2f} (persistence {base['margin']:.2f}), point AUC "
                f"{t['point_auc']:.3f}, window AUC {t['window_auc']:.3f}, false alarms "
                f"{t.get('false_alarms')}, delay {t.get('detection_delay')}"
            )
