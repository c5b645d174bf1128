"""The step interpreter in a process of its own, under another Python.

``tflite-runtime`` wheels are built against numpy 1.x: where a host has only
``tflite_runtime`` (and the runtime itself has numpy 2), the step model runs in
a child process started with a Python that has ``tflite_runtime`` and
``numpy<2``::

    tinygru-edge run --bundle har --source serial:/dev/ttyUSB0 --interpreter-python ~/tfl/bin/python
    TINYGRU_INTERPRETER_PYTHON=~/tfl/bin/python tinygru-edge check --bundle har

This file is that child's program: ``python -I worker.py``. It imports only the
standard library, numpy and the interpreter module (``ai_edge_litert``, else
``tflite_runtime``), so it runs from its path without edge_runtime installed.
:class:`WorkerClient` is the parent's side; :class:`edge_runtime.interpreter.StepInterpreter`
uses it when a Python is named or ai-edge-litert is not importable.

Protocol (the child's stdin and stdout, little-endian): every message is a
header ``<BI`` (opcode, payload length) and the payload. Data are int8 bytes
and UTF-8 JSON, never pickled objects.

==========  ============================================  ==========================
request     payload                                       reply payload (``OK``)
==========  ============================================  ==========================
``LOAD``    ``<I`` JSON length, JSON options, model       JSON: library, version,
            bytes (options: ``backend``,                  tensor details, signature
            ``num_threads``)
``BIND``    JSON ``{"inputs": [[index, nbytes, shape]],   empty
            "outputs": [index, ...]}``
``STEP``    the bound inputs' bytes, in order             the bound outputs' bytes
``CLOSE``   empty                                         empty, then the child exits
==========  ============================================  ==========================

A request that fails gets ``ERR`` with a one-line UTF-8 message; the child
keeps serving. End of input (the parent closed the pipe or died) ends the child.

The parent waits for every reply with a deadline (poll on the pipes): a child
that hangs alive is killed and the request fails with one line naming it.
``LOAD`` (the child's start included) may take ``$TINYGRU_WORKER_LOAD_TIMEOUT``
seconds (default 120: a slow board importing numpy and the interpreter), every
later request ``$TINYGRU_WORKER_TIMEOUT`` seconds (default 5; a step takes
microseconds to milliseconds); :class:`WorkerClient` takes both as arguments too.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Any, BinaryIO

HEADER = struct.Struct("<BI")
LEN = struct.Struct("<I")
OP_LOAD, OP_BIND, OP_STEP, OP_CLOSE = 1, 2, 3, 4
OK, ERR = 0x80, 0x81
ENV_PYTHON = "TINYGRU_INTERPRETER_PYTHON"
ENV_TIMEOUT = "TINYGRU_WORKER_TIMEOUT"
ENV_LOAD_TIMEOUT = "TINYGRU_WORKER_LOAD_TIMEOUT"
DEFAULT_TIMEOUT = 5.0  # seconds per request once the model is loaded
DEFAULT_LOAD_TIMEOUT = 120.0  # seconds for the child to start and load the model
MAX_MESSAGE = 1 << 30
OP_NAMES = {1: "LOAD", 2: "BIND", 3: "STEP", 4: "CLOSE"}


class ProtocolError(Exception):
    """The other side sent something that is not a message of this protocol."""


def read_message(stream: BinaryIO) -> tuple[int, bytes] | None:
    """One ``(opcode, payload)``, or None at a clean end of stream."""
    head = stream.read(HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise ProtocolError(f"truncated header ({len(head)} of {HEADER.size} bytes)")
    op, n = HEADER.unpack(head)
    if n > MAX_MESSAGE:
        raise ProtocolError(f"message of {n} bytes (at most {MAX_MESSAGE})")
    payload = stream.read(n) if n else b""
    if len(payload) != n:
        raise ProtocolError(f"truncated message: {len(payload)} of {n} bytes")
    return op, payload


def write_message(stream: BinaryIO, op: int, payload: bytes = b"") -> None:
    stream.write(HEADER.pack(op, len(payload)) + payload)
    stream.flush()


# --------------------------------------------------------------------------- child


def _details(ds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import numpy as np

    return [
        {
            "name": str(d["name"]),
            "index": int(d["index"]),
            "shape": [int(v) for v in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name,
            "quantization": [float(d["quantization"][0]), int(d["quantization"][1])],
        }
        for d in ds
    ]


class _Child:
    def __init__(self) -> None:
        self.it: Any = None
        self.inputs: list[tuple[int, int, tuple[int, ...]]] = []
        self.outputs: list[int] = []

    def load(self, payload: bytes) -> bytes:
        (n,) = LEN.unpack_from(payload)
        opts = json.loads(payload[LEN.size : LEN.size + n].decode("utf-8"))
        model = payload[LEN.size + n :]
        import numpy as np

        try:
            import ai_edge_litert.interpreter as mod

            lib, dist = "ai_edge_litert", "ai-edge-litert"
        except ImportError:
            try:
                import tflite_runtime.interpreter as mod
            except ImportError as e:
                raise RuntimeError(
                    f"{sys.executable} has neither ai_edge_litert nor tflite_runtime "
                    f"(pip install tflite-runtime 'numpy<2'): {e}"
                ) from None
            lib, dist = "tflite_runtime", "tflite-runtime"
        backend = opts.get("backend", "litert")
        kw: dict[str, Any] = {"model_content": model}
        if opts.get("num_threads") is not None:
            kw["num_threads"] = int(opts["num_threads"])
        resolver = getattr(mod, "OpResolverType", None)
        if backend == "xnnpack":
            if lib != "ai_edge_litert":
                raise RuntimeError("backend 'xnnpack' needs ai-edge-litert")
            if resolver is not None:
                kw["experimental_op_resolver_type"] = resolver.AUTO
        elif resolver is not None:
            kw["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = mod.Interpreter(**kw)
        it.allocate_tensors()
        self.it = it
        signature: dict[str, dict[str, int]] = {"inputs": {}, "outputs": {}}
        try:
            sigs = it._get_full_signature_list()
            if sigs:
                sig = next(iter(sigs.values()))
                signature = {
                    k: {str(a): int(b) for a, b in sig.get(k, {}).items()}
                    for k in ("inputs", "outputs")
                }
        except Exception:  # noqa: BLE001 - signatures are optional
            pass
        from importlib import metadata

        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown"
        info = {
            "library": lib,
            "version": version,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "inputs": _details(it.get_input_details()),
            "outputs": _details(it.get_output_details()),
            "signature": signature,
        }
        return json.dumps(info).encode("utf-8")

    def bind(self, payload: bytes) -> bytes:
        spec = json.loads(payload.decode("utf-8"))
        self.inputs = [(int(i), int(n), tuple(int(v) for v in s)) for i, n, s in spec["inputs"]]
        self.outputs = [int(i) for i in spec["outputs"]]
        return b""

    def step(self, payload: bytes) -> bytes:
        import numpy as np

        it = self.it
        if it is None or not self.inputs:
            raise RuntimeError("STEP before LOAD and BIND")
        want = sum(n for _, n, _ in self.inputs)
        if len(payload) != want:
            raise RuntimeError(f"STEP: expected {want} input bytes, found {len(payload)}")
        off = 0
        for idx, n, shape in self.inputs:
            it.set_tensor(idx, np.frombuffer(payload, np.int8, n, off).reshape(shape))
            off += n
        it.invoke()
        return b"".join(it.get_tensor(i).tobytes() for i in self.outputs)


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Answer requests until CLOSE or the end of ``inp``."""
    child = _Child()
    handlers = {OP_LOAD: child.load, OP_BIND: child.bind, OP_STEP: child.step}
    while True:
        try:
            msg = read_message(inp)
        except ProtocolError as e:
            print(f"tinygru worker: {e}", file=sys.stderr, flush=True)
            return 2
        if msg is None:
            return 0
        op, payload = msg
        if op == OP_CLOSE:
            write_message(out, OK)
            return 0
        handler = handlers.get(op)
        try:
            if handler is None:
                raise RuntimeError(f"unknown opcode {op}")
            reply = handler(payload)
        except Exception as e:  # noqa: BLE001 - every failure goes back as ERR
            write_message(out, ERR, f"{type(e).__name__}: {e}".encode())
            continue
        write_message(out, OK, reply)


