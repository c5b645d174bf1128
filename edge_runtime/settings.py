"""Reading the project's TOML files strictly: one line per problem, naming file and field.

Used by every file a user writes (stage configs, target files): a file that is not
UTF-8 or not TOML, an unknown key (with the nearest valid key suggested), a value of
the wrong type or outside its range is a :class:`SettingsError` whose message names
the file, the ``[table].key`` and what was expected.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["SettingsError", "check_keys", "number", "read_toml", "text"]

MAX_TOML_BYTES = 1 << 20


class SettingsError(ValueError):
    """A settings file is missing, malformed or has a bad value; the message names it."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML file; refuses a missing, oversized, non-UTF-8 or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"{p}: file not found")
    data = p.read_bytes()
    if len(data) > MAX_TOML_BYTES:
        raise SettingsError(f"{p}: {len(data)} bytes, more than the limit {MAX_TOML_BYTES}")
    try:
        text_ = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SettingsError(f"{p}: not UTF-8 text (byte {e.start}: {data[e.start]:#04x})") from None
    try:
        return tomllib.loads(text_)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{p}: not valid TOML: {e}") from None


def check_keys(table: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse keys of ``table`` not in ``allowed``, suggesting the nearest valid key."""
    allowed = list(allowed)
    for key in table:
        if key in allowed:
            continue
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else f"; expected one of {sorted(allowed)}"
        raise SettingsError(f"{where}: unknown key {key!r}{hint}")


def number(
    table: dict[str, Any],
    key: str,
    where: str,
    *,
    kind: type = float,
    lo: float | None = None,
    hi: float | None = None,
    default: Any = None,
) -> Any:
    """``table[key]`` as an int or a finite float within ``[lo, hi]``; ``default`` when
    absent (None: required)."""
    if key not in table:
        if default is None:
            raise SettingsError(f"{where}: {key}: required field is missing")
        return default
    v = table[key]
    ok = isinstance(v, int) and not isinstance(v, bool)
    if kind is float:
        ok = ok or isinstance(v, float)
    if not ok or (isinstance(v, float) and not math.isfinite(v)):
        what = "an integer" if kind is int else "a finite number"
        raise SettingsError(f"{where}: {key}: expected {what}, found {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise SettingsError(f"{where}: {key}: expected a value in [{lo}, {hi}], found {v!r}")
    return kind(v)


def text(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    """``table[key]`` as a non-empty string; ``default`` when absent (None: required)."""
    if key not in table:
        if default is None:
            raise SettingsError(f"{where}: {key}: required field is missing")
        return default
    v = table[key]
    if not isinstance(v, str) or not v.strip():
        raise SettingsError(f"{where}: {key}: expected a non-empty string, found {v!r}")
    return v
