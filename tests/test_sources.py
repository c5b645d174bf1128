"""edge_runtime.sources and edge_runtime.frames: the line protocol, binary frames, replay."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from edge_runtime.frames import (
    SYNC,
    FrameDecoder,
    crc16_ccitt_false,
    encode_frame,
    encode_frames,
)
from edge_runtime.sources import (
    Backoff,
    Bad,
    Gap,
    LineDecoder,
    PortLost,
    Sample,
    Source,
    SourceError,
    channel_limits,
    iter_events,
    open_source,
    parse_spec,
)

MANIFEST = {
    "dataset": {
        "sample_rate": 50.0,
        "channels": [
            {"name": "ax", "unit": "g", "scale": 0.001, "raw_min": -2000, "raw_max": 2000},
            {"name": "ay", "unit": "g", "scale": 0.001, "raw_min": -2000, "raw_max": 2000},
            {"name": "gz", "unit": "rad/s", "scale": 0.0005},
        ],
    }
}
C = 3


def crc_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, bit by bit, straight from its definition."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def data(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-2000, 2001, size=(n, C)).astype(np.int16)


def samples(events: list) -> np.ndarray:
    got = [e.counts for e in events if isinstance(e, Sample)]
    return np.array(got, dtype=np.int16).reshape(-1, C)


def decode_all(stream: bytes, chunks: list[int] | None = None) -> list:
    """Feed a byte stream into a frame decoder, split at the given sizes."""
    dec = FrameDecoder(C)
    out: list = []
    pos = 0
    for size in chunks or [len(stream)]:
        out += dec.feed(stream[pos : pos + size])
        pos += size
    out += dec.feed(stream[pos:])
    return out + dec.flush()


class FakeReader:
    """A scripted input: byte strings, or exceptions to raise, one per read."""

    def __init__(self, script: list) -> None:
        self.script = script

    def read(self) -> bytes:
        if not self.script:
            raise EOFError
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        pass


def fake_source(scripts: list[list], **kw) -> Source:
    """A reconnectable source whose n-th (re)open plays scripts[n]; None = open fails."""
    queue = list(scripts)

    def opener() -> FakeReader:
        s = queue.pop(0) if queue else []
        if s is None:
            raise PortLost("no such device")
        return FakeReader(s)

    kw.setdefault("reconnectable", True)
    kw.setdefault("backoff", Backoff(initial=0.001, maximum=0.004))
    return Source(opener, channel_limits(MANIFEST), name="fake", **kw)


def run(src: Source, limit: float = 10.0) -> list:
    out = []
    t0 = time.monotonic()
    for ev in src:
        out.append(ev)
        assert time.monotonic() - t0 < limit
    return out


# --------------------------------------------------------------------------- CRC and frames


def test_crc_published_vectors() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"") == 0xFFFF
    assert crc16_ccitt_false(b"A") == 0xB915
    blob = bytes(range(256)) * 3
    assert crc16_ccitt_false(blob) == crc_bitwise(blob)
    assert crc16_ccitt_false(blob[100:], crc16_ccitt_false(blob[:100])) == crc_bitwise(blob)
    assert crc_bitwise(b"123456789") == 0x29B1


def test_frame_layout_and_round_trip() -> None:
    x = data(7)
    f = encode_frame(x[:2], seq=0x1234)
    assert f[:2] == SYNC and f[2] == 1 and f[3] == C and f[4] == 2
    assert f[5:7] == b"\x34\x12" and int.from_bytes(f[7:9], "little") == 2 * C * 2
    assert len(f) == 9 + 12 + 2
    assert int.from_bytes(f[-2:], "little") == crc_bitwise(f[:-2])
    assert np.frombuffer(f[9:-2], "<i2").reshape(2, C).tolist() == x[:2].tolist()

    out = decode_all(b"".join(encode_frames(x, seq=65534, per_frame=3)))
    assert [o.seq for o in out] == [65534, 1, 4]
    assert np.concatenate([o.counts for o in out]).tolist() == x.tolist()
    with pytest.raises(ValueError):
        encode_frame(np.array([[40000]]), 0)
    with pytest.raises(ValueError):
        encode_frame(np.zeros((1, C), np.float32), 0)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 11, 64])
def test_decoder_split_across_reads(chunk: int) -> None:
    x = data(30)
    stream = b"".join(encode_frames(x, per_frame=4))
    out = decode_all(stream, [chunk] * (len(stream) // chunk + 1))
    assert all(not hasattr(o, "reason") for o in out)
    assert np.concatenate([o.counts for o in out]).tolist() == x.tolist()


def test_decoder_faults_resync() -> None:
    x = data(12)
    frames = list(encode_frames(x, per_frame=2))  # six frames, seq 0, 2, ..., 10
    bad_crc = bytearray(frames[2])
    bad_crc[12] ^= 0x40
    stream = (
        b"\x00\xa5\xffgarbage\xa5"  # garbage, including a lone first sync byte
        + frames[0]
        + frames[1][:-5]  # truncated: the next frame's bytes fail its CRC
        + bytes(bad_crc)
        + SYNC
        + b"\x07junk"  # a sync with a bad header
        + frames[3]
        + frames[4]
        + frames[5][:10]  # cut short at the end of the stream
    )
    for chunks in (None, [1] * len(stream), [5, 17, 3, 40, 9]):
        out = decode_all(stream, chunks)
        good = [o for o in out if not hasattr(o, "reason")]
        bad = [o.reason for o in out if hasattr(o, "reason")]
        assert [g.seq for g in good] == [0, 6, 8]
        assert np.concatenate([g.counts for g in good]).tolist() == x[[0, 1, 6, 7, 8, 9]].tolist()
        assert any("bad CRC" in r for r in bad)
        assert any("version" in r for r in bad)
        assert any("skipped" in r for r in bad)
        assert bad[-1].startswith("truncated frame")


def test_decoder_wrong_channel_count_skipped_whole() -> None:
    other = encode_frame(np.ones((2, C + 1), np.int16), 5)
    good = encode_frame(np.full((1, C), 7, np.int16), 7)
    out = decode_all(other + good)
    assert [getattr(o, "reason", None) for o in out] == [
        f"frame has {C + 1} channels, expected {C}",
        None,
    ]


# --------------------------------------------------------------------------- the line protocol


def parse(line: str, units: str = "counts"):
    return LineDecoder(channel_limits(MANIFEST), units).parse_line(line.encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "line, counts, seq, t",
    [
        ("1,2,3", [1, 2, 3], None, None),
        (" -1 , +2 ,3\r\n", [-1, 2, 3], None, None),
        ("t=12.5,-7,0,32767", [-7, 0, 32767], None, 12.5),
        ("n=65535,t=1e3,1,2,-32768", [1, 2, -32768], 65535, 1000.0),
        ("t=.5,n=4,0,0,0", [0, 0, 0], 4, 0.5),
    ],
)
def test_line_good(line: str, counts: list[int], seq: int | None, t: float | None) -> None:
    item = parse(line)
    assert item.counts.dtype == np.int16 and item.counts.tolist() == [counts]
    assert item.seq == seq and item.t == t


@pytest.mark.parametrize(
    "line, why",
    [
        ("1,2", "2 values, expected 3"),
        ("1,2,3,4", "4 values, expected 3"),
        ("1,nan,3", "is nan"),
        ("1,-inf,3", "is -inf"),
        ("1,2.5,3", "not an integer count"),
        ("1,x,3", "not a number"),
        ("1,0x10,3", "not a number"),
        ("1,,3", "not a number"),
        ("1,1_000,3", "not a number"),
        ("40000,0,0", "outside int16"),
        ("0,0,-99999999999", "outside int16"),
        ("6001,0,0", "outside accepted range [-6000, 6000]"),
        ("0,-6001,0", "outside accepted range"),
        ("t=nan,1,2,3", "timestamp is nan"),
        ("t=abc,1,2,3", "bad timestamp"),
        ("t=1,t=2,1,2,3", "given twice"),
        ("n=-1,1,2,3", "bad sequence number"),
        ("1,2,t=3", "not a number"),
        ("caf\u00e9,1,2", "not ASCII"),
    ],
)
def test_line_bad(line: str, why: str) -> None:
    item = parse(line)
    assert isinstance(item, Bad) and why in item.reason, item


def test_line_comments_blank_and_gz_full_int16() -> None:
    assert parse("# a comment, 1,2,3") is None
    assert parse("   ") is None
    assert parse("0,0,-32768").counts.tolist() == [[0, 0, -32768]]  # gz has no raw range


def test_line_physical_units_round_half_away() -> None:
    # scale 0.001 (ax, ay) and 0.0005 (gz)
    assert parse("0.0025,-0.0025,0.00025", "physical").counts.tolist() == [[3, -3, 1]]
    assert parse("1.0,-2,0", "physical").counts.tolist() == [[1000, -2000, 0]]
    assert parse("1.9994e0,0,0", "physical").counts.tolist() == [[1999, 0, 0]]
    assert "outside int16" in parse("0,0,17", "physical").reason  # 34000 counts
    assert "outside accepted range" in parse("6.5,0,0", "physical").reason
    assert "outside int16" in parse("1e300,0,0", "physical").reason
    assert "is inf" in parse("inf,0,0", "physical").reason
    assert "is NaN" in parse("NaN,0,0", "physical").reason


def test_line_decoder_split_and_overlong() -> None:
    dec = LineDecoder(channel_limits(MANIFEST))
    text = b"1,2,3\n# c\n\n4,5,6\r\n" + b"9" * 5000 + b"\n7,8,9\n10,11"
    out = []
    for i in range(0, len(text), 7):
        out += dec.feed(text[i : i + 7])
    out += dec.flush()
    assert [o.counts.tolist()[0] for o in out if not isinstance(o, Bad)] == [
        [1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
    ]
    bad = [o.reason for o in out if isinstance(o, Bad)]
    assert len(bad) == 2 and "longer than" in bad[0] and "2 values" in bad[1]


def test_channel_limits_margin() -> None:
    lim = channel_limits(MANIFEST, margin=0.25)
    assert lim.lo.tolist() == [-3000, -3000, -32768] and lim.hi.tolist() == [3000, 3000, 32767]
    lim = channel_limits(MANIFEST, margin=None)
    assert lim.lo.tolist() == [-32768] * 3
    with pytest.raises(SourceError):
        channel_limits({"dataset": {}})


def test_parse_spec() -> None:
    assert parse_spec("serial:/dev/ttyUSB0") == ("serial", "/dev/ttyUSB0", 115200)
    assert parse_spec("serial:/dev/ttyACM1@9600") == ("serial", "/dev/ttyACM1", 9600)
    assert parse_spec("/dev/ttyS0") == ("serial", "/dev/ttyS0", 115200)
    assert parse_spec("socket://127.0.0.1:4000") == ("url", "socket://127.0.0.1:4000", 115200)
    assert parse_spec("serial:socket://h:1@57600") == ("url", "socket://h:1", 57600)
    assert parse_spec("rfc2217://h:2217")[0] == "url"
    assert parse_spec("loop://")[0] == "url"
    assert parse_spec("csv:rec.csv") == ("csv", "rec.csv", 0)
    assert parse_spec("-")[0] == "stdin"
    for bad in ("", "rec.csv", "csv:", "serial:", "serial:/dev/x@0"):
        with pytest.raises(SourceError):
            parse_spec(bad)


# --------------------------------------------------------------------------- sources


def test_every_fault_yields_bad_or_gap_and_good_samples_exactly_once() -> None:
    x = data(20)
    good = [f"n={i},{a},{b},{c}\n".encode() for i, (a, b, c) in enumerate(x.tolist())]
    script = [
        b"# hello\n" + b"".join(good[:3]),
        b"1,nan,3\n" + good[3][:5],  # a line split across reads
        good[3][5:] + b"1,2\n" + b"\xff\xfe\n",
        good[4] + good[4],  # a duplicated line
        b"".join(good[7:9]),  # 5, 6 lost: a sequence gap of 2
        good[9][:6],
        PortLost("device reports readiness to read but returned no data"),
    ]
    after = [b"".join(good[12:20])]  # 9 cut off by the loss, 10 and 11 lost during the outage
    src = fake_source([script, None, None, after], encoding="auto")
    ev = run(src)
    kinds = ["S" if isinstance(e, Sample) else type(e).__name__ for e in ev]
    assert "".join(k[0] for k in kinds) == "SSSBSBBSBGSSBGSSSSSSSS"
    assert samples(ev).tolist() == x[[0, 1, 2, 3, 4, 7, 8, *range(12, 20)]].tolist()
    gaps = [e for e in ev if isinstance(e, Gap)]
    assert (gaps[0].missing, gaps[0].reason) == (2, "sequence")
    assert (gaps[1].missing, gaps[1].reason) == (3, "reconnect")  # counted by sequence number
    st = src.stats
    assert (st.samples, st.bad, st.gaps, st.reconnects) == (15, 5, 2, 1)
    assert len(st.outages) == 1 and st.outages[0].duration > 0
    assert st.encoding == "line"
    assert st.to_dict()["bad_reasons"]


def test_reconnect_without_sequence_numbers_estimates_missing() -> None:
    src = fake_source([[b"1,2,3\n", PortLost("gone")], [b"4,5,6\n"]], encoding="line")
    ev = run(src)
    assert [type(e).__name__ for e in ev] == ["Sample", "Gap", "Sample"]
    assert ev[1].reason == "reconnect" and ev[1].missing >= 0


def test_reconnect_gives_up_after_backoff_limit() -> None:
    src = fake_source(
        [[b"1,2,3\n", PortLost("gone")]] + [None] * 1000,
        backoff=Backoff(initial=0.001, maximum=0.002, give_up=0.05),
    )
    with pytest.raises(SourceError, match="giving up"):
        run(src)
    assert src.stats.reconnects == 0 and src.stats.outages[0].duration >= 0.05


def test_no_reconnect_ends_the_stream() -> None:
    src = fake_source([[b"1,2,3\n", PortLost("gone")], [b"4,5,6\n"]], reconnect=False)
    assert [type(e).__name__ for e in run(src)] == ["Sample"]


def test_auto_detects_frames_after_noise() -> None:
    x = data(10)
    stream = b"\x00\x13noise\n" + b"".join(encode_frames(x, seq=100, per_frame=3))
    src = fake_source([[stream[i : i + 4] for i in range(0, len(stream), 4)]], reconnect=False)
    ev = run(src)
    assert src.stats.encoding == "frame"
    assert samples(ev).tolist() == x.tolist()
    assert [e.seq for e in ev if isinstance(e, Sample)] == list(range(100, 110))
    assert sum(isinstance(e, Bad) for e in ev) == 1


def test_frame_source_gap_duplicate_and_restart() -> None:
    x = data(30)
    f = list(encode_frames(x, seq=1000, per_frame=5))  # seq 1000, 1005, ..., 1025
    restart = encode_frame(x[:2], 0)
    src = fake_source([[f[0], f[1], f[1], f[3], f[4], restart]], encoding="frame")
    ev = run(src)
    assert [type(e).__name__[0] for e in ev if not isinstance(e, Sample)] == ["B", "G", "G"]
    gaps = [e for e in ev if isinstance(e, Gap)]
    assert (gaps[0].missing, gaps[0].reason) == (5, "sequence")
    assert (gaps[1].missing, gaps[1].reason) == (0, "restart")
    assert samples(ev).tolist() == x[[*range(10), *range(15, 25), 0, 1]].tolist()


def test_frame_sample_outside_range_rejected_alone() -> None:
    x = data(4)
    x[2, 0] = 9000
    src = fake_source([[encode_frame(x, 0)]], encoding="frame")
    ev = run(src)
    # with sequence numbers, a rejected sample is also a gap in the stream
    assert [type(e).__name__[0] for e in ev] == ["S", "S", "B", "G", "S"]
    assert samples(ev).tolist() == x[[0, 1, 3]].tolist()


def write_csv(path: Path, x: np.ndarray, header: str | None = "ax,ay,gz") -> Path:
    lines = [header] if header else []
    lines += [",".join(map(str, r)) for r in x.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_replay_fast(tmp_path: Path) -> None:
    x = data(500)
    p = write_csv(tmp_path / "rec.csv", x)
    t0 = time.monotonic()
    src = open_source(f"csv:{p}", MANIFEST)
    ev = list(iter_events(src))
    assert time.monotonic() - t0 < 5.0
    assert all(isinstance(e, Sample) for e in ev)
    assert samples(ev).tolist() == x.tolist()


def test_csv_replay_realtime(tmp_path: Path) -> None:
    x = data(11)
    p = write_csv(tmp_path / "rec.csv", x, header=None)
    manifest = {"dataset": {**MANIFEST["dataset"], "sample_rate": 100.0}}
    src = open_source(f"csv:{p}", manifest, realtime=True)
    stamps = []
    for e in src:
        stamps.append(time.monotonic())
        assert isinstance(e, Sample)
    assert len(stamps) == 11
    assert stamps[-1] - stamps[0] >= 0.1 - 0.005  # 10 periods of 10 ms


def test_csv_header_with_time_column(tmp_path: Path) -> None:
    p = tmp_path / "rec.csv"
    p.write_text("t,ax,ay,gz\n0.00,1,2,3\n0.02,4,5,6\n")
    ev = list(open_source(f"csv:{p}", MANIFEST))
    assert [(e.t, e.counts.tolist()) for e in ev] == [(0.0, [1, 2, 3]), (0.02, [4, 5, 6])]
    p.write_text("ay,ax,gz\n1,2,3\n")
    with pytest.raises(SourceError, match="does not match"):
        list(open_source(f"csv:{p}", MANIFEST))
    with pytest.raises(SourceError, match="cannot open"):
        open_source(f"csv:{tmp_path / 'missing.csv'}", MANIFEST)


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    x = data(5)
    text = "".join(f"{a},{b},{c}\n" for a, b, c in x.tolist())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert samples(list(open_source("-", MANIFEST))).tolist() == x.tolist()


@pytest.mark.parametrize("encoding", ["line", "frame", "auto"])
def test_loop_url(encoding: str) -> None:
    x = data(200)
    src = open_source("loop://", MANIFEST, encoding=encoding)  # type: ignore[arg-type]
    port = src._reader._port  # type: ignore[union-attr]
    if encoding == "line":
        payload = b"garbage\n" + "".join(f"{a},{b},{c}\n" for a, b, c in x.tolist()).encode()
    else:
        payload = b"garbage" + b"".join(encode_frames(x, per_frame=8))
    threading.Thread(target=port.write, args=(payload,), daemon=True).start()
    ev = []
    deadline = time.monotonic() + 10
    for e in src:
        ev.append(e)
        if sum(isinstance(v, Sample) for v in ev) == len(x) or time.monotonic() > deadline:
            src.close()
    assert samples(ev).tolist() == x.tolist()
    assert sum(isinstance(e, Bad) for e in ev) == 1


def test_serial_open_failure_is_clear() -> None:
    with pytest.raises(SourceError, match="cannot open"):
        open_source("serial:/dev/tinygru-no-such-tty", MANIFEST)
    with pytest.raises(serial.SerialException):
        serial.serial_for_url("/dev/tinygru-no-such-tty")