def main() -> int:
    # The protocol owns the original stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, out)


# --------------------------------------------------------------------------- parent


class _Timeout(Exception):
    """No progress on a pipe before the deadline."""


def _wait(poller: select.poll, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0 or not poller.poll(max(1, int(left * 1000 + 0.999))):
        raise _Timeout


def _send(fd: int, poller: select.poll, data: bytes, deadline: float) -> None:
    """Write all of ``data`` to the non-blocking ``fd`` before ``deadline``."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            _wait(poller, deadline)


def _recv(fd: int, poller: select.poll, buf: bytearray, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes from ``buf`` and then the non-blocking ``fd`` (fewer at end of
    file); what is read beyond them stays in ``buf``. A reply is rarely ready at once, so
    the pipe is polled before each read: one poll and one read per message."""
    while len(buf) < n:
        _wait(poller, deadline)
        try:
            chunk = os.read(fd, max(n - len(buf), 1 << 16))
        except BlockingIOError:
            continue
        if not chunk:
            break
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _seconds(value: float | None, env: str, default: float, error: type[Exception]) -> float:
    """A timeout: ``value``, else ``$env``, else ``default``; it must be a number > 0."""
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise error(f"{env}: expected a number of seconds > 0, found {text!r}")
    if not value > 0:
        raise error(f"worker timeout: expected a number of seconds > 0, found {value!r}")
    return float(value)


def _stop(proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
    """Ask the child to exit (CLOSE, then end of input); kill it if it does not."""
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            write_message(proc.stdin, OP_CLOSE)  # type: ignore[arg-type]
            proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass
    stderr.close()


class WorkerClient:
    """One child process holding one interpreter (see the module doc).

    ``python``: the child's Python; ``error``: the exception class raised for a
    child that cannot start, refuses a request, dies or does not answer in time
    (its message names the child and ends with the tail of the child's stderr).
    ``timeout``: seconds a request may take once the model is loaded (default
    ``$TINYGRU_WORKER_TIMEOUT``, else 5); ``load_timeout``: seconds for the child
    to start and load the model (default ``$TINYGRU_WORKER_LOAD_TIMEOUT``, else 120).
    A child that misses its deadline is killed.
    """

    def __init__(
        self,
        python: str,
        model_content: bytes,
        *,
        backend: str = "litert",
        num_threads: int | None = None,
        error: type[Exception] = RuntimeError,
        timeout: float | None = None,
        load_timeout: float | None = None,
    ) -> None:
        self.python = str(python)
        self._error = error
        self.timeout = _seconds(timeout, ENV_TIMEOUT, DEFAULT_TIMEOUT, error)
        self.load_timeout = _seconds(load_timeout, ENV_LOAD_TIMEOUT, DEFAULT_LOAD_TIMEOUT, error)
        self._stderr = tempfile.TemporaryFile()
        cmd = [self.python, "-I", str(Path(__file__).resolve())]
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
            )
        except OSError as e:
            self._stderr.close()
            raise error(f"interpreter worker: cannot start {self.python}: {e}") from None
        self.name = f"interpreter worker {self.python} (pid {self.proc.pid})"
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._stderr)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._fd_in, self._fd_out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._fd_in, False)
        os.set_blocking(self._fd_out, False)
        self._poll_in, self._poll_out = select.poll(), select.poll()
        self._poll_in.register(self._fd_in, select.POLLOUT)
        self._poll_out.register(self._fd_out, select.POLLIN)
        self._buf = bytearray()  # bytes read from the child beyond the last reply
        opts = json.dumps({"backend": backend, "num_threads": num_threads}).encode()
        reply = self.call(OP_LOAD, LEN.pack(len(opts)) + opts + bytes(model_content))
        self.info: dict[str, Any] = json.loads(reply.decode("utf-8"))

    def _stderr_tail(self, limit: int = 2000) -> str:
        """The end of the child's stderr, its lines joined into one."""
        try:
            self._stderr.flush()
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())

    def _died(self, why: str) -> Exception:
        try:
            status: int | None = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        tail = self._stderr_tail()
        msg = f"{self.name} {why}"
        if status is not None:
            msg += f" (exit status {status})"
        msg += f"; its stderr: {tail}" if tail else "; its stderr is empty"
        return self._error(msg)

    def _timed_out(self, op: int, seconds: float) -> Exception:
        self.proc.kill()
        self.proc.wait()
        tail = self._stderr_tail()
        self._finalizer()
        env = ENV_LOAD_TIMEOUT if op == OP_LOAD else ENV_TIMEOUT
        return self._error(
            f"{self.name} did not answer {OP_NAMES.get(op, op)} within {seconds:g} s and was "
            f"killed (${env} sets the limit); "
            + (f"its stderr: {tail}" if tail else "its stderr is empty")
        )

    def _exchange(self, op: int, payload: bytes, deadline: float) -> tuple[int, bytes] | None:
        """Send one request and read its reply before ``deadline``; None at end of file."""
        _send(self._fd_in, self._poll_in, HEADER.pack(op, len(payload)) + payload, deadline)
        head = _recv(self._fd_out, self._poll_out, self._buf, HEADER.size, deadline)
        if not head:
            return None
        if len(head) < HEADER.size:
            raise ProtocolError(f"truncated header ({len(head)} of {HEADER.size} bytes)")
        rop, n = HEADER.unpack(head)
        if n > MAX_MESSAGE:
            raise ProtocolError(f"message of {n} bytes (at most {MAX_MESSAGE})")
        data = _recv(self._fd_out, self._poll_out, self._buf, n, deadline) if n else b""
        if len(data) != n:
            raise ProtocolError(f"truncated message: {len(data)} of {n} bytes")
        return rop, data

    def call(self, op: int, payload: bytes = b"") -> bytes:
        """One request; the reply's payload."""
        if not self._finalizer.alive:
            raise self._error(f"{self.name} is closed")
        seconds = self.load_timeout if op == OP_LOAD else self.timeout
        try:
            msg = self._exchange(op, payload, time.monotonic() + seconds)
        except _Timeout:
            raise self._timed_out(op, seconds) from None
        except (OSError, ValueError) as e:
            raise self._died(f"stopped answering ({type(e).__name__}: {e})") from None
        except ProtocolError as e:
            raise self._died(f"sent a broken reply ({e})") from None
        if msg is None:
            raise self._died("exited")
        rop, data = msg
        if rop == ERR:
            raise self._error(f"{self.name}: {data.decode('utf-8', 'replace')}")
        if rop != OK:
            raise self._died(f"sent an unknown reply {rop}")
        return data

    def bind(self, inputs: list[tuple[int, tuple[int, ...]]], outputs: list[int]) -> None:
        """Fix the int8 tensors a STEP sets (index, shape; in order) and returns."""
        spec = {
            "inputs": [[i, _size(s), list(s)] for i, s in inputs],
            "outputs": list(outputs),
        }
        self.call(OP_BIND, json.dumps(spec).encode())

    def step(self, payload: bytes) -> bytes:
        """Set the bound inputs from ``payload``, invoke, return the bound outputs' bytes."""
        return self.call(OP_STEP, payload)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self.proc.poll() is None

    def close(self) -> None:
        """Stop the child (idempotent)."""
        self._finalizer()


def _size(shape: tuple[int, ...] | list[int]) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


if __name__ == "__main__":
    sys.exit(main())
