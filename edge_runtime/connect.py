"""``--device SPEC`` to a :class:`~edge_runtime.device.DeviceLink`: an emulated board or a port.

    with open_device("qemu:an386", "build/har") as dev:    # starts QEMU, stops it on close
        dev.infer_window(counts)
    open_device("/dev/ttyACM0", "build/har")                # a real board, any pyserial URL

This module sits above the two ways of reaching a device, :mod:`edge_runtime.device`
(the protocol over any pyserial URL) and :mod:`edge_runtime.qemu_launch` (the firmware
started under QEMU, which uses the first); neither imports it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from edge_runtime import qemu_launch
from edge_runtime.bundle import Bundle
from edge_runtime.contract import STEP_MODEL
from edge_runtime.device import DeviceError, DeviceLink

__all__ = ["QEMU_PREFIX", "open_device"]

QEMU_PREFIX = "qemu:"


def open_device(spec: str, bundle: Any = None, **kw: Any) -> DeviceLink:
    """A link for ``--device SPEC``: ``qemu:<board>`` (``an386``, ``m4`` or ``mps2-an386``,
    see :mod:`edge_runtime.boards`; needs the bundle's firmware), else any pyserial URL or
    device path. ``kw`` goes to :class:`~edge_runtime.device.DeviceLink`.

    ``bundle`` (an :class:`~edge_runtime.bundle.Bundle` or its folder): when given, the
    device must run that bundle's model (sha256 of ``step_int8.tflite``).
    """
    b = None if bundle is None else (bundle if isinstance(bundle, Bundle) else Bundle.open(bundle))
    if spec.startswith(QEMU_PREFIX):
        if b is None:
            raise ValueError(f"--device {spec} needs a bundle (its firmware ELF)")
        link = qemu_launch.open_qemu_link(b.root, spec[len(QEMU_PREFIX) :], **kw)
    else:
        link = DeviceLink(spec, **kw)
    if b is not None and b.has(STEP_MODEL):
        want = hashlib.sha256(b.read_bytes(STEP_MODEL)).hexdigest()
        got = link.info()["sha256"]
        if got != want:
            link.close()
            raise DeviceError(
                f"{spec}: the device runs model {got[:12]}…, the bundle {b.root} has {want[:12]}…: "
                "flash the bundle's firmware (make -C firmware BUNDLE=...)"
            )
    return link
