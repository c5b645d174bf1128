"""Nothing is trusted that was not checked: bounded manifests, one-line refusals, atomic export,
a worker that stops answering, an interrupted training run.

Each test drives the real program (a subprocess where exit status and stderr are the
contract) on a small real bundle, or a real child process that misbehaves.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.bundle import BundleError, validate_manifest
from tests.support import ROOT, bundle_root, edited, make_bundle, small_config

ENV = {
    **os.environ,
    "PYTHONHASHSEED": "0",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "OPENBLAS_NUM_THREADS": "1",
}
# Address space a refused bundle may take: the interpreter, numpy and jsonschema fit in
# well under this; a window of 2e9 samples does not.
MEMORY_LIMIT = 2 << 30


@pytest.fixture(scope="module")
def bm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle("bm", bundle_root(tmp_path_factory))


def limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def edge(*args: str, stdin: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``python -m edge_runtime ARGS`` in its own process; a hang guard, not a time check."""
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *args],
        cwd=ROOT, env=ENV, input=stdin, capture_output=True, text=True, timeout=600, **kw,
    )  # fmt: skip


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- sizes


def test_every_size_has_a_stated_limit(bm: Path) -> None:
    base = json.loads((bm / "manifest.json").read_text())
    cases = [
        (("preprocess", "window"), 2_000_000_000, "preprocess.window: expected a value <= 4096"),
        (("preprocess", "hop"), 5000, "preprocess.hop: expected a value <= 4096"),
        (("model", "config", "n_channels"), 65, "model.config.n_channels: expected a value <= 64"),
        (("model", "config", "gru_units"), [8, 8, 8], "model.config.gru_units: expected at most 2 items, found 3"),
        (("model", "config", "gru_units"), [257], "model.config.gru_units[0]: expected a value <= 256"),
        (("model", "config", "front_end_kernel"), 65, "front_end_kernel: expected a value <= 64"),
        (("model", "config", "n_outputs"), 257, "model.config.n_outputs: expected a value <= 256"),
        (("labels",), [f"c{i}" for i in range(257)], "labels: expected at most 256 items, found 257"),
        (("quantization", "step", "ring_buffer", "samples"), 65, "ring_buffer.samples: expected a value <= 64"),
        (("quantization", "step", "inputs", "x", "shape"), [1, 2**31], "x.shape[1]: expected a value <= 4096"),
    ]  # fmt: skip
    for path, value, want in cases:
        m = json.loads(json.dumps(base))
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(BundleError) as e:
            validate_manifest(m)
        assert want in str(e.value) and "\n" not in str(e.value), (path, str(e.value))


def test_products_and_orderings_the_schema_cannot_state(bm: Path) -> None:
    base = json.loads((bm / "manifest.json").read_text())

    def problem(edit: Callable[[dict[str, Any]], None]) -> str:
        m = json.loads(json.dumps(base))
        edit(m)
        with pytest.raises(BundleError) as e:
            validate_manifest(m)
        assert "\n" not in str(e.value)
        return str(e.value)

    T = base["preprocess"]["window"]
    text = problem(lambda m: m["preprocess"].update(hop=T + 1))
    assert f"preprocess.hop: expected a value <= window ({T}), found {T + 1}" in text
    text = problem(lambda m: m["model"]["config"].update(front_end_stride=4, front_end_kernel=3))
    assert "front_end_stride: expected a value <= front_end_kernel (3)" in text
    text = problem(lambda m: m["model"]["config"].update(n_outputs=3))
    assert "model.config.n_outputs: expected 4 (one per label), found 3" in text
    text = problem(lambda m: m["model"]["config"].update(n_channels=5))
    assert "model.config.n_channels: expected 6 entries (one per channel" in text


