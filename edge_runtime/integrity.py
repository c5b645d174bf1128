"""The device input contract's integrity: one sha256 over the manifest fields that change an output.

Every manifest field that changes a computed output (a probability, a forecast, an
anomaly flag, a pass mark) or is compiled into the exported C is listed in
:data:`FIELDS`. Their values, as one JSON object keyed by field path, in canonical
form (:func:`canonical`), hash to ``integrity.sha256``::

    "integrity": {"sha256": "3f1c…", "fields": ["task", "labels", …], "canonical": "…"}

:func:`seal` computes that section; :class:`edge_runtime.bundle.StageWriter` writes it
at the end of every stage, so no stage can forget it; :meth:`edge_runtime.bundle.Bundle.open`
checks it (:func:`problem`) and refuses a manifest whose covered fields were edited by
hand. The export compiles the same hash into ``<prefix>_config.h``
(``<P>_CONTRACT_SHA256``), so a device can name the contract it was built from.

This is an integrity check against accidental edits and stale copies, not a signature:
anyone can recompute the hash after an edit (``python -m edge_runtime.integrity
manifest.json`` prints it), so it proves nothing about who wrote the manifest.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

__all__ = ["CANONICAL", "FIELDS", "canonical", "compute", "problem", "seal", "values"]

# Paths into the manifest, dot-separated. A path that is absent is left out of the
# hashed object (so adding or removing a covered field changes the hash too).
FIELDS: tuple[str, ...] = (
    "task",  # classification or forecast: what the head's output means
    "labels",  # class order = the head's output order
    "dataset.channels",  # per channel: scale (count -> physical), raw range (sample checks)
    "dataset.sample_rate",  # compiled into the C config; paces --realtime sources
    "preprocess.window",  # T: window-exact lanes, the step that gives a window's answer
    "preprocess.hop",  # H: where windows start
    "preprocess.mean",  # normalization (forecasts back in sensor units)
    "preprocess.std",
    "preprocess.input_quant",  # int16 count -> int8 model input (M_c, B_c, S, zero point)
    "model.config",  # channels, k, s, layers, units, head: what the device computes
    "quantization.step",  # tensors, scales, zero points, state handling, ring buffer fill
    "quantization.tflm_arena.bytes",  # compiled into the TFLM header
    "thresholds",  # anomaly threshold and warm-up, the device pass marks
    "stages.train.config.data.zone",  # the anomaly hit zone device checks use
)

CANONICAL = (
    "sha256 of the UTF-8 bytes of json.dumps(obj, sort_keys=True, separators=(',', ':'), "
    "ensure_ascii=True, allow_nan=False), obj = {path: value} for every path in fields "
    "present in the manifest (floats as Python repr, as json writes them)"
)


def _get(manifest: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = manifest
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def values(
    manifest: dict[str, Any], fields: tuple[str, ...] | list[str] = FIELDS
) -> dict[str, Any]:
    """``{path: value}`` of the covered fields present in ``manifest``."""
    out = {}
    for path in fields:
        found, value = _get(manifest, path)
        if found:
            out[path] = value
    return out


def canonical(manifest: dict[str, Any], fields: tuple[str, ...] | list[str] = FIELDS) -> bytes:
    """The canonical JSON bytes of the covered fields (see :data:`CANONICAL`)."""
    text = json.dumps(
        values(manifest, fields),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return text.encode("utf-8")


def compute(manifest: dict[str, Any], fields: tuple[str, ...] | list[str] = FIELDS) -> str:
    """Hex sha256 of :func:`canonical`."""
    return hashlib.sha256(canonical(manifest, fields)).hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``integrity`` section for its current values."""
    return {"sha256": compute(manifest), "fields": list(FIELDS), "canonical": CANONICAL}


def problem(manifest: dict[str, Any]) -> str | None:
    """Why ``manifest``'s integrity section does not hold (one line), or None when it does.

    A manifest without the section is not checked here (see ``Bundle.open``). The hash
    is recomputed over the fields the manifest lists, which must include every field of
    this version's :data:`FIELDS`.
    """
    section = manifest.get("integrity")
    if section is None:
        return None
    listed = section.get("fields") if isinstance(section, dict) else None
    stored = section.get("sha256") if isinstance(section, dict) else None
    if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
        return "integrity.fields: expected a list of field paths"
    missing = [f for f in FIELDS if f not in listed]
    if missing:
        return (
            f"integrity.fields does not cover {', '.join(missing)} (written by another "
            "version?); rerun the last stage to seal the manifest again"
        )
    found = compute(manifest, listed)
    if found != stored:
        return (
            f"integrity: the device input contract ({len(listed)} fields: {', '.join(listed)}) "
            f"hashes to {found}, integrity.sha256 says {stored}: the manifest was edited "
            "after the stage that wrote it; rerun that stage instead of editing these fields"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_runtime.integrity manifest.json``: print the contract's sha256."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edge_runtime.integrity MANIFEST_JSON", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        manifest = json.load(f)
    print(compute(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
