"""Export a bundle's int8 step model to C: engine model data, TFLM-user files, config, engine.

    B/firmware/
      <prefix>_model.h/.c        model data for the tinygru engine (tg_model_params)
      <prefix>_config.h          the contract's sha256, dims, labels, timing, count scales,
                                 quantization, threshold
      <prefix>_model_tflite.h/.cc  the .tflite as a 16-byte aligned C++ array (TFLM users)
      <prefix>_tflm.h            MicroMutableOpResolver<N> with exactly the model's ops, arena
      engine/                    the hand-written engine sources
      files.json                 every file above with its sha256 and size, and model_data:
                                 flash/RAM bytes, the sha256 of the model data (what the DUT
                                 hashes at boot: sha256 for a portable build, sha256_dsp
                                 for a TG_USE_DSP one) and each FC layer's weight storage

Only files whose bytes changed are rewritten. Nothing carries a time. The export is
atomic, as a stage's bundle writes are: when anything changed, the folder is copied to
``<out>.staging-export`` next to it, the changed files are written there, and the copy
is swapped in (``<out>`` -> ``<out>.old``, staging -> ``<out>``, ``.old`` removed), so a
failing write leaves the previous export untouched. The output folder, and every folder
and file the export writes in it, must not be a symbolic link (one would take the
writes outside it).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime import anomaly, contract
from edge_runtime.bundle import Bundle, swap_in
from edge_runtime.preprocess import InputQuant
from edge_runtime.tflite_reader import read_model
from firmware_export import codegen
from firmware_export.cbuild import ENGINE_DIR
from firmware_export.lower import SPARSE_MODES, Lowered, lower
from firmware_export.pattern import StepGraph, match

STEP_MODEL = contract.STEP_MODEL
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class ExportError(RuntimeError):
    """A bundle cannot be exported; the message is the one-line reason."""


@dataclass
class Prepared:
    """Everything the export and the host check need, computed once."""

    tflite: bytes
    sha256: str
    graph: StepGraph
    model: Lowered
    input_quant: InputQuant
    config: dict[str, Any]


def default_prefix(bundle: Bundle) -> str:
    p = re.sub(r"[^a-z0-9_]", "_", bundle.name.lower()).strip("_") or "model"
    return p if p[0].isalpha() else "m_" + p


def prepare(bundle: Bundle) -> Prepared:
    """Read, match and lower the bundle's step model; collect the config values."""
    if not bundle.has(STEP_MODEL):
        raise ExportError(f"{bundle.root}: no {STEP_MODEL} (run `python -m quantize int8` first)")
    data = bundle.read_bytes(STEP_MODEL)
    m = bundle.manifest
    mc = m["model"]["config"]
    iq_dict = m.get("preprocess", {}).get("input_quant")
    if iq_dict is None:
        raise ExportError(f"{bundle.root}: manifest has no preprocess.input_quant")
    iq = InputQuant.from_dict(iq_dict)
    graph = match(read_model(data))
    model = lower(
        graph, int(mc["n_channels"]), int(mc["front_end_kernel"]), int(mc["front_end_stride"])
    )
    if iq.channels != model.channels:
        raise ExportError(f"input_quant has {iq.channels} channels, the model {model.channels}")
    if (iq.zero_point, iq.scale) != (model.x_zero_point, model.x_scale):
        raise ExportError(
            f"input_quant (scale {iq.scale}, zero point {iq.zero_point}) differs from the step "
            f"model input x (scale {model.x_scale}, zero point {model.x_zero_point})"
        )
    fill = (((m.get("quantization") or {}).get("step") or {}).get("ring_buffer") or {}).get("fill")
    if fill is not None and int(fill) != model.x_zero_point:
        raise ExportError(
            f"quantization.step.ring_buffer.fill {fill} != x zero point {model.x_zero_point}"
        )
    h0 = graph.tensor(graph.h_in[0])
    config = {
        "channels": model.channels,
        "kernel": model.kernel,
        "stride": model.stride,
        "step_inputs": model.step_inputs,
        "front_end_filters": model.front_end.rows if model.front_end is not None else 0,
        "n_layers": len(model.layers),
        "units": model.units,
        "n_outputs": model.n_outputs,
        "head": "softmax" if model.softmax_exp is not None else "forecast",
        "window": int(m["preprocess"]["window"]),
        "hop": int(m["preprocess"]["hop"]),
        "sample_rate": float(m["dataset"]["sample_rate"]),
        "labels": list(m.get("labels") or []),
        "count_scales": [float(c["scale"]) for c in m["dataset"]["channels"]],
        "input_quant": iq.to_dict(),
        "state_scale": h0.scale[0],
        "state_zero_point": h0.zero_point[0],
        "y_scale": model.y_scale,
        "y_zero_point": model.y_zero_point,
        "anomaly_threshold": anomaly.device_threshold(m.get("thresholds")),
        "contract_sha256": bundle.contract_sha256,
    }
    return Prepared(data, hashlib.sha256(data).hexdigest(), graph, model, iq, config)


