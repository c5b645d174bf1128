"""Run a chain of stages, each a subprocess, skipping those whose inputs did not change.

The key of a stage is the sha256 over
  - its name and exact argv,
  - the link of the stage before it (that stage's key and the hashes of the files it
    wrote, so a change upstream re-runs everything after it),
  - the bytes of its input files (stage config, a bring-your-own data file, the
    pinned requirements),
  - the code it runs: relative path and bytes of every ``*.py``, ``*.c``, ``*.h``,
    ``*.cc``, ``*.toml``, ``*.ld``, ``*.json``, ``*.mk``, ``*.cmake`` and
    ``Makefile`` under its source folders,
  - the Python version and the first line of ``TOOL --version`` of its tools.

After a stage succeeds, its stamp (``<stamp_dir>/<stage>.json``) records the key
and the sha256 of every file of its watched folder (the bundle) that it created or
changed, found by hashing the folder before and after (a changed modification
time counts as a change; ``manifest.json`` is hashed without its ``created``
times). A stage is skipped only when the stamp's key matches and every file it
recorded still has the recorded hash; a file that a later stage also wrote (the
manifest, say) is checked against the later stage's stamp. A stage whose stamp
is missing or stale runs, and the stamp is removed before it runs, so a failed
stage leaves none.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edge_runtime.bundle import sha256_file

__all__ = [
    "CODE_NAMES",
    "CODE_SUFFIXES",
    "Outcome",
    "Stage",
    "StageFailed",
    "code_digest",
    "run_chain",
    "snapshot",
    "stage_key",
    "stamped_link",
    "tool_version",
]

STAMP_VERSION = 1
CODE_SUFFIXES = frozenset({".py", ".c", ".h", ".cc", ".toml", ".ld", ".json", ".mk", ".cmake"})
CODE_NAMES = frozenset({"Makefile"})
_SKIP_DIRS = frozenset({"__pycache__", "build", "dist"})
MANIFEST = "manifest.json"
LOG_TAIL_LINES = 200


@dataclass(frozen=True)
class Stage:
    """One step of a chain.

    ``watch`` is the folder whose files the stage creates or changes (the bundle);
    ``sources`` are code folders or files, ``inputs`` data files (both hashed into
    the key); ``tools`` are executables whose version line enters the key.
    """

    name: str
    argv: tuple[str, ...]
    watch: Path
    sources: tuple[Path, ...] = ()
    inputs: tuple[Path, ...] = ()
    tools: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What happened to one stage: ``status`` is ``"cached"`` or ``"ran"``."""

    stage: str
    status: str
    seconds: float
    reason: str


class StageFailed(Exception):
    """A stage exited non-zero (or could not be started); ``str()`` is the one-line reason."""

    def __init__(self, task: str, stage: str, returncode: int, log: Path | None = None) -> None:
        super().__init__(task, stage, returncode)
        self.task = task
        self.stage = stage
        self.returncode = returncode
        self.log = log

    def __str__(self) -> str:
        return (
            f"pipeline: stage '{self.stage}' of task '{self.task}' failed "
            f"(exit {self.returncode}); see the output above"
        )


# --------------------------------------------------------------------------- hashing