def test_window_product_is_bounded() -> None:
    chans = [{"name": f"c{i}", "unit": "", "scale": 1.0} for i in range(64)]
    m = {"schema_version": 1, "name": "x", "task": "forecast", "created": "2026-01-01T00:00:00Z",
         "artifacts": {}, "stages": {}, "dataset": {"channels": chans},
         "preprocess": {"window": 4096, "hop": 1}}  # fmt: skip
    with pytest.raises(BundleError, match=r"window x channels = 4096 x 64 = 262144 counts, more "):
        validate_manifest(m)
    m["preprocess"]["window"] = 1024
    validate_manifest(m)


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_huge_window_is_refused_in_one_line_with_bounded_memory(bm, tmp_path, command) -> None:
    """A manifest with window = 2e9 once took 24 GB and the OOM killer (run) or a traceback
    after minutes (check). Under a 2 GiB address-space limit the program must refuse it in
    one line naming the field, before allocating anything for it."""
    b = edited(bm, tmp_path / "big", lambda m: m["preprocess"].update(window=2_000_000_000))
    args = ["--bundle", str(b)]
    if command == "run":
        args += ["--source", "-"]
    r = edge(command, *args, stdin="1,2,3,4,5,6\n" * 10, preexec_fn=limited_memory)
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert line.startswith(f"tinygru-edge: {command}: ") and str(b / "manifest.json") in line
    assert "preprocess.window: expected a value <= 4096, found integer 2000000000" in line


# --------------------------------------------------------------------------- run flags


def test_run_refuses_a_negative_max_samples(bm) -> None:
    r = edge("run", "--bundle", str(bm), "--source", "-", "--max-samples", "-5",
             stdin="1,2,3,4,5,6\n" * 10)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert "argument --max-samples: expected an integer >= 0, found -5" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- export