def arena_info(bundle: Bundle) -> dict[str, Any] | None:
    """The TFLM arena size the quantize stage measured on the host, or None.

    It is not measured here: a too-small probe can crash the tflite_micro wheel, so
    ``python -m quantize int8`` runs the search in forked children.
    """
    q = (bundle.manifest.get("quantization") or {}).get("tflm_arena") or {}
    if isinstance(q.get("bytes"), int):
        label = q.get("label", "host TFLM arena")
        return {"bytes": q["bytes"], "source": "host", "note": f"{label}, from the manifest"}
    return None


def render(
    bundle: Bundle, prep: Prepared, prefix: str, sparse: str = "auto"
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Relative path -> contents of every exported file (files.json excluded), and the
    model data report (flash and RAM bytes, per-layer weight storage)."""
    head = codegen.banner(STEP_MODEL, prep.sha256)
    m = prep.model
    model_c, data = codegen.model_data(prefix, m, prep.config["input_quant"], head, sparse)
    ram = codegen.buffer_bytes(m)
    tensors = ((bundle.manifest.get("sparsity") or {}).get("tensors")) or {}
    for name, info in data["storage"].items():
        key = _keras_tensor(name)
        if key in tensors:
            info["pruned_pattern"] = tensors[key].get("pattern")
            info["pruned_sparsity"] = tensors[key].get("achieved")
    dense = sum(i["dense_bytes"] for i in data["storage"].values())
    stored = sum(i["stored_bytes"] for i in data["storage"].values())
    report = {
        "sparse_mode": sparse,
        "sparse_rule": "block_sparse when its bytes < dense bytes (auto); never; always",
        "flash_bytes": data["flash_bytes"],
        "sha256": data["sha256"],
        "sha256_dsp": data["sha256_dsp"],
        "ram_bytes": ram["total"],
        "state_bytes": ram["state"],
        "scratch_bytes": ram["scratch"],
        "weight_bytes_dense": dense,
        "weight_bytes_stored": stored,
        "weights": data["storage"],
    }
    files = {
        f"{prefix}_model.h": codegen.model_h(prefix, m, head),
        f"{prefix}_model.c": model_c,
        f"{prefix}_config.h": codegen.config_h(prefix, prep.config, head),
        f"{prefix}_model_tflite.h": codegen.tflite_array_h(prefix, head),
        f"{prefix}_model_tflite.cc": codegen.tflite_array_cc(prefix, prep.tflite, head),
        f"{prefix}_tflm.h": codegen.resolver_h(prefix, m.opcodes, arena_info(bundle), head),
    }
    out = {k: v.encode("utf-8") for k, v in files.items()}
    for src in sorted(ENGINE_DIR.iterdir()):
        if src.suffix in (".c", ".h"):
            out[f"engine/{src.name}"] = src.read_bytes()
    return out, report


def _keras_tensor(fc_name: str) -> str:
    """The manifest's sparsity key of an FC layer's weights (gru1_gx -> gru_1/kernel)."""
    m = re.fullmatch(r"gru(\d+)_(gx|gh)", fc_name)
    if m:
        return f"gru_{m.group(1)}/{'kernel' if m.group(2) == 'gx' else 'recurrent_kernel'}"
    return f"{fc_name}/kernel"


def check_budgets(report: dict[str, Any], max_flash: int | None, max_ram: int | None) -> None:
    """Raise ExportError (one line) when model data or caller RAM exceed a budget."""
    if max_flash is not None and report["flash_bytes"] > max_flash:
        raise ExportError(
            f"model data needs {report['flash_bytes']} bytes of flash (weights "
            f"{report['weight_bytes_stored']}, sparse {report['sparse_mode']}), over --max-flash "
            f"{max_flash}"
        )
    if max_ram is not None and report["ram_bytes"] > max_ram:
        raise ExportError(
            f"engine needs {report['ram_bytes']} bytes of RAM (state {report['state_bytes']} + "
            f"scratch {report['scratch_bytes']}), over --max-ram {max_ram}"
        )


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def refuse_links(out_dir: Path, names: Iterable[str]) -> None:
    """ExportError (one line) when ``out_dir`` or any folder or file on the way to one of
    ``names`` inside it is a symbolic link: writing through it would land outside."""
    if out_dir.is_symlink():
        raise ExportError(
            f"{out_dir}: is a symbolic link (refused): the export writes only into a real "
            "folder; remove the link or name the folder it points to with --out"
        )
    for name in names:
        p = out_dir
        for part in Path(name).parts:
            p = p / part
            if p.is_symlink():
                raise ExportError(
                    f"{p}: is a symbolic link (refused): the export writes only regular files "
                    f"inside {out_dir}"
                )


def _old(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".old")


def write_atomically(out_dir: Path, files: dict[str, bytes]) -> list[str]:
    """Write the files whose bytes changed (relative path -> contents) into ``out_dir`` as one
    swap (see the module doc); returns the paths written. Nothing changed: nothing is touched."""
    refuse_links(out_dir, files)
    if not out_dir.name or out_dir.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise ExportError(
            f"{out_dir}: is the current folder or contains it; the export swaps its output "
            "folder as a whole: run it from elsewhere"
        )
    old = _old(out_dir)
    if not out_dir.exists() and old.is_dir():
        raise ExportError(
            f"{out_dir}: missing but {old.name} exists next to it: an export was interrupted "
            f"while swapping in its result; rename {old} to {out_dir}, then export again"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder")
    changed = [k for k, v in sorted(files.items())
               if not ((out_dir / k).is_file() and (out_dir / k).read_bytes() == v)]  # fmt: skip
    if not changed:
        return []
    staging = out_dir.with_name(out_dir.name + ".staging-export")
    if staging.is_symlink() or staging.is_file():
        staging.unlink()
    elif staging.exists():
        shutil.rmtree(staging)
    try:
        if out_dir.is_dir():
            shutil.copytree(out_dir, staging, symlinks=True)  # copy2: unchanged files keep mtimes
        else:
            staging.mkdir(parents=True)
        for k in changed:
            write_if_changed(staging / k, files[k])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, out_dir, old)
    return changed


def recorded_sparse_mode(bundle_root: Path) -> str:
    """The ``--sparse`` mode of the bundle's export (``firmware/files.json``), else auto."""
    index = bundle_root / contract.FIRMWARE_DIR / "files.json"
    try:
        mode = json.loads(index.read_text())["model_data"]["sparse_mode"]
    except (OSError, ValueError, KeyError, TypeError):
        return "auto"
    return mode if mode in SPARSE_MODES else "auto"


def export(
    bundle_dir: str | Path,
    out: str | Path | None = None,
    prefix: str | None = None,
    *,
    sparse: str | None = None,
    max_flash: int | None = None,
    max_ram: int | None = None,
    target: str | Path | None = None,
) -> dict[str, Any]:
    """Export a bundle; returns ``{"out": dir, "files": [...], "written": [...], "model_data"}``.

    ``target``: a target file (:mod:`edge_runtime.targets`); a model whose data (flash)
    or engine state + scratch (RAM) exceeds its budgets is refused, naming the budget and
    by how much (the engine stage checks the Cortex-M4 objects, engine code and stack
    included).

    ``sparse``: weight storage per FC layer (lower.choose_storage); None: the mode of the
    bundle's own export (its ``firmware/files.json``), so the later stages that export
    again (engine, mcu, sizes, bench) keep what ``--sparse`` chose; auto when there is
    none. ``max_flash`` /
    ``max_ram``: budgets in bytes; when exceeded nothing is written (ExportError). The
    files are written as one swap (:func:`write_atomically`): a failure leaves the
    previous export as it was.
    """
    bundle = Bundle.open(bundle_dir)
    if sparse is None:
        sparse = recorded_sparse_mode(bundle.root)
    if sparse not in SPARSE_MODES:
        raise ExportError(f"--sparse: expected one of {list(SPARSE_MODES)}, found {sparse!r}")
    prefix = prefix or default_prefix(bundle)
    if not _PREFIX.match(prefix):
        raise ExportError(f"prefix {prefix!r}: use a lowercase C identifier (letters, digits, _)")
    if codegen.engine_format_version() != codegen.FORMAT_VERSION:
        raise ExportError("engine/tinygru.h TG_FORMAT_VERSION differs from codegen.FORMAT_VERSION")
    prep = prepare(bundle)
    out_dir = Path(out) if out is not None else bundle.root / contract.FIRMWARE_DIR
    files, report = render(bundle, prep, prefix, sparse)
    check_budgets(report, max_flash, max_ram)
    if target is not None:
        from edge_runtime.targets import fit, load_target

        t = load_target(target)
        over = fit(t, int(report["flash_bytes"]), int(report["ram_bytes"]))
        if over:
            raise ExportError("; ".join(over) + " (model data; state + scratch)")
    listing = [
        {"path": k, "sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)}
        for k, v in sorted(files.items())
    ]
    index = {"prefix": prefix, "step_model": STEP_MODEL, "step_model_sha256": prep.sha256,
             "contract_sha256": prep.config["contract_sha256"],
             "engine_version": codegen.engine_version(), "files": listing,
             "model_data": report}  # fmt: skip
    files["files.json"] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    written = write_atomically(out_dir, files)
    return {"out": str(out_dir), "prefix": prefix, "files": sorted(files), "written": written,
            "model_data": report}  # fmt: skip
