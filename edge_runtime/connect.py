"""``--device SPEC`` to a :class:`~edge_runtime.device.DeviceLink`: an emulated board or a port.

    with open_device("qemu:an386", "build/har") as dev:    # starts QEMU, stops it on close
        dev.infer_window(counts)
    open_device("/dev/ttyACM0", "build/har")                # a real board, any pyserial URL

With a bundle, the device must prove it runs that bundle's model before it is used:

- the step model's sha256 (``m-info-sha256``, given to the firmware at build) equals
  that of the bundle's ``step_int8.tflite``;
- the sha256 of the model data the firmware links, which it computes itself at boot
  (``m-info-data``, ``firmware/dut/model_hash.h``), equals ``model_data.sha256`` of the
  bundle's export (``firmware/files.json``, written by ``python -m firmware_export``).
  C data edited after the export, or a firmware built from another export, fails here
  even when the ``.tflite`` hash matches.

This module sits above the two ways of reaching a device, :mod:`edge_runtime.device`
(the protocol over any pyserial URL) and :mod:`edge_runtime.qemu_launch` (the firmware
started under QEMU, which uses the first); neither imports it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edge_runtime import qemu_launch
from edge_runtime.bundle import Bundle
from edge_runtime.contract import FIRMWARE_DIR, STEP_MODEL
from edge_runtime.device import DeviceError, DeviceLink
from edge_runtime.preprocess import InputQuant, quantize_counts

__all__ = ["EXPORT_INDEX", "QEMU_PREFIX", "expected_data_sha256", "open_device"]

QEMU_PREFIX = "qemu:"
EXPORT_INDEX = f"{FIRMWARE_DIR}/files.json"  # the export's file list and model data report


def expected_data_sha256(bundle: Bundle, dsp: bool = False) -> str:
    """The hash a firmware built from the bundle's export reports: ``model_data.sha256``
    (portable build) or ``model_data.sha256_dsp`` (a ``TG_USE_DSP`` build, whose packed
    weight words are in another order).

    Raises DeviceError naming the file and the field when the export or the field is missing
    or malformed."""
    key = "sha256_dsp" if dsp else "sha256"
    path = bundle.root / EXPORT_INDEX
    if not path.is_file():
        raise DeviceError(
            f"{path}: no export, so nothing to compare the device's model data with "
            f"(run `python -m firmware_export --bundle {bundle.root}`)"
        )
    try:
        index = json.loads(path.read_text())
        got = index["model_data"][key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DeviceError(
            f"{path}: model_data.{key}: expected the sha256 of the model data, found "
            f"{type(e).__name__}: {e} (re-run `python -m firmware_export --bundle {bundle.root}`)"
        ) from e
    if not (isinstance(got, str) and len(got) == 64 and all(c in "0123456789abcdef" for c in got)):
        raise DeviceError(f"{path}: model_data.{key}: expected 64 hex digits, found {got!r}")
    return got


def _verify(link: DeviceLink, spec: str, b: Bundle) -> None:
    """Refuse a device that does not run the bundle's model (see the module docstring)."""
    info = link.info()
    if b.has(STEP_MODEL):
        want = hashlib.sha256(b.read_bytes(STEP_MODEL)).hexdigest()
        got = info["sha256"]
        if got != want:
            raise DeviceError(
                f"{spec}: the device runs model {got[:12]}…, the bundle {b.root} has {want[:12]}…: "
                "flash the bundle's firmware (make -C firmware BUNDLE=...)"
            )
    want = expected_data_sha256(b, dsp=bool(info.get("data_dsp")))
    got = info["data_sha256"]
    if got is None:
        raise DeviceError(
            f"{spec}: the device does not report the sha256 of its model data (no "
            "m-info-data line): a firmware older than the check; rebuild it "
            f"(make -C firmware BUNDLE={b.root})"
        )
    if got != want:
        raise DeviceError(
            f"{spec}: the model data the device links has sha256 {got} ({info['data_bytes']} "
            f"bytes), the bundle's export {b.root / EXPORT_INDEX} says {want}: the firmware was "
            "built from other model C (edited after the export?); re-export and rebuild "
            f"(python -m firmware_export --bundle {b.root}; make -C firmware BUNDLE={b.root})"
        )


def open_device(spec: str, bundle: Any = None, **kw: Any) -> DeviceLink:
    """A link for ``--device SPEC``: ``qemu:<board>`` (``an386``, ``m4`` or ``mps2-an386``;
    ``stm32f405``, ``m0``, ``m33``, ``m55``, ... see :mod:`edge_runtime.boards`; needs the
    bundle's firmware), else any pyserial URL or
    device path. ``kw`` goes to :class:`~edge_runtime.device.DeviceLink`.

    ``bundle`` (an :class:`~edge_runtime.bundle.Bundle` or its folder): when given, the
    device must run that bundle's model (step model and model data sha256, above), and an
    int8-input firmware gets the bundle's count quantization.
    """
    b = None if bundle is None else (bundle if isinstance(bundle, Bundle) else Bundle.open(bundle))
    if spec.startswith(QEMU_PREFIX):
        if b is None:
            raise ValueError(f"--device {spec} needs a bundle (its firmware ELF)")
        link = qemu_launch.open_qemu_link(b.root, spec[len(QEMU_PREFIX) :], **kw)
    else:
        link = DeviceLink(spec, **kw)
    if b is None:
        return link
    try:
        _verify(link, spec, b)
        iq = (b.manifest.get("preprocess") or {}).get("input_quant")
        if link.quantize is None and iq is not None:
            quant = InputQuant.from_dict(iq)
            link.quantize = lambda counts: quantize_counts(counts, quant)
    except BaseException:
        link.close()
        raise
    return link
