"""Compile C sources with the host C compiler into a cached shared library, load it with ctypes.

The library lands in ``<cache>/cbuild/<sha256>/lib.so``; the key covers the compiler
version, the flags, and the bytes of every source and every header beside them, so an
edit anywhere rebuilds and an unchanged tree reuses the cached file. The cache is
``$TINYGRU_CACHE``, else ``build/cache`` of the source checkout this module runs from,
else ``~/.cache/tinygru`` (an installed ``edge_runtime`` on a Pi).

Sanitizers: ``sanitize=True`` adds ``-fsanitize=address,undefined``. ASan must be the
first library in the process, which a ctypes load inside a running Python cannot be;
so a sanitized library is exercised in a child Python started with
``sanitizer_env()`` (LD_PRELOAD of gcc's libasan, leak checking off because CPython
itself does not free everything at exit, UBSan made fatal). Any report then fails the
child with a non-zero exit status and the report on stderr.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CC",
    "FLAGS",
    "CompilerMissing",
    "build_shared",
    "cache_root",
    "load",
    "sanitizer_env",
]

ROOT = Path(__file__).resolve().parent.parent
CC = os.environ.get("CC", "gcc")
FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-fPIC", "-shared")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")


class CompilerMissing(RuntimeError):
    """No host C compiler: the C engine cannot be built here."""


def cache_root() -> Path:
    """Where built libraries are kept (see the module doc)."""
    env = os.environ.get("TINYGRU_CACHE", "").strip()
    if env:
        return Path(env)
    if (ROOT / "Makefile").is_file() and (ROOT / "edge_runtime").is_dir():
        return ROOT / "build" / "cache"
    return Path.home() / ".cache" / "tinygru"


def _compiler_id() -> str:
    if shutil.which(CC) is None:
        raise CompilerMissing(
            f"no C compiler {CC!r} on PATH: the tinygru C engine is built on first use "
            "(Debian: apt-get install gcc; or set CC)"
        )
    return subprocess.run([CC, "--version"], capture_output=True, text=True, check=True).stdout


def _cache_key(sources: Sequence[Path], flags: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(_compiler_id().encode())
    h.update("\0".join(flags).encode())
    headers = sorted({p for s in sources for p in s.parent.glob("*.h")})
    for path in [*sources, *headers]:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def build_shared(
    sources: Sequence[Path | str],
    *,
    sanitize: bool = False,
    extra_flags: Sequence[str] = (),
    cache_dir: Path | None = None,
) -> Path:
    """Compile ``sources`` into one shared library (cached) and return its path.

    Raises :class:`CompilerMissing` without a compiler, and
    ``subprocess.CalledProcessError`` with the compiler's messages on any warning/error.
    """
    srcs = [Path(s).resolve() for s in sources]
    flags = [*FLAGS, *(SANITIZE_FLAGS if sanitize else ()), *extra_flags]
    includes = sorted({f"-I{s.parent}" for s in srcs})
    out_dir = (cache_dir or cache_root() / "cbuild") / _cache_key(srcs, flags)
    lib = out_dir / "lib.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, suffix=".so", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        cmd = [CC, *flags, *includes, *map(str, srcs), "-o", str(tmp_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
        tmp_path.replace(lib)  # atomic: a concurrent build never sees half a file
    finally:
        tmp_path.unlink(missing_ok=True)
    return lib


def load(lib: Path | str) -> ctypes.CDLL:
    """ctypes handle of a built library."""
    return ctypes.CDLL(str(lib))


def sanitizer_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that loads a ``sanitize=True`` library."""
    env = dict(os.environ if base is None else base)
    libasan = subprocess.run(
        [CC, "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env["LD_PRELOAD"] = libasan
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:exitcode=86"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=87"
    return env
