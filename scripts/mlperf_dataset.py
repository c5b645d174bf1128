"""Write an MLPerf Tiny runner data set from a bundle's reference windows.

The MLPerf Tiny host runner (mlcommons/tiny ``benchmark/runner``) reads a data set
folder ``<dataset_path>/<model id>/``: a truth file ``y_labels.csv`` (one row per
input file, no header: ``file,classes,class``) and the input files, each sent to the
device as it is (``db load <bytes>``, then ``db <hex>`` chunks) before ``infer``.
This script writes that folder from a classifier bundle's ``reference.npz``: one
``.bin`` per reference window (``x_counts``, ``(N, T, C)``), its label from ``y``.

The input format is what the tinygru DUT firmware takes (``firmware/dut``; the
``m-info-input-[...]`` line of ``info%`` says which):

- ``int16`` (default; firmware built with ``DUT_INPUT=int16``): the window's raw
  sensor counts, int16 little endian, sample-major (channel fastest):
  ``T * C * 2`` bytes; the device quantizes them itself with the bundle's
  ``preprocess.input_quant`` contract, as in the field.
- ``int8`` (firmware built with ``DUT_INPUT=int8``): the int8 model input ``x`` of
  every sample, ``q = clamp(zp + rhaz((count * M_c + B_c) / 2^S))`` computed here
  with ``edge_runtime.preprocess.quantize_counts``, sample-major: ``T * C`` bytes.

A file is always one whole window (the device refuses ``infer`` on anything else).
The model id names the folder; the runner picks its test by the id the device
reports (``profile%`` -> ``m-model-[...]``, the firmware's ``DUT_MODEL_ID``), and the
test's ``model`` field names the data set folder: an entry of the stock test scripts
(``ic01``, ``kws01``, ``vww01``: download and ``infer 1 0`` per file in accuracy mode)
or one of your own.

Usage (from the repository root)::

    .venv/bin/python scripts/mlperf_dataset.py --bundle build/har --out datasets \\
        [--model-id ic01] [--format int16|int8] [--limit N]

prints one summary line; writes ``<out>/<model id>/y_labels.csv`` and the ``.bin``
files, and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_runtime.bundle import Bundle, BundleError  # noqa: E402
from edge_runtime.preprocess import InputQuant, quantize_counts  # noqa: E402

FORMATS = ("int16", "int8")
TRUTH_FILE = "y_labels.csv"  # the name the stock test scripts give (truth_file)
MODEL_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def window_bytes(counts: np.ndarray, fmt: str, iq: InputQuant | None = None) -> bytes:
    """One window ``(T, C)`` of int16 counts as the device's ``db`` bytes in ``fmt``."""
    c = np.asarray(counts)
    if c.ndim != 2:
        raise ValueError(f"a window must be (samples, channels), got shape {c.shape}")
    if fmt == "int16":
        return c.astype("<i2").tobytes()
    if fmt == "int8":
        if iq is None:
            raise ValueError("int8 format needs the bundle's input quantization")
        return quantize_counts(c.astype(np.int16), iq).astype(np.int8).tobytes()
    raise ValueError(f"format {fmt!r}: expected one of {list(FORMATS)}")


def write_dataset(
    bundle_dir: str | Path,
    out: str | Path,
    *,
    model_id: str | None = None,
    fmt: str = "int16",
    limit: int | None = None,
) -> dict[str, Any]:
    """Write ``<out>/<model id>/`` (``y_labels.csv`` and one ``.bin`` per window); returns a
    summary: folder, files, bytes per file, classes, format."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {list(FORMATS)}, found {fmt!r}")
    b = Bundle.open(bundle_dir)
    if b.task != "classification":
        raise ValueError(
            f"{b.root}: a {b.task} bundle; the runner scores one result vector per file against "
            "a class, which needs a classifier's reference windows (x_counts, y)"
        )
    model_id = model_id or b.name
    if not (1 <= len(model_id) <= 32 and set(model_id) <= MODEL_ID_CHARS):
        raise ValueError(
            f"--model-id {model_id!r}: expected 1 to 32 letters, digits, '_', '.' or '-' "
            "(as the firmware's DUT_MODEL_ID)"
        )
    ref = b.load_npz("reference.npz")
    for key in ("x_counts", "y"):
        if key not in ref:
            raise ValueError(f"{b.root / 'reference.npz'}: no {key!r} array")
    x, y = ref["x_counts"], ref["y"].astype(np.int64)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit: expected a count from 1, found {limit}")
        x, y = x[:limit], y[:limit]
    labels = list(b.manifest["labels"])
    iq = InputQuant.from_dict(b.manifest["preprocess"]["input_quant"]) if fmt == "int8" else None
    folder = Path(out) / model_id
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    width = max(5, len(str(len(x))))
    for i, (w, label) in enumerate(zip(x, y, strict=True)):
        if not 0 <= label < len(labels):
            raise ValueError(f"{b.root / 'reference.npz'}: y[{i}] = {label}, not a class index")
        name = f"{model_id}_{i:0{width}d}_{labels[label]}.bin".replace(" ", "_")
        (folder / name).write_bytes(window_bytes(w, fmt, iq))
        rows.append(f"{name},{len(labels)},{int(label)}\n")
    (folder / TRUTH_FILE).write_text("".join(rows))
    return {
        "folder": str(folder),
        "files": len(rows),
        "bytes_per_file": len(window_bytes(x[0], fmt, iq)) if len(x) else 0,
        "classes": len(labels),
        "format": fmt,
        "model_id": model_id,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="a classifier bundle (reference.npz)")
    ap.add_argument("--out", required=True, help="the runner's --dataset_path")
    ap.add_argument("--model-id", default=None, help="folder name (default: the bundle's name)")
    ap.add_argument("--format", default="int16", choices=FORMATS, help="the firmware's DUT_INPUT")
    ap.add_argument("--limit", type=int, default=None, help="only the first N windows")
    args = ap.parse_args(argv)
    try:
        s = write_dataset(
            args.bundle, args.out, model_id=args.model_id, fmt=args.format, limit=args.limit
        )
    except (ValueError, BundleError, OSError) as e:
        print(f"mlperf_dataset: {e}", file=sys.stderr)
        return 1
    print(
        f"mlperf_dataset: {s['files']} files of {s['bytes_per_file']} bytes ({s['format']}), "
        f"{s['classes']} classes, truth file {Path(s['folder']) / TRUTH_FILE}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