def _manifest_digest(path: Path) -> str:
    """sha256 of a bundle manifest without its ``created`` times (top level and per stage)."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return hashlib.sha256(raw).hexdigest()
    if not isinstance(data, dict):
        return hashlib.sha256(raw).hexdigest()
    data.pop("created", None)
    stages = data.get("stages")
    if isinstance(stages, dict):
        for entry in stages.values():
            if isinstance(entry, dict):
                entry.pop("created", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(b"manifest\0" + text.encode("utf-8")).hexdigest()


def file_digest(root: Path, rel: str) -> str:
    """The hash recorded for ``root/rel``: sha256 of its bytes, or of the normalized manifest."""
    path = root / rel
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if rel == MANIFEST:
        return _manifest_digest(path)
    return sha256_file(path)


@dataclass(frozen=True)
class _Entry:
    digest: str
    size: int
    mtime_ns: int


def snapshot(root: Path) -> dict[str, _Entry]:
    """Every file under ``root`` (relative POSIX path → digest, size, mtime); empty if absent."""
    out: dict[str, _Entry] = {}
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            out[rel] = _Entry(file_digest(root, rel), st.st_size, st.st_mtime_ns)
    return out


def _code_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d not in _SKIP_DIRS and not d.endswith(".egg-info")
        )
        for name in sorted(filenames):
            if name in CODE_NAMES or Path(name).suffix in CODE_SUFFIXES:
                files.append(Path(dirpath) / name)
    return files


def code_digest(path: Path) -> str:
    """sha256 over the relative paths and bytes of the code files under ``path``."""
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    for f in _code_files(path):
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        data = f.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@cache
def tool_version(tool: str) -> str:
    """First line of ``tool --version`` (``"missing"`` when it cannot be run)."""
    try:
        r = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "missing"
    lines = (r.stdout or r.stderr).splitlines()
    return lines[0].strip() if lines else f"exit {r.returncode}"


def key_parts(stage: Stage, prev: str) -> dict[str, Any]:
    """What the key of ``stage`` is made of, each part as a digest or a short text."""
    return {
        "stamp_version": STAMP_VERSION,
        "stage": stage.name,
        "argv": list(stage.argv),
        "prev": prev,
        "python": sys.version,
        **{f"input {p}": (sha256_file(p) if p.is_file() else "missing") for p in stage.inputs},
        **{f"code {p}": code_digest(p) for p in stage.sources},
        **{f"tool {t}": tool_version(t) for t in stage.tools},
    }


def _digest(parts: Mapping[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stage_key(stage: Stage, prev: str) -> str:
    """The cache key of ``stage`` given ``prev``, the link of the stage before it."""
    return _digest(key_parts(stage, prev))


# --------------------------------------------------------------------------- stamps


def _stamp_path(stamp_dir: Path, stage: str) -> Path:
    return stamp_dir / f"{stage}.json"


def _read_stamp(stamp_dir: Path, stage: str) -> dict[str, Any] | None:
    path = _stamp_path(stamp_dir, stage)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("version") != STAMP_VERSION
        or not isinstance(data.get("key"), str)
        or not isinstance(data.get("outputs"), dict)
    ):
        return None
    return data


def _write_stamp(stamp_dir: Path, stage: str, data: dict[str, Any]) -> None:
    stamp_dir.mkdir(parents=True, exist_ok=True)
    path = _stamp_path(stamp_dir, stage)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _link(stamp: Mapping[str, Any] | None, stage: str) -> str:
    """What the next stage's key sees of this one: its key and its recorded outputs."""
    if stamp is None:
        return f"missing:{stage}"
    text = json.dumps([stamp["key"], stamp["outputs"]], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamped_link(stamp_dir: Path, stage: str) -> str:
    """The link of ``stage`` as its stamp records it (a marker when there is none)."""
    return _link(_read_stamp(stamp_dir, stage), stage)


def _stale_output(stage: Stage, owned: Mapping[str, str | None]) -> str | None:
    """The first recorded output that no longer has its recorded hash, or None."""
    for rel, digest in sorted(owned.items()):
        if digest is None:  # the stage removed it; a later run may legitimately add it back
            continue
        path = stage.watch / rel
        if not (path.is_file() or path.is_symlink()):
            return f"{rel} is missing"
        if file_digest(stage.watch, rel) != digest:
            return f"{rel} changed"
    return None


# --------------------------------------------------------------------------- running


def _print_log_tail(log: Path, out: Callable[[str], None]) -> None:
    try:
        text = log.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return
    # what a terminal would show: of a line redrawn with carriage returns (progress bars),
    # the last drawing
    lines = [raw.rstrip("\r").rsplit("\r", 1)[-1] for raw in text.rstrip("\n").split("\n")]
    if len(lines) > LOG_TAIL_LINES:
        out(f"... (last {LOG_TAIL_LINES} of {len(lines)} lines; full output in {log})")
        lines = lines[-LOG_TAIL_LINES:]
    for line in lines:
        out(line)


PROGRESS_SECONDS = 0.5


def last_status(log: Path, tail: int = 4096) -> str:
    """The stage's latest progress text: the last non-empty line or ``\\r`` segment."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for part in reversed(re.split(r"[\r\n]", text)):
        if part.strip():
            return part.strip()
    return ""


def launcher(niceness: int = 0) -> list[str]:
    """What a stage's argv runs behind, each exec'ing the next before the stage starts.

    ``setpriv --pdeathsig TERM`` (util-linux) asks the kernel to send the stage SIGTERM
    when the pipeline that started it dies, so a pipeline killed by a job runner's
    timeout does not leave its stage running on (and writing into the bundle); a
    pipeline that is only interrupted (SIGINT) waits for its stage as before. Where
    ``setpriv`` is missing, stages run without it. ``nice -n`` lowers the stage's
    CPU priority when ``niceness`` > 0.
    """
    out = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
    return out + (["nice", "-n", str(niceness)] if niceness else [])


def _execute(
    stage: Stage,
    *,
    task: str,
    log: Path,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    verbose: bool,
    progress: Callable[[str], None] | None = None,
    niceness: int = 0,
) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    argv = [*launcher(niceness), *stage.argv]
    try:
        if verbose:
            proc = subprocess.run(argv, cwd=cwd, env=env, check=False)
        else:
            with open(log, "wb") as f:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                )
                try:
                    while proc.poll() is None:
                        if progress is not None:
                            progress(last_status(log))
                        try:
                            proc.wait(timeout=PROGRESS_SECONDS)
                        except subprocess.TimeoutExpired:
                            pass
                except BaseException:
                    proc.wait()  # the stage got the same SIGINT; let it finish its cleanup
                    raise
    except OSError as e:
        log.write_text(f"cannot start {stage.argv[0]!r}: {e}\n", encoding="utf-8")
        raise StageFailed(task, stage.name, 127, log) from None
    except KeyboardInterrupt:  # the stage got the same SIGINT; report it as that stage's failure
        raise StageFailed(task, stage.name, 130, None if verbose else log) from None
    if proc.returncode != 0:
        raise StageFailed(task, stage.name, proc.returncode, None if verbose else log)


def _outputs(
    before: Mapping[str, _Entry],
    after: Mapping[str, _Entry],
    previous: Mapping[str, str | None],
) -> dict[str, str | None]:
    """Files the stage created or changed (digest) or removed (None).

    Files the stage's previous stamp recorded stay its outputs, even when this run
    left them untouched (an export that skips unchanged files, say).
    """
    out: dict[str, str | None] = {}
    for rel, entry in after.items():
        if before.get(rel) != entry:
            out[rel] = entry.digest
    for rel in before:
        if rel not in after:
            out[rel] = None
    for rel, digest in previous.items():
        if rel in out:
            continue
        if rel in after:
            out[rel] = after[rel].digest
        elif digest is None:
            out[rel] = None
    return dict(sorted(out.items()))


def run_chain(
    stages: Sequence[Stage],
    *,
    task: str,
    stamp_dir: Path,
    prev: str = "",
    force: bool = False,
    only: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    verbose: bool = False,
    out: Callable[[str], None] = print,
    started: Callable[[str], None] | None = None,
    progress: Callable[[str, str], None] | None = None,
    niceness: int = 0,
) -> tuple[str, list[Outcome]]:
    """Run ``stages`` in order for ``task``; returns the last stage's link and the outcomes.

    ``prev`` is the link of whatever the first stage depends on. ``force`` runs every
    stage; ``only`` runs that one stage, ignoring the cache (its stamp is written, the
    others are neither run nor checked). Raises :class:`StageFailed` when a stage
    fails, after printing its output. Each stage prints one line through ``out``;
    ``started`` (if given) is called with that line's beginning before a stage runs,
    and ``progress`` every half second while it runs with that beginning and the
    stage's latest output line (its progress bar). ``niceness`` > 0 runs the stages at
    that lower CPU priority (what they compute is the same).
    """
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"task {task}: stage names repeat: {names}")
    if only is not None and only not in names:
        raise ValueError(f"task {task}: no stage {only!r} (stages: {', '.join(names)})")
    stamps = {s.name: _read_stamp(stamp_dir, s.name) for s in stages}
    outcomes: list[Outcome] = []
    for i, stage in enumerate(stages):
        if only is not None and stage.name != only:
            prev = _link(stamps[stage.name], stage.name)
            continue
        parts = key_parts(stage, prev)
        key = _digest(parts)
        stamp = stamps[stage.name]
        head = f"[{task}] {stage.name} ..."
        if force:
            reason: str | None = "forced"
        elif only is not None:
            reason = "--only"
        else:
            reason = _why_run(stage, parts, stamp, [stamps[s.name] for s in stages[i + 1 :]])
        if reason is None:
            out(f"{head} skipped (cached)")
            outcomes.append(Outcome(stage.name, "cached", 0.0, "cached"))
            prev = _link(stamp, stage.name)
            continue

        _stamp_path(stamp_dir, stage.name).unlink(missing_ok=True)
        stamps[stage.name] = None
        before = snapshot(stage.watch)
        log = stamp_dir / f"{stage.name}.log"
        if verbose:
            out(f"{head} running ({reason}): {' '.join(stage.argv)}")
        elif started is not None:
            started(head)
        t0 = time.monotonic()
        try:
            tick = None if progress is None else (lambda text, h=head: progress(h, text))
            _execute(stage, task=task, log=log, cwd=cwd, env=env, verbose=verbose, progress=tick,
                     niceness=niceness)  # fmt: skip
        except StageFailed as e:
            out(f"{head} failed (exit {e.returncode})")
            if e.log is not None:
                _print_log_tail(e.log, out)
            raise
        seconds = time.monotonic() - t0
        previous = stamp["outputs"] if stamp is not None else {}
        new = {
            "version": STAMP_VERSION,
            "stage": stage.name,
            "key": key,
            "parts": parts,
            "argv": list(stage.argv),
            "watch": str(stage.watch),
            "seconds": round(seconds, 3),
            "outputs": _outputs(before, snapshot(stage.watch), previous),
        }
        _write_stamp(stamp_dir, stage.name, new)
        stamps[stage.name] = new
        out(f"{head} done in {seconds:.1f} s")
        outcomes.append(Outcome(stage.name, "ran", seconds, reason))
        prev = _link(new, stage.name)
    return prev, outcomes


def _part_name(part: str) -> str:
    """``code /repo/quantize`` -> ``code quantize``; ``prev`` -> ``upstream``."""
    kind, _, path = part.partition(" ")
    if path:
        return f"{kind} {Path(path).name}"
    return "upstream" if part == "prev" else part


def _why_run(
    stage: Stage,
    parts: Mapping[str, Any],
    stamp: Mapping[str, Any] | None,
    later: Sequence[Mapping[str, Any] | None],
) -> str | None:
    """Why ``stage`` must run (e.g. ``changed: code quantize``), or None when it is current."""
    if stamp is None:
        return "no stamp"
    if stamp["key"] != _digest(parts):
        old = stamp.get("parts") if isinstance(stamp.get("parts"), dict) else {}
        changed = sorted(k for k in {*parts, *old} if parts.get(k) != old.get(k))
        return "changed: " + ", ".join(_part_name(k) for k in changed)
    overwritten = set()
    for s in later:
        if s is not None:
            overwritten.update(s["outputs"])
    owned = {k: v for k, v in stamp["outputs"].items() if k not in overwritten}
    return _stale_output(stage, owned)