def tree(folder: Path) -> dict[str, tuple[bytes, int] | str]:
    """Every entry under ``folder``: files as (bytes, mtime_ns), folders and links by kind."""
    out: dict[str, tuple[bytes, int] | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link -> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "folder"
        else:
            out[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def firmware_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_export", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_a_failing_write_leaves_the_previous_export_whole(bm, tmp_path) -> None:
    """A write that fails half way used to leave new model C next to an old files.json."""
    from firmware_export.export import export

    b = tmp_path / "b"
    shutil.copytree(bm, b, ignore=shutil.ignore_patterns("firmware"))
    export(b, None, "bm", sparse="never")
    fw = b / "firmware"
    (fw / "build").mkdir()
    (fw / "build" / "dut.elf").write_bytes(b"an earlier firmware build")
    blocker = fw / "bm_tflm.h"  # written after bm_model.c, before files.json
    blocker.unlink()
    blocker.mkdir()
    (blocker / "keep").write_text("a folder where a file goes: the write fails")
    before = tree(fw)
    with pytest.raises(OSError):
        export(b, None, "bm", sparse="always")  # changes bm_model.c and files.json
    assert tree(fw) == before
    assert sorted(p.name for p in b.iterdir() if p.name.startswith("firmware")) == ["firmware"]

    shutil.rmtree(blocker)
    result = export(b, None, "bm", sparse="always")
    assert {"bm_model.c", "bm_tflm.h", "files.json"} <= set(result["written"])
    after = tree(fw)
    assert after["build/dut.elf"] == before["build/dut.elf"]  # not the export's: kept as it was
    assert after["bm_model_tflite.cc"] == before["bm_model_tflite.cc"]  # unchanged: same mtime
    assert export(b, None, "bm", sparse="always")["written"] == []
    assert tree(fw) == after


def test_a_symlinked_firmware_folder_is_refused(bm, tmp_path) -> None:
    """The export used to follow a firmware/ link and write outside the bundle."""
    b = tmp_path / "b"
    shutil.copytree(bm, b, ignore=shutil.ignore_patterns("firmware"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (b / "firmware").symlink_to(outside)
    r = firmware_export("--bundle", str(b))
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert f"{b / 'firmware'}: is a symbolic link (refused)" in line
    assert list(outside.iterdir()) == []

    (b / "firmware").unlink()
    (b / "firmware").mkdir()
    (b / "firmware" / "engine").symlink_to(outside)
    r = firmware_export("--bundle", str(b))
    assert r.returncode == 1
    assert f"{b / 'firmware' / 'engine'}: is a symbolic link (refused)" in one_line(r.stderr)
    assert list(outside.iterdir()) == []


def test_a_symlinked_manifest_is_refused(bm, tmp_path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bm, b, ignore=shutil.ignore_patterns("firmware"))
    real = tmp_path / "elsewhere.json"
    (b / "manifest.json").rename(real)
    (b / "manifest.json").symlink_to(real)
    r = edge("check", "--bundle", str(b))
    assert r.returncode == 2
    assert f"{b / 'manifest.json'}: is a symbolic link (refused)" in one_line(r.stderr)
    r = firmware_export("--bundle", str(b))
    assert r.returncode == 1 and "is a symbolic link (refused)" in one_line(r.stderr)
    assert not (b / "firmware").exists()


# --------------------------------------------------------------------------- worker

HANGING_CHILD = """
import os, sys, time
pidfile, mode = {pidfile!r}, {mode!r}
open(pidfile, "w").write(str(os.getpid()))
sys.path.insert(0, os.path.dirname(sys.argv[-1]))  # the real worker program
import worker
if mode == "load":
    time.sleep(3600)  # alive, never reads a request
def hang(self, payload):
    time.sleep(3600)  # loaded and bound, then stops answering
worker._Child.step = hang
sys.exit(worker.main())
"""


ENV_TIMEOUT, ENV_LOAD_TIMEOUT = "TINYGRU_WORKER_TIMEOUT", "TINYGRU_WORKER_LOAD_TIMEOUT"


def hanging_python(folder: Path, mode: str) -> tuple[Path, Path]:
    """An executable the worker client starts as its "python": this Python running the real
    worker program, which loads the model with the real LiteRT and then stops answering
    (``mode="step"``), or never answers at all (``mode="load"``). Returns it and its pid file."""
    pidfile = folder / f"{mode}.pid"
    program = folder / f"{mode}_child.py"
    program.write_text(HANGING_CHILD.format(pidfile=str(pidfile), mode=mode))
    exe = folder / f"{mode}-python"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{program}" "$@"\n')
    exe.chmod(0o755)
    return exe, pidfile


class Guard:
    """Kills the child named in ``pidfile`` if the test is still waiting after a long time,
    so a client without a deadline fails this test instead of hanging the suite. Not a
    time check: the assertions are on the error and the child's state."""

    def __init__(self, pidfile: Path, seconds: float = 120.0) -> None:
        import threading

        self.fired = False
        self.pidfile = pidfile
        self.timer = threading.Timer(seconds, self._kill)

    def _kill(self) -> None:
        import signal

        self.fired = True
        if self.pidfile.exists():
            try:
                os.kill(int(self.pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Guard:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_that_stops_answering_is_killed_and_named(bm, tmp_path, monkeypatch) -> None:
    import numpy as np

    from edge_runtime.bundle import Bundle
    from edge_runtime.interpreter import InterpreterError, StepInterpreter

    b = Bundle.open(bm)
    model, step = b.read_bytes("step_int8.tflite"), b.manifest["quantization"]["step"]
    exe, pidfile = hanging_python(tmp_path, "step")
    monkeypatch.setenv(ENV_TIMEOUT, "1")
    with Guard(pidfile) as guard:
        it = StepInterpreter(model, step, python=str(exe))  # LOAD and BIND are answered
        proc = it.worker.proc
        x = np.full(it.x.shape, it.x.zero_point, np.int8)
        with pytest.raises(InterpreterError) as e:
            it.step(x, it.zero_states())
    assert not guard.fired
    msg = str(e.value)
    assert "\n" not in msg
    assert f"interpreter worker {exe} (pid {proc.pid}) did not answer STEP within 1 s" in msg
    assert f"was killed (${ENV_TIMEOUT} sets the limit)" in msg
    assert proc.poll() == -9 and _gone(proc.pid)
    with pytest.raises(InterpreterError, match="is closed"):
        it.step(x, it.zero_states())
    it.close()


def test_a_worker_that_never_loads_is_killed_and_named(bm, tmp_path, monkeypatch) -> None:
    from edge_runtime.bundle import Bundle
    from edge_runtime.interpreter import InterpreterError, StepInterpreter

    b = Bundle.open(bm)
    model, step = b.read_bytes("step_int8.tflite"), b.manifest["quantization"]["step"]
    exe, pidfile = hanging_python(tmp_path, "load")
    monkeypatch.setenv(ENV_LOAD_TIMEOUT, "2")
    with Guard(pidfile) as guard:
        with pytest.raises(InterpreterError) as e:
            StepInterpreter(model, step, python=str(exe))
    assert not guard.fired
    msg = str(e.value)
    assert "\n" not in msg and f"interpreter worker {exe} (pid " in msg
    assert "did not answer LOAD within 2 s" in msg and f"${ENV_LOAD_TIMEOUT}" in msg
    assert _gone(int(pidfile.read_text()))

    monkeypatch.setenv(ENV_TIMEOUT, "soon")
    with pytest.raises(InterpreterError, match=f"{ENV_TIMEOUT}: expected a number of seconds > 0"):
        StepInterpreter(model, step, python=str(exe))


# --------------------------------------------------------------------------- train


def test_sigint_during_training_is_one_line_and_exit_130(bm, tmp_path) -> None:
    """Ctrl-C during `python -m train` used to print a TensorFlow traceback."""
    import signal

    cfg = small_config(tmp_path, "basic_motions.toml", epochs=100000, patience=100000)
    out = tmp_path / "bundle"
    shutil.copytree(bm, out)
    before = tree(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", "--config", str(cfg), "--out", str(out)],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    while b"epoch" not in seen:  # the progress bar: training has started
        chunk = proc.stderr.read1(4096)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=600)[1]  # a hang guard, not a time check
    err = (seen + rest).decode(errors="replace")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines[-1] == "train: interrupted (SIGINT); the bundle is as it was"
    assert not any(ln.startswith("train:") for ln in lines[:-1])
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("bundle")) == ["bundle"]


# --------------------------------------------------------------------------- quantize check


def test_quantize_check_names_a_mutated_step_model(bm, tmp_path, capsys) -> None:
    """Bytes of step_int8.tflite changed (and its sha256 in the manifest updated, so the
    hash check passes): every refusal is one line naming the file. At 01f21ec, where
    the parity check read the model with quantize/tflite_graph.py first, 37 of these 40
    were refused naming no file, 4 of them 'TypeError: bad number ... for type uint32'
    from the flatbuffers reader; 3 only change weights and pass."""
    import hashlib
    import random

    from quantize.__main__ import main as quantize

    data = (bm / "step_int8.tflite").read_bytes()
    refused = 0
    for seed in range(40):
        rng = random.Random(seed)
        mutated = bytearray(data)
        for _ in range(rng.choice([1, 4, 16])):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)

        def edit(m: dict[str, Any], b: bytes = bytes(mutated)) -> None:
            m["artifacts"]["step_int8.tflite"] = {
                "sha256": hashlib.sha256(b).hexdigest(),
                "bytes": len(b),
            }

        b = edited(bm, tmp_path / f"m{seed}", edit)
        (b / "step_int8.tflite").write_bytes(bytes(mutated))
        code = quantize(["check", "--bundle", str(b), "--no-progress", "--limit", "2"])
        err = capsys.readouterr().err
        assert code in (0, 2), (seed, err)
        if code == 2:
            refused += 1
            line = one_line(err)
            assert line.startswith("quantize: error: check: ") and "step_int8.tflite" in line
        shutil.rmtree(b)
    assert refused >= 30  # most byte changes break the flatbuffer; a few only change weights
