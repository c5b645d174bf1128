"""Real sensor data over a real serial link: a pty pair bridged by socat.

A writer thread streams BasicMotions counts into one end of the bridge; the
reader is ``open_source("serial:" + other_end, ...)``. What it receives is
compared with the original int16 arrays, never with a re-parse of the text.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import serial

from edge_runtime.frames import encode_frame, encode_frames
from edge_runtime.sources import Backoff, Bad, Gap, Sample, open_source
from edge_runtime.sources.bridge import Bridge

pytestmark = pytest.mark.skipif(
    shutil.which("socat") is None,
    reason="socat is not installed (Debian package 'socat', listed in debian-packages.txt)",
)

REALTIME_SAMPLES = 20  # sent at the data set's own rate (10 Hz: 2 s); the rest as fast as possible
DEADLINE = 90.0  # a watchdog for a stuck test, never reached when it passes


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    br = Bridge(tmp_path)
    br.start()
    try:
        yield br
    finally:
        br.stop()


@pytest.fixture(scope="module")
def recording() -> tuple[np.ndarray, dict]:
    """BasicMotions counts (all 80 series end to end) and a manifest describing them."""
    from train.data.registry import load_dataset

    data = load_dataset("basic_motions")
    x = np.concatenate([r.counts for r in data.recordings]).astype(np.int16)
    lo, hi = x.min(axis=0), x.max(axis=0)
    manifest = {
        "dataset": {
            "id": data.dataset_id,
            "sample_rate": data.sample_rate,
            "channels": [
                {
                    "name": c.name,
                    "unit": c.unit,
                    "scale": c.scale,
                    "raw_min": int(a),
                    "raw_max": int(b),
                }
                for c, a, b in zip(data.channels, lo, hi, strict=True)
            ],
        }
    }
    return x, manifest


def open_writer(path: Path) -> serial.Serial:
    return serial.Serial(str(path), 115200, timeout=1)


def consume(src, done: Callable[[list], bool], events: list | None = None) -> list:
    """Events (appended to ``events``) until ``done(events)`` says stop, or the deadline."""
    events = [] if events is None else events
    watchdog = threading.Timer(DEADLINE, src.close)
    watchdog.start()
    try:
        for ev in src:
            events.append(ev)
            if done(events):
                src.close()
    finally:
        watchdog.cancel()
    return events


def n_samples(events: list) -> int:
    return sum(isinstance(e, Sample) for e in events)


def received(events: list) -> np.ndarray:
    return np.array([e.counts for e in events if isinstance(e, Sample)], dtype=np.int16)


def counts_lines(x: np.ndarray, seq0: int = 0) -> list[bytes]:
    return [
        (f"n={seq0 + i}," + ",".join(str(v) for v in row) + "\n").encode()
        for i, row in enumerate(x.tolist())
    ]


def physical_lines(x: np.ndarray, scale: np.ndarray, period: float) -> list[bytes]:
    phys = x.astype(np.float64) * scale
    return [
        (f"t={i * period:.3f}," + ",".join(f"{v:.9g}" for v in row) + "\n").encode()
        for i, row in enumerate(phys.tolist())
    ]


def frame_chunks(x: np.ndarray, per_frame: int = 4, seq: int = 0) -> list[bytes]:
    return list(encode_frames(x, seq=seq, per_frame=per_frame))


@pytest.mark.parametrize("encoding", ["counts-text", "physical-text", "frames"])
def test_stream_real_data(bridge: Bridge, recording, encoding: str) -> None:
    x, manifest = recording
    scale = np.array([c["scale"] for c in manifest["dataset"]["channels"]])
    period = 1.0 / manifest["dataset"]["sample_rate"]
    if encoding == "counts-text":
        chunks, per_chunk = counts_lines(x), 1
    elif encoding == "physical-text":
        chunks, per_chunk = physical_lines(x, scale, period), 1
    else:
        chunks, per_chunk = frame_chunks(x[:REALTIME_SAMPLES], 1), 1
        chunks += frame_chunks(x[REALTIME_SAMPLES:], 8, seq=REALTIME_SAMPLES)
    src = open_source(
        "serial:" + str(bridge.b),
        manifest,
        encoding="auto",
        units="physical" if encoding == "physical-text" else "counts",
    )
    errors: list[BaseException] = []
    finished = threading.Event()

    def write() -> None:
        try:
            with open_writer(bridge.a) as port:
                for i, chunk in enumerate(chunks):
                    if i * per_chunk < REALTIME_SAMPLES:
                        port.write(chunk)
                        port.flush()
                        time.sleep(period)
                    else:
                        port.write(b"".join(chunks[i:]))
                        port.flush()
                        break
                finished.wait(DEADLINE)  # keep the port open: closing it ends socat
        except BaseException as e:  # reported by the test
            errors.append(e)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    t0 = time.monotonic()
    events = consume(src, lambda ev: n_samples(ev) >= len(x))
    finished.set()
    writer.join(10)
    elapsed = time.monotonic() - t0
    got = received(events)
    assert not errors, (errors, got.shape)
    assert [e for e in events if not isinstance(e, Sample)] == []
    assert got.dtype == np.int16 and got.shape == x.shape
    assert np.array_equal(got, x)
    assert elapsed >= (REALTIME_SAMPLES - 1) * period * 0.9
    assert src.stats.encoding == ("frame" if encoding == "frames" else "line")


@pytest.mark.parametrize("encoding", ["line", "frame"])
def test_faults_over_pty(bridge: Bridge, recording, encoding: str) -> None:
    x, manifest = recording
    x = x[:600]
    frames = frame_chunks(x, 5)  # frame k holds samples 5k .. 5k+4, seq 5k
    lines = counts_lines(x)
    expected: list[int] = []  # indices into x of every sample that must arrive, in order
    want_gaps: list[tuple[str, int]] = []

    # part 1, before the disconnect; part 2 after it
    if encoding == "line":
        part1 = lines[0:100] + [b"\x00\xff\x13garbage \xa5\x5a\n"]
        part1 += lines[100:150] + [b"n=150,1,nan,3,4,5,6\n"]  # NaN: 150 is lost
        part1 += [b"n=151,1,2,3\n"]  # wrong channel count: 151 is lost
        part1 += lines[152:200] + lines[230:300]  # a sequence gap: 200..229 never sent
        expected += [*range(0, 150), *range(152, 200), *range(230, 300)]
        want_gaps += [("sequence", 2), ("sequence", 30)]
        part2 = lines[320:600]  # 300..319 lost while the port was down
        n_bad = 3
    else:
        bad_crc = bytearray(frames[30])
        bad_crc[15] ^= 0x01
        part1 = frames[0:20] + [b"\x00\xff\x13garbage \x5a\xa5"]
        part1 += frames[20:25] + [frames[25][:17]] + frames[26:30]  # frame 25 cut short
        part1 += [bytes(bad_crc)] + frames[31:40] + frames[46:60]  # 40..45 never sent
        expected += [*range(0, 125), *range(130, 150), *range(155, 200), *range(230, 300)]
        want_gaps += [("sequence", 5), ("sequence", 5), ("sequence", 30)]
        part2 = frames[64:120]  # 60..63 (samples 300..319) lost while the port was down
        n_bad = 3
    expected += list(range(320, 600))
    want_gaps += [("reconnect", 20)]

    src = open_source(
        "serial:" + str(bridge.b),
        manifest,
        encoding=encoding,  # type: ignore[arg-type]
        backoff=Backoff(initial=0.05, maximum=0.4),
    )
    part1_samples = expected.index(320)
    events: list = []
    errors: list[BaseException] = []
    finished = threading.Event()

    def write() -> None:
        try:
            port = open_writer(bridge.a)
            port.write(b"".join(part1))
            port.flush()
            t0 = time.monotonic()
            while n_samples(events) < part1_samples and time.monotonic() - t0 < DEADLINE:
                time.sleep(0.01)
            bridge.stop()  # the link goes away mid-stream
            port.close()
            time.sleep(0.3)
            bridge.start()
            while src.stats.reconnects < 1 and time.monotonic() - t0 < DEADLINE:
                time.sleep(0.01)
            port = open_writer(bridge.a)
            port.write(b"".join(part2))
            port.flush()
            finished.wait(DEADLINE)
        except BaseException as e:  # reported by the test
            errors.append(e)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    consume(src, lambda ev: n_samples(ev) >= len(expected), events)
    finished.set()
    writer.join(10)
    assert not errors, errors
    assert np.array_equal(received(events), x[expected])
    gaps = [(e.reason, e.missing) for e in events if isinstance(e, Gap)]
    assert gaps == want_gaps
    bad = [e.reason for e in events if isinstance(e, Bad)]
    assert len(bad) >= n_bad, bad
    st = src.stats
    assert st.reconnects == 1 and len(st.outages) == 1 and st.outages[0].duration > 0.2
    assert st.samples == len(expected) and st.gaps == len(want_gaps) and st.bad == len(bad)
    # the reconnect Gap sits exactly between the last sample before and the first after
    seqs = [e.seq if isinstance(e, Sample) else e for e in events if not isinstance(e, Bad)]
    i = seqs.index(Gap(20, "reconnect"))
    assert seqs[i - 1] == 299 and seqs[i + 1] == 320


def test_frames_restart_after_device_reset(bridge: Bridge, recording) -> None:
    x, manifest = recording
    src = open_source("serial:" + str(bridge.b), manifest, encoding="frame")
    stream = b"".join(encode_frames(x[:400], seq=30000, per_frame=10))
    stream += encode_frame(x[400:410], 0)  # the sender restarted its numbering
    with open_writer(bridge.a) as port:
        port.write(stream)
        port.flush()
        events = consume(src, lambda ev: n_samples(ev) >= 410)
    assert np.array_equal(received(events), x[:410])
    assert [(e.reason, e.missing) for e in events if isinstance(e, Gap)] == [("restart", 0)]
