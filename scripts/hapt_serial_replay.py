"""Replay HAPT test recordings over a socat pty pair into ``tinygru-edge run``.

For each recording in a bundle's ``reference.npz`` (``rec_counts``,
``rec_labels``, ``rec_offsets``, ``rec_groups``) this script

1. starts two socat pty pairs, one per mode, and two ``tinygru-edge run
   --source serial:<pty> --mode window-exact|continuous`` readers;
2. streams the recording's int16 counts into the other end of each pair: the
   first ``--realtime-seconds`` at the manifest sample rate (one sample per
   frame or line), the rest as fast as the link takes it (``--burst`` samples
   per frame); ``--encoding frame`` sends binary frames (sync, header, uint16
   sequence number, CRC-16/CCITT-FALSE), ``--encoding line`` sends
   ``n=<seq>,v1,...,vC`` count lines;
3. recomputes every window (start every ``hop`` samples from the recording
   start, ``window`` samples long) with the offline int8 step chain
   (``edge_runtime.stream.chain.StepChain``: the contract's step inputs, not the
   streaming ring buffer), and counts the windows whose int8 head output is
   identical to the one the runtime emitted;
4. scores window-exact and continuous predictions against ``rec_labels`` on the
   label-pure windows (all samples share one label >= 0) and measures the
   agreement between the two modes.

Usage (from the repository root, or anywhere with tinygru-edge installed)::

    .venv/bin/python -m scripts.hapt_serial_replay --bundle build/har [--subjects 2,4]
        [--limit N] [--encoding frame|line] [--realtime-seconds 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract
from edge_runtime.bundle import Bundle
from edge_runtime.frames import encode_frame
from edge_runtime.sources.bridge import Bridge
from edge_runtime.stream import MODES
from edge_runtime.stream.chain import StepChain

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_RE = re.compile(
    r"samples (\d+), results (\d+), bad samples (\d+), gaps (\d+) \((\d+) samples missing\)"
)


# --------------------------------------------------------------------------- encodings


def encode_lines(counts: np.ndarray, seq: int) -> bytes:
    """Count text lines ``n=<seq>,v1,...,vC`` for ``counts`` ``(S, C)``."""
    out = []
    for i, row in enumerate(counts):
        out.append(f"n={(seq + i) & 0xFFFF}," + ",".join(str(int(v)) for v in row) + "\n")
    return "".join(out).encode("ascii")


ENCODERS = {"frame": encode_frame, "line": encode_lines}


# --------------------------------------------------------------------------- link


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` (resolved) open."""
    target = os.path.realpath(path)
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == target:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


@dataclass
class Writer:
    """Streams one recording into a pty: paced first, then as fast as possible."""

    path: Path
    counts: np.ndarray
    encoding: str
    rate: float
    realtime: int
    burst: int
    fd: int = -1
    sent: int = 0
    bytes: int = 0
    paced_seconds: float = 0.0
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_NOCTTY)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.bytes += len(data)

    def _run(self) -> None:
        enc = ENCODERS[self.encoding]
        n = len(self.counts)
        try:
            t0 = time.monotonic()
            head = min(self.realtime, n)
            for i in range(head):
                due = t0 + i / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._write(enc(self.counts[i : i + 1], i))
                self.sent = i + 1
            self.paced_seconds = time.monotonic() - t0
            i = head
            while i < n:
                j = min(i + self.burst, n)
                self._write(enc(self.counts[i:j], i))
                self.sent = j
                i = j
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Run:
    mode: str
    bridge: Bridge
    out: Path
    err: Path
    proc: subprocess.Popen[bytes] | None = None
    writer: Writer | None = None
    wall: float = 0.0
    killed: bool = False


# --------------------------------------------------------------------------- one recording


