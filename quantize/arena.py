"""The smallest TFLM arena a model runs with, on this host's ``tflite_micro``.

:func:`smallest_arena` runs ``python -m quantize.arena MODEL N_INPUTS LIMIT`` in a
process of its own. That program imports ``tflite_micro`` once and runs every probe
(allocate with the given arena, invoke once on zero inputs) in a forked child,
because a failed allocation can crash the process (segmentation fault). It doubles
from 1 KiB until a size works, then bisects to the byte; finally it prints the
recording allocator's report for the smallest size to stderr and
``<bytes> <probes>`` to stdout (``0 <probes>`` when nothing up to LIMIT works).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime import contract
from quantize.bundle_io import StageError, fresh_env, last_line

LABEL = "host (x86-64) TFLM arena"
MAX_ARENA = 16 * 2**20
START = 1024  # the first size tried, bytes
TIMEOUT = 600  # seconds for the whole search
STEP_FILE = contract.STEP_MODEL


def smallest_arena(tflite_bytes: bytes, n_inputs: int) -> dict[str, Any]:
    """The smallest ``arena_size`` with which the host TFLM allocates and invokes the model."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinygru-arena-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite_bytes)
        cmd = [sys.executable, "-m", "quantize.arena", str(path), str(n_inputs), str(MAX_ARENA)]
        try:
            r = subprocess.run(
                cmd, env=fresh_env(), capture_output=True, text=True, timeout=TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise StageError(
                f"{STEP_FILE}: the TFLM arena search took longer than {TIMEOUT} s"
            ) from None
    if r.returncode != 0:
        raise StageError(f"{STEP_FILE}: TFLM arena search failed: {last_line(r.stderr)}")
    arena, probes = (int(v) for v in r.stdout.split()[-2:])
    if arena == 0:
        raise StageError(
            f"{STEP_FILE}: the host TFLM does not run the model with {MAX_ARENA} bytes of arena"
        )
    m = re.search(r"Arena allocation total (\d+) bytes", r.stderr)
    return {
        "bytes": arena,
        "label": LABEL,
        "recorded_total": int(m.group(1)) if m else None,
        "method": "bisection over tflite_micro arena_size (allocate + one invoke), to the byte",
        "probes": probes,
        "seconds": round(time.perf_counter() - t0, 1),
        "note": "measured with the x86-64 tflite_micro wheel; a 32-bit MCU build needs less "
        "(smaller pointers and structs); add a margin on the device",
    }


def search(works: Callable[[int], bool], limit: int) -> tuple[int, int]:
    """The smallest size for which ``works`` holds, and the number of probes.

    Doubles from :data:`START` until a size works (0 when the next size would pass
    ``limit``), then bisects between the last failure and the first success.
    """
    probes = 1
    lo, hi = 0, START
    while not works(hi):
        probes += 1
        lo, hi = hi, hi * 2
        if hi > limit:
            return 0, probes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        probes += 1
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi, probes


def _invoke(runtime: Any, data: bytes, n_inputs: int, arena: int) -> Any:
    """Allocate the model with ``arena`` bytes and invoke it once on zero inputs."""
    import numpy as np

    it = runtime.Interpreter.from_bytes(data, arena_size=arena)
    for i in range(n_inputs):
        d = it.get_input_details(i)
        it.set_input(np.zeros(d["shape"], d["dtype"]), i)
    it.invoke()
    return it


def _in_child(probe: Callable[[int], Any], arena: int) -> bool:
    """Whether ``probe(arena)`` returns normally in a forked child (output discarded)."""
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            probe(arena)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def main(argv: list[str]) -> int:
    """``python -m quantize.arena MODEL N_INPUTS LIMIT``."""
    if len(argv) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    import numpy as np  # noqa: F401 - imported once, before the probes fork
    from tflite_micro import runtime

    data = Path(argv[0]).read_bytes()
    n_inputs, limit = int(argv[1]), int(argv[2])

    def probe(arena: int) -> Any:
        return _invoke(runtime, data, n_inputs, arena)

    arena, probes = search(lambda size: _in_child(probe, size), limit)
    if arena:
        probe(arena).print_allocations()
    print(arena, probes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
