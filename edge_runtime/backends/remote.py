"""A LiteRT or tflite_runtime interpreter in a worker process (:mod:`edge_runtime.worker`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.backends import Step
from edge_runtime.worker import WorkerClient

__all__ = ["Remote"]


class Remote:
    """The worker's interpreter seen as a backend; ``client`` is its :class:`WorkerClient`."""

    def __init__(
        self,
        python: str,
        model_content: bytes,
        backend: str,
        num_threads: int | None,
        error: type[Exception],
    ) -> None:
        self.client = WorkerClient(
            python, model_content, backend=backend, num_threads=num_threads, error=error
        )
        self._error = error
        lib = self.client.info.get("library")
        base = "litert_xnnpack" if backend == "xnnpack" else (
            "litert" if lib == "ai_edge_litert" else "tflite_runtime")  # fmt: skip
        self.label = base + "_worker"
        self._shapes: dict[int, tuple[int, ...]] = {}

    def details(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        info = self.client.info
        ins, outs = list(info["inputs"]), list(info["outputs"])
        self._shapes = {int(d["index"]): tuple(int(v) for v in d["shape"]) for d in ins + outs}
        sig = info.get("signature") or {}
        return ins, outs, {"inputs": sig.get("inputs", {}), "outputs": sig.get("outputs", {})}

    def stepper(
        self, x: int, h_in: list[int], h_out: list[int], y: int
    ) -> tuple[Step, tuple[Any, ...] | None]:
        client = self.client
        shape = self._shapes
        client.bind([(i, shape[i]) for i in (x, *h_in)], [*h_out, y])
        cuts: list[tuple[int, int, tuple[int, ...]]] = []
        off = 0
        for i in (*h_out, y):
            n = int(np.prod(shape[i]))
            cuts.append((off, n, shape[i]))
            off += n
        total = off
        n_states = len(h_in)
        call, name, error = client.step, client.name, self._error

        def step(xv: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
            data = call(b"".join([xv.tobytes(), *(h.tobytes() for h in states)]))
            if len(data) != total:
                raise error(f"{name}: {len(data)} output bytes, expected {total}")
            buf = bytearray(data)  # writable arrays, as get_tensor gives
            got = [np.frombuffer(buf, np.int8, n, o).reshape(s) for o, n, s in cuts]
            states[:] = got[:n_states]
            return got[n_states]

        return step, None

    def close(self) -> None:
        self.client.close()