def label_pure(labels: np.ndarray, starts: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, label)`` per window start: all ``T`` labels equal and >= 0."""
    mask = np.zeros(len(starts), bool)
    lab = np.full(len(starts), -1, np.int64)
    for j, s in enumerate(starts):
        w = labels[s : s + T]
        if w[0] >= 0 and np.all(w == w[0]):
            mask[j] = True
            lab[j] = int(w[0])
    return mask, lab


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    results: list[dict[str, Any]] = []
    gaps = 0
    if not path.exists():
        return results, gaps
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            if "gap" in d:
                gaps += 1
            else:
                results.append(d)
    return results, gaps


def replay_recording(
    i: int,
    counts: np.ndarray,
    labels: np.ndarray,
    group: str,
    args: argparse.Namespace,
    manifest: dict[str, Any],
    chain: StepChain,
    work: Path,
) -> dict[str, Any]:
    pre = manifest["preprocess"]
    T, H = int(pre["window"]), int(pre["hop"])
    s = int(manifest["model"]["config"].get("front_end_stride", 1))
    last_step = contract.last_step(T, s)
    rate = float(manifest["dataset"]["sample_rate"])
    n = len(counts)
    runtime = shlex.split(args.runtime)
    rec_dir = work / f"rec{i:02d}_{group}"
    rec_dir.mkdir(parents=True, exist_ok=True)

    runs: list[Run] = []
    t_start = time.monotonic()
    try:
        for mode in MODES:
            folder = rec_dir / mode
            folder.mkdir(exist_ok=True)
            br = Bridge(folder)
            br.start()
            runs.append(Run(mode, br, folder / "results.jsonl", folder / "stderr.txt"))
        for r in runs:
            cmd = [
                *runtime,
                "run",
                "--bundle",
                str(args.bundle),
                "--source",
                f"serial:{r.bridge.b}",
                "--mode",
                r.mode,
                "--encoding",
                args.encoding,
                "--max-samples",
                str(n),
                "--out",
                str(r.out),
            ]
            with open(r.err, "wb") as err:
                r.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=err)
        for r in runs:
            assert r.proc is not None
            t0 = time.monotonic()
            while not has_open(r.proc.pid, r.bridge.b):
                if r.proc.poll() is not None:
                    raise RuntimeError(f"{r.mode} runtime exited early: {r.err.read_text()}")
                if time.monotonic() - t0 > args.open_timeout:
                    raise RuntimeError(f"{r.mode} runtime did not open {r.bridge.b}")
                time.sleep(0.05)
        time.sleep(0.2)
        t_stream = time.monotonic()
        for r in runs:
            r.writer = Writer(
                r.bridge.a,
                counts,
                args.encoding,
                rate,
                int(round(args.realtime_seconds * rate)),
                args.burst,
            )
            r.writer.start()

        starts = np.arange(0, max(n - T + 1, 0), H, dtype=np.int64)
        offline = np.stack([chain.window(counts[st : st + T]) for st in starts])
        offline_seconds = time.monotonic() - t_stream

        deadline = time.monotonic() + args.timeout + n / 1000.0
        for r in runs:
            assert r.proc is not None and r.writer is not None
            r.writer.join(max(deadline - time.monotonic(), 1.0))
            try:
                r.proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                r.killed = True
                r.proc.terminate()
                r.proc.wait(timeout=30)
            r.wall = time.monotonic() - t_stream
    finally:
        for r in runs:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
            if r.writer is not None:
                r.writer.join(5)
                r.writer.close()
            r.bridge.stop()

    mask, lab = label_pure(labels, starts, T)
    rec: dict[str, Any] = {
        "index": i,
        "group": group,
        "samples": n,
        "windows": len(starts),
        "label_pure": int(mask.sum()),
        "offline_seconds": round(offline_seconds, 2),
        "wall_seconds": round(time.monotonic() - t_start, 2),
    }
    preds: dict[str, np.ndarray] = {}
    for r in runs:
        results, gap_lines = read_results(r.out)
        err_text = r.err.read_text(errors="replace")
        m = SUMMARY_RE.search(err_text)
        summary = [int(v) for v in m.groups()] if m else None
        assert r.writer is not None
        info: dict[str, Any] = {
            "streamed": r.writer.sent,
            "bytes": r.writer.bytes,
            "paced_seconds": round(r.writer.paced_seconds, 2),
            "writer_error": r.writer.error,
            "received": summary[0] if summary else None,
            "results": len(results),
            "bad": summary[2] if summary else None,
            "gaps": summary[3] if summary else gap_lines,
            "gap_lines": gap_lines,
            "missing": summary[4] if summary else None,
            "exit": r.proc.returncode if r.proc is not None else None,
            "killed": r.killed,
            "wall_seconds": round(r.wall, 2),
        }
        pred = np.full(len(starts), -1, np.int64)
        seq_ok = True
        if r.mode == "window-exact":
            by_start: dict[int, dict[str, Any]] = {}
            for d in results:
                ws = int(d["window_start"])
                by_start[ws] = d
                if int(d["sample"]) != ws + last_step:
                    seq_ok = False
                if "seq" in d and int(d["seq"]) != (ws + last_step) & 0xFFFF:
                    seq_ok = False
            identical = 0
            compared = 0
            for j, st in enumerate(starts):
                d = by_start.get(int(st))
                if d is None:
                    continue
                compared += 1
                y = np.asarray(d["y_int8"], np.int64)
                if np.array_equal(y, offline[j].astype(np.int64)):
                    identical += 1
                pred[j] = int(d["label_index"])
            extra = sorted(set(by_start) - set(int(v) for v in starts))
            extra_identical = sum(
                np.array_equal(
                    np.asarray(by_start[ws]["y_int8"], np.int64),
                    chain.window(counts[ws : ws + T]).astype(np.int64),
                )
                for ws in extra
                if 0 <= ws and ws + last_step < n
            )
            info.update(
                compared=compared,
                identical=identical,
                missing_windows=len(starts) - compared,
                extra_windows=len(extra),
                extra_identical=int(extra_identical),
                argmax_match_offline=int(
                    np.sum(pred[pred >= 0] == np.argmax(offline[pred >= 0], axis=1))
                ),
            )
        else:
            by_sample = {int(d["sample"]): d for d in results}
            for j, st in enumerate(starts):
                d = by_sample.get(int(st) + last_step)
                if d is None:
                    continue
                if "seq" in d and int(d["seq"]) != (int(st) + last_step) & 0xFFFF:
                    seq_ok = False
                pred[j] = int(d["label_index"])
            info.update(compared=int(np.sum(pred >= 0)))
        info["sample_index_consistent"] = seq_ok
        info["correct_label_pure"] = int(np.sum((pred == lab) & mask))
        preds[r.mode] = pred
        rec[r.mode] = info
    we, co = preds["window-exact"], preds["continuous"]
    both = (we >= 0) & (co >= 0)
    rec["agree"] = int(np.sum((we == co) & both))
    rec["agree_of"] = int(both.sum())
    rec["agree_label_pure"] = int(np.sum((we == co) & both & mask))
    rec["agree_label_pure_of"] = int(np.sum(both & mask))
    rec["offline_correct_label_pure"] = int(np.sum((np.argmax(offline, axis=1) == lab) & mask))
    return rec


# --------------------------------------------------------------------------- main


def subject_of(group: str) -> int:
    m = re.match(r"s(\d+)", group)
    return int(m.group(1)) if m else -1


def pct(a: int, b: int) -> str:
    return f"{a}/{b} = {a / b:.4f}" if b else f"{a}/0"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--subjects", default=None, help="comma-separated subject numbers (default all)")
    p.add_argument("--limit", type=int, default=0, help="at most N recordings")
    p.add_argument("--encoding", choices=tuple(ENCODERS), default="frame")
    p.add_argument("--realtime-seconds", type=float, default=10.0)
    p.add_argument("--burst", type=int, default=32, help="samples per frame/write after pacing")
    p.add_argument(
        "--runtime",
        default=f"{shlex.quote(sys.executable)} -m edge_runtime",
        help="the tinygru-edge command (run from the repository root)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per recording + n/1000")
    p.add_argument("--open-timeout", type=float, default=120.0)
    p.add_argument("--work", type=Path, default=None, help="keep pty links and outputs here")
    p.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    args = p.parse_args(argv)
    if not 1 <= args.burst <= 255:
        p.error("--burst must be in 1..255")
    if shutil.which("socat") is None:
        print("socat is not installed", file=sys.stderr)
        return 2
    args.bundle = args.bundle.resolve()

    manifest = json.loads((args.bundle / contract.MANIFEST).read_text())
    ref = np.load(args.bundle / contract.REFERENCE)
    offsets = ref["rec_offsets"]
    groups = [str(g) for g in ref["rec_groups"]]
    chosen = list(range(len(offsets) - 1))
    if args.subjects:
        want = {int(v) for v in args.subjects.split(",") if v.strip()}
        chosen = [i for i in chosen if subject_of(groups[i]) in want]
    if args.limit:
        chosen = chosen[: args.limit]
    chain = StepChain(Bundle.open(args.bundle))
    T, H = int(manifest["preprocess"]["window"]), int(manifest["preprocess"]["hop"])

    work = args.work or Path(tempfile.mkdtemp(prefix="hapt_serial_"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"bundle {args.bundle}; {len(chosen)} recordings; encoding {args.encoding}; "
        f"first {args.realtime_seconds:g} s paced at {manifest['dataset']['sample_rate']} Hz; "
        f"window {T}, hop {H}; work folder {work}",
        flush=True,
    )
    t0 = time.monotonic()
    records = []
    ref_pure_ok = True
    for i in chosen:
        a, b = int(offsets[i]), int(offsets[i + 1])
        counts = ref["rec_counts"][a:b]
        labels = ref["rec_labels"][a:b].astype(np.int64)
        rec = replay_recording(i, counts, labels, groups[i], args, manifest, chain, work)
        ref_starts = np.sort(ref["starts"][ref["groups"] == groups[i]])
        starts = np.arange(0, max(len(counts) - T + 1, 0), H)
        mask, _ = label_pure(labels, starts, T)
        rec["reference_windows_match"] = bool(np.array_equal(ref_starts, starts[mask]))
        ref_pure_ok &= rec["reference_windows_match"]
        records.append(rec)
        we, co = rec["window-exact"], rec["continuous"]
        print(
            f"[{len(records)}/{len(chosen)}] {rec['group']}: {rec['samples']} samples, "
            f"identical {we['identical']}/{rec['windows']}, "
            f"we acc {pct(we['correct_label_pure'], rec['label_pure'])}, "
            f"co acc {pct(co['correct_label_pure'], rec['label_pure'])}, "
            f"agree {pct(rec['agree'], rec['agree_of'])}, "
            f"bad {we['bad']}/{co['bad']}, gaps {we['gaps']}/{co['gaps']}, "
            f"{rec['wall_seconds']:.1f} s",
            flush=True,
        )
    wall = time.monotonic() - t0

    def total(mode: str | None, key: str) -> int:
        return int(sum((r[mode] if mode else r)[key] or 0 for r in records))

    n_pure = total(None, "label_pure")
    summary = {
        "bundle": str(args.bundle),
        "encoding": args.encoding,
        "realtime_seconds": args.realtime_seconds,
        "recordings": [r["group"] for r in records],
        "subjects": sorted({subject_of(r["group"]) for r in records}),
        "samples": total(None, "samples"),
        "windows": total(None, "windows"),
        "label_pure_windows": n_pure,
        "reference_windows_match": ref_pure_ok,
        "wall_seconds": round(wall, 1),
        "agreement": [total(None, "agree"), total(None, "agree_of")],
        "agreement_label_pure": [
            total(None, "agree_label_pure"),
            total(None, "agree_label_pure_of"),
        ],
        "offline_correct_label_pure": total(None, "offline_correct_label_pure"),
        "per_recording": records,
    }
    for mode in MODES:
        summary[mode] = {
            k: total(mode, k)
            for k in ("streamed", "received", "results", "bad", "gaps", "missing", "compared",
                      "correct_label_pure")
        }  # fmt: skip
    summary["window-exact"]["identical"] = total("window-exact", "identical")
    summary["window-exact"]["missing_windows"] = total("window-exact", "missing_windows")
    summary["window-exact"]["extra_windows"] = total("window-exact", "extra_windows")
    summary["window-exact"]["extra_identical"] = total("window-exact", "extra_identical")

    we, co = summary["window-exact"], summary["continuous"]
    print()
    print(f"recordings: {len(records)} ({', '.join(summary['recordings'])})")
    print(f"subjects: {summary['subjects']}")
    for mode in MODES:
        d = summary[mode]
        print(
            f"{mode}: samples streamed {d['streamed']}, received {d['received']}, "
            f"bad {d['bad']}, gaps {d['gaps']} ({d['missing']} missing), results {d['results']}"
        )
    print(f"windows compared (window-exact vs offline LiteRT chain): {we['compared']} "
          f"of {summary['windows']} expected; missing {we['missing_windows']}, "
          f"extra {we['extra_windows']} (last step inside the recording; identical to the "
          f"offline chain over the samples present: {we['extra_identical']})")  # fmt: skip
    print(f"identical int8 outputs: {pct(we['identical'], we['compared'])}")
    print(f"label-pure windows: {n_pure} (match reference.npz windows: {ref_pure_ok})")
    print(f"window-exact accuracy (label-pure): {pct(we['correct_label_pure'], n_pure)}")
    print(
        f"offline chain accuracy (label-pure): {pct(summary['offline_correct_label_pure'], n_pure)}"
    )
    print(f"continuous accuracy (label-pure):   {pct(co['correct_label_pure'], n_pure)}")
    print(f"agreement continuous vs window-exact: all windows "
          f"{pct(*summary['agreement'])}; label-pure {pct(*summary['agreement_label_pure'])}")  # fmt: skip
    print(f"wall time: {wall:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    ok = (
        we["compared"] == summary["windows"]
        and we["identical"] == we["compared"]
        and we["bad"] == 0
        and co["bad"] == 0
        and we["gaps"] == 0
        and co["gaps"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
