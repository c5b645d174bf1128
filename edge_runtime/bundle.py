"""The bundle: one folder per model, described by ``manifest.json`` (schema v1).

Reading::

    b = Bundle.open("build/har")
    ref = b.load_npz("reference.npz")       # sha256 checked before loading
    tfl = b.path("step_int8.tflite")        # a verified path

Writing (one stage)::

    with stage_writer("build/har", "quantize", config=cfg) as w:
        w.write_bytes("step_int8.tflite", data)
        w.manifest["quantization"] = {...}
        w.versions["tensorflow"] = tf.__version__

A stage works in ``<bundle>.staging-<stage>`` next to the bundle (a copy of it,
verified first) and swaps the result in only when it finishes; an exception
leaves the previous bundle untouched. Every artifact is listed in
``manifest["artifacts"]`` with its sha256 and size. Times live only in the
manifest: nothing this module writes into an artifact carries a time.

The fields of the device input contract are sealed with one sha256 (the
manifest's ``integrity`` section, :mod:`edge_runtime.integrity`): every stage
writes it, :meth:`Bundle.open` refuses a manifest whose sealed fields changed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import contract, integrity

__all__ = [
    "MANIFEST",
    "MAX_ARRAY_BYTES",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "StageWriter",
    "load_schema",
    "npz_bytes",
    "read_npz",
    "sha256_file",
    "stage_writer",
    "validate_manifest",
]

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST = contract.MANIFEST

MAX_MANIFEST_BYTES = 16 * 2**20
MAX_JSON_BYTES = 64 * 2**20
MAX_ARRAY_BYTES = 512 * 2**20
MAX_NPZ_MEMBERS = 256

_RELPATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$")
_STAGE = re.compile(r"^[a-z][a-z0-9_-]*$")
_NPZ_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BundleError(Exception):
    """A bundle is missing, malformed, unsupported or does not match its manifest."""


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _check_relpath(name: str) -> str:
    if not isinstance(name, str) or not _RELPATH.match(name) or len(name) > 255:
        raise BundleError(
            f"invalid artifact name {name!r}: use a relative path with '/' separators, "
            "letters, digits and '_.+-', no component starting with '.'"
        )
    if name == MANIFEST:
        raise BundleError(f"{MANIFEST} is not an artifact")
    return name


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False, default=_json_default) + "\n"


# --------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def _schema_text() -> str:
    ref = resources.files("edge_runtime") / "schema" / f"manifest.v{SCHEMA_VERSION}.json"
    return ref.read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (a fresh copy)."""
    return json.loads(_schema_text())


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _json_type(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, int):
        return "integer"
    if isinstance(x, float):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, list):
        return "array"
    if isinstance(x, dict):
        return "object"
    return type(x).__name__


def _short(x: Any, limit: int = 60) -> str:
    if isinstance(x, dict):
        text = "{...}" if x else "{}"
    elif isinstance(x, list):
        text = f"[{len(x)} items]" if x else "[]"
    else:
        text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_path(parts: Any) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(p)):
            out += f"[{str(p)!r}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


_COUNTS = {
    "maxItems": ("at most", "items"),
    "minItems": ("at least", "items"),
    "maxLength": ("at most", "characters"),
    "minLength": ("at least", "characters"),
    "maxProperties": ("at most", "entries"),
}


def _describe(err: Any) -> list[str]:
    where = list(err.absolute_path)
    kind = err.validator
    want = err.validator_value
    inst = err.instance
    found = f"{_json_type(inst)} {_short(inst)}"
    if "propertyNames" in err.absolute_schema_path and kind != "propertyNames":
        rule = (
            err.schema.get("description") or f"a string matching {want}"
            if kind == "pattern"
            else f"{kind} {_short(want)}"
        )
        return [f"{_field_path(where)}: invalid key {inst!r}: expected {rule}"]
    if kind == "required":
        missing = [k for k in want if isinstance(inst, dict) and k not in inst]
        return [f"{_field_path([*where, k])}: required field is missing" for k in missing]
    if kind == "type":
        expected = " or ".join(want) if isinstance(want, list) else want
        return [f"{_field_path(where)}: expected {expected}, found {found}"]
    if kind == "const":
        return [f"{_field_path(where)}: expected {want!r}, found {found}"]
    if kind == "enum":
        return [f"{_field_path(where)}: expected one of {want}, found {found}"]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return [f"{_field_path(where)}: expected a value {op[kind]} {want}, found {found}"]
    if kind in _COUNTS and isinstance(inst, list | str | dict):
        bound, unit = _COUNTS[kind]
        return [f"{_field_path(where)}: expected {bound} {want} {unit}, found {len(inst)}"]
    if kind == "pattern":
        what = err.schema.get("description") or f"a string matching {want}"
        return [f"{_field_path(where)}: expected {what}, found {found}"]
    if kind == "propertyNames":
        return [f"{_field_path(where)}: invalid key: {err.message}"]
    if kind == "additionalProperties":
        return [f"{_field_path(where)}: {err.message}"]
    return [f"{_field_path(where)}: {err.message} (rule {kind}: {_short(want)})"]


def _leaves(errors: Any) -> Iterator[Any]:
    for e in errors:
        if e.context:
            yield from _leaves(e.context)
        else:
            yield e


def validate_manifest(manifest: Any, *, source: str = MANIFEST) -> None:
    """Check a manifest against the schema; raise :class:`BundleError` listing every problem.

    An unknown ``schema_version`` is refused before anything else is checked.
    """
    if not isinstance(manifest, dict):
        raise BundleError(f"{source}: expected a JSON object, found {_json_type(manifest)}")
    version = manifest.get("schema_version")
    if "schema_version" not in manifest:
        raise BundleError(f"{source}: schema_version: required field is missing")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(
            f"{source}: schema_version: expected integer, found {_json_type(version)} "
            f"{_short(version)}"
        )
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        raise BundleError(
            f"{source}: schema_version {version} is not supported by this tinygru-edge "
            f"(supports {supported})"
        )
    errors = sorted(
        _leaves(_validator().iter_errors(manifest)), key=lambda e: list(map(str, e.absolute_path))
    )
    problems = list(dict.fromkeys(p for e in errors for p in _describe(e)))
    problems += _consistency(manifest) if not problems else []
    if problems:
        shown = problems[:20]
        more = f"; ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BundleError(
            f"{source}: invalid manifest ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}): " + "; ".join(shown) + more
        )


# Products of sizes the schema bounds one by one; checked before anything is allocated.
# window x channels: one window of int16 counts, as the device under test holds it
# (firmware/dut/main.c) and a window API caller passes it: 128 KiB at most.
MAX_WINDOW_VALUES = 1 << 16


def _consistency(m: dict[str, Any]) -> list[str]:
    """Cross-field checks the schema cannot express: per-channel vectors agree in length,
    hop <= window, stride <= kernel, and products of sizes stay within their limits."""
    problems = []
    lengths: dict[str, int] = {}
    channels = m.get("dataset", {}).get("channels")
    if isinstance(channels, list):
        lengths["dataset.channels"] = len(channels)
    mc = (m.get("model") or {}).get("config") or {}
    if isinstance(mc.get("n_channels"), int):
        lengths["model.config.n_channels"] = mc["n_channels"]
    pre = m.get("preprocess", {})
    for key in ("mean", "std"):
        if isinstance(pre.get(key), list):
            lengths[f"preprocess.{key}"] = len(pre[key])
    iq = pre.get("input_quant", {})
    for key in ("multiplier", "bias"):
        if isinstance(iq.get(key), list):
            lengths[f"preprocess.input_quant.{key}"] = len(iq[key])
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        for k, n in lengths.items():
            if n != lengths[first]:
                problems.append(
                    f"{k}: expected {lengths[first]} entries (one per channel, as {first}), "
                    f"found {n}"
                )
    window, hop = pre.get("window"), pre.get("hop")
    if isinstance(window, int) and isinstance(hop, int) and hop > window:
        problems.append(f"preprocess.hop: expected a value <= window ({window}), found {hop}")
    kernel, stride = mc.get("front_end_kernel"), mc.get("front_end_stride")
    if isinstance(kernel, int) and isinstance(stride, int) and stride > kernel:
        problems.append(
            f"model.config.front_end_stride: expected a value <= front_end_kernel ({kernel}) "
            f"(a step sees every sample), found {stride}"
        )
    n_ch = max(lengths.values(), default=None)
    if isinstance(window, int) and n_ch is not None and window * n_ch > MAX_WINDOW_VALUES:
        problems.append(
            f"preprocess.window: window x channels = {window} x {n_ch} = {window * n_ch} "
            f"counts, more than the limit {MAX_WINDOW_VALUES}"
        )
    labels, n_out = m.get("labels"), mc.get("n_outputs")
    if m.get("task") == "classification" and isinstance(labels, list) and isinstance(n_out, int):
        if n_out != len(labels):
            problems.append(
                f"model.config.n_outputs: expected {len(labels)} (one per label), found {n_out}"
            )
    return problems


# --------------------------------------------------------------------------- reading


def _old_dir(root: Path) -> Path:
    return root.with_name(root.name + ".old")


def _check_not_half_swapped(root: Path) -> None:
    old = _old_dir(root)
    if not root.exists() and old.is_dir():
        raise BundleError(
            f"{root}: bundle folder is missing but {old.name} exists next to it: a stage was "
            f"interrupted while swapping in its result. Rename {old} to {root} to get the "
            "previous bundle back, then rerun the stage."
        )


_WARNED: set[str] = set()


def _warn_unsealed(mpath: Path) -> None:
    """One line on stderr, once per manifest and process, for a manifest without a seal."""
    key = str(mpath.resolve())
    if key in _WARNED:
        return
    _WARNED.add(key)
    print(
        f"tinygru: warning: {mpath}: no integrity section (written before the device input "
        "contract was sealed): its fields are used unchecked; the next stage that writes "
        "this bundle seals them",
        file=sys.stderr,
        flush=True,
    )


class Bundle:
    """A bundle folder opened for reading; every artifact is hash-checked before use."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self._verified: set[str] = set()

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r})"

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Bundle:
        """Read and validate ``<path>/manifest.json``."""
        root = Path(path)
        _check_not_half_swapped(root)
        if not root.exists():
            raise BundleError(f"{root}: bundle folder not found")
        if not root.is_dir():
            raise BundleError(f"{root}: not a folder (a bundle is a folder with {MANIFEST})")
        mpath = root / MANIFEST
        if mpath.is_symlink():
            raise BundleError(
                f"{mpath}: is a symbolic link (refused): a bundle's {MANIFEST} must be a "
                "regular file inside the bundle folder"
            )
        if not mpath.is_file():
            raise BundleError(f"{root}: no {MANIFEST} in this folder (not a tinygru bundle?)")
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{mpath}: {size} bytes, more than the limit {MAX_MANIFEST_BYTES}")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{mpath}: not valid JSON: {e}") from None
        validate_manifest(manifest, source=str(mpath))
        why = integrity.problem(manifest)
        if why is not None:
            raise BundleError(f"{mpath}: {why}")
        if "integrity" not in manifest:
            _warn_unsealed(mpath)
        return cls(root, manifest)

    @property
    def sealed(self) -> bool:
        """Whether the manifest carries an ``integrity`` section (verified by :meth:`open`)."""
        return "integrity" in self.manifest

    @property
    def contract_sha256(self) -> str:
        """The sha256 of the device input contract: the verified ``integrity.sha256``, or,
        for a manifest written before the seal, the hash of its current values."""
        section = self.manifest.get("integrity")
        return str(section["sha256"]) if section else integrity.compute(self.manifest)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        return self.manifest["artifacts"]

    def has(self, name: str) -> bool:
        """Whether ``name`` is listed in the manifest (not whether it verifies)."""
        return name in self.manifest["artifacts"]

    def path(self, name: str) -> Path:
        """The path of artifact ``name`` after checking its size and sha256 (once per object)."""
        _check_relpath(name)
        p = self.root / name
        if name in self._verified:
            return p
        entry = self.manifest["artifacts"].get(name)
        if entry is None:
            raise BundleError(f"{self.root}: {name} is not listed in {MANIFEST}")
        if p.is_symlink() or not p.exists():
            what = "is a symbolic link (refused)" if p.is_symlink() else "is missing"
            raise BundleError(f"{self.root}: {name} {what} (listed in {MANIFEST})")
        if not p.is_file():
            raise BundleError(f"{self.root}: {name} is not a regular file")
        real_root = self.root.resolve()
        if real_root not in p.resolve().parents:
            raise BundleError(f"{self.root}: {name} resolves outside the bundle (refused)")
        found = sha256_file(p)
        size = p.stat().st_size
        if found != entry["sha256"] or size != entry["bytes"]:
            sizes = (
                f" (size: manifest {entry['bytes']} bytes, file {size} bytes)"
                if size != entry["bytes"]
                else ""
            )
            raise BundleError(
                f"{p}: sha256 mismatch: manifest expects {entry['sha256']}, "
                f"file has {found}{sizes}. The file is corrupted or was changed after the "
                "stage that wrote it; rerun that stage."
            )
        self._verified.add(name)
        return p

    def read_bytes(self, name: str) -> bytes:
        """The verified contents of artifact ``name``."""
        return self.path(name).read_bytes()

    def read_json(self, name: str) -> Any:
        """Parse a verified JSON artifact."""
        p = self.path(name)
        if p.stat().st_size > MAX_JSON_BYTES:
            raise BundleError(f"{p}: larger than the JSON limit of {MAX_JSON_BYTES} bytes")
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{p}: not valid JSON: {e}") from None

    def load_npz(self, name: str, *, max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
        """Load a verified ``.npz`` without pickles, refusing arrays larger than ``max_bytes``.

        Each member's header is read and its size checked before any data is
        allocated; the total is bounded by ``max_bytes`` as well.
        """
        return read_npz(self.path(name), max_bytes=max_bytes)

    def verify_all(self) -> None:
        """Check every listed artifact; raise one :class:`BundleError` listing all failures."""
        failures = []
        for name in sorted(self.manifest["artifacts"]):
            try:
                self.path(name)
            except BundleError as e:
                failures.append(str(e))
        if failures:
            raise BundleError(
                f"{self.root}: {len(failures)} artifact(s) failed verification:\n  - "
                + "\n  - ".join(failures)
            )


def read_npz(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_ARRAY_BYTES
) -> dict[str, np.ndarray]:
    """Load an ``.npz`` safely: no pickles, no object arrays, sizes checked before allocation.

    Does not check any hash; use :meth:`Bundle.load_npz` for bundle artifacts.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    total = 0
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_NPZ_MEMBERS:
                raise BundleError(f"{path}: {len(infos)} members, more than {MAX_NPZ_MEMBERS}")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise BundleError(f"{path}: unexpected member {info.filename!r}")
                key = info.filename[: -len(".npy")]
                with zf.open(info) as f:
                    version = fmt.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = fmt.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, fortran, dtype = fmt.read_array_header_2_0(f)
                    else:
                        raise BundleError(f"{path}: {key}: unsupported .npy version {version}")
                    if dtype.hasobject:
                        raise BundleError(f"{path}: {key}: object arrays are refused")
                    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    total += nbytes
                    if nbytes > max_bytes or total > max_bytes:
                        raise BundleError(
                            f"{path}: {key}: {shape} {dtype} needs {nbytes} bytes "
                            f"(total {total}), more than the limit of {max_bytes}"
                        )
                    if info.file_size < nbytes:
                        raise BundleError(f"{path}: {key}: truncated member")
                with zf.open(info) as f:
                    out[key] = fmt.read_array(f, allow_pickle=False)
    except zipfile.BadZipFile as e:
        raise BundleError(f"{path}: not a valid .npz file: {e}") from None
    except ValueError as e:
        raise BundleError(f"{path}: malformed .npz: {e}") from None
    return out


# --------------------------------------------------------------------------- writing


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A deterministic ``.npz``: members sorted by name, stored, fixed zip timestamps.

    The same arrays always give byte-identical output; ``np.load`` reads it.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            if not _NPZ_KEY.match(key):
                raise BundleError(f"npz: invalid array name {key!r}")
            arr = np.asarray(arrays[key])
            if arr.dtype.hasobject:
                raise BundleError(f"npz: {key}: object arrays cannot be stored")
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def _git_commit() -> str:
    def run(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    head = run("rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return "unknown"
    status = run("status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if status else "")


class StageWriter:
    """The staging folder of one stage; see :func:`stage_writer`."""

    def __init__(self, directory: Path, stage: str, manifest: dict[str, Any]) -> None:
        self.dir = directory
        self.stage = stage
        self.manifest = manifest
        self.versions: dict[str, str] = {
            "numpy": np.__version__,
            "python": platform.python_version(),
        }
        self._added: set[str] = set()

    def _target(self, name: str) -> Path:
        _check_relpath(name)
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write an artifact; returns its path in the staging folder."""
        p = self._target(name)
        p.write_bytes(data)
        self._added.add(name)
        return p

    def write_text(self, name: str, text: str) -> Path:
        """Write a UTF-8 text artifact (e.g. a Markdown report)."""
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a JSON artifact: sorted keys, indent 2, no NaN; numpy scalars and arrays allowed."""
        try:
            text = _dumps(obj)
        except (TypeError, ValueError) as e:
            raise BundleError(f"{name}: cannot write as JSON: {e}") from None
        return self.write_bytes(name, text.encode("utf-8"))

    def write_npz(self, name: str, **arrays: np.ndarray) -> Path:
        """Write a deterministic ``.npz`` (see :func:`npz_bytes`)."""
        return self.write_bytes(name, npz_bytes(arrays))

    def add_file(self, name: str) -> Path:
        """List a file the stage wrote into ``self.dir`` itself as an artifact."""
        _check_relpath(name)
        p = self.dir / name
        if p.is_symlink() or not p.is_file():
            raise BundleError(f"{p}: add_file needs a regular file written into the staging folder")
        self._added.add(name)
        return p

    def remove(self, name: str) -> None:
        """Delete an artifact (it leaves the manifest when the stage finishes)."""
        _check_relpath(name)
        p = self.dir / name
        if p.is_file() or p.is_symlink():
            p.unlink()
        self._added.discard(name)

    def _finish(self, config: dict[str, Any]) -> None:
        listed = set(self.manifest.get("artifacts", {})) | self._added
        artifacts = {}
        for name in sorted(listed):
            p = self.dir / name
            if p.is_symlink():
                raise BundleError(f"{p}: artifacts must be regular files, not links")
            if p.is_file():
                artifacts[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        self.manifest["artifacts"] = artifacts
        self.manifest.setdefault("stages", {})[self.stage] = {
            "created": _now(),
            "config": config,
            "versions": {k: str(v) for k, v in self.versions.items()},
            "git_commit": _git_commit(),
        }
        try:
            # Seal the values exactly as they will be read back (numpy scalars as JSON).
            self.manifest.pop("integrity", None)
            self.manifest["integrity"] = integrity.seal(json.loads(_dumps(self.manifest)))
            text = _dumps(self.manifest)
        except (TypeError, ValueError) as e:
            raise BundleError(
                f"{MANIFEST}: stage {self.stage!r} left unserializable data: {e}"
            ) from None
        validate_manifest(json.loads(text), source=f"{MANIFEST} (stage {self.stage})")
        mpath = self.dir / MANIFEST
        with open(mpath, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def stage_writer(
    bundle_dir: str | os.PathLike[str],
    stage: str,
    *,
    config: dict[str, Any],
    fresh: bool = False,
) -> Iterator[StageWriter]:
    """Run one stage against a bundle, atomically.

    Works in ``<bundle_dir>.staging-<stage>``: a copy of the existing bundle
    (verified first, so a corrupted artifact is never re-hashed as good), or an
    empty folder with a new manifest when ``fresh`` is true or no bundle exists.
    On normal exit every artifact is re-hashed into ``manifest["artifacts"]``
    (files that disappeared leave the list), ``stages[stage]`` records the
    time, ``config``, library versions (numpy, python and ``writer.versions``)
    and the git commit, the manifest is validated and written, and the staging
    folder replaces the bundle (old -> ``.old``, staging -> final, ``.old``
    removed). On an exception the staging folder is removed, the bundle is left
    untouched and the exception propagates.
    """
    if not isinstance(stage, str) or not _STAGE.match(stage):
        raise BundleError(f"invalid stage name {stage!r}: use lowercase letters, digits, '_', '-'")
    if not isinstance(config, dict):
        raise BundleError(f"stage {stage}: config must be a dict, got {type(config).__name__}")
    try:
        config = json.loads(_dumps(config))
    except (TypeError, ValueError) as e:
        raise BundleError(f"stage {stage}: config is not JSON-serializable: {e}") from None

    final = Path(bundle_dir)
    if not final.name:
        final = final.resolve()
    staging = final.with_name(f"{final.name}.staging-{stage}")
    old = _old_dir(final)
    _check_not_half_swapped(final)
    if staging.exists():
        shutil.rmtree(staging)

    if final.exists() and not final.is_dir():
        raise BundleError(f"{final}: exists and is not a folder")
    empty = final.is_dir() and not any(final.iterdir())
    if final.exists() and not empty and not (final / MANIFEST).is_file():
        raise BundleError(
            f"{final}: folder exists and is not a tinygru bundle (no {MANIFEST}); "
            "refusing to replace it"
        )
    if fresh or not final.exists() or empty:
        staging.mkdir(parents=True)
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": final.name,
            "created": _now(),
            "artifacts": {},
            "stages": {},
        }
    else:
        source = Bundle.open(final)
        source.verify_all()
        shutil.copytree(final, staging, symlinks=True)
        manifest = json.loads(json.dumps(source.manifest))

    writer = StageWriter(staging, stage, manifest)
    try:
        yield writer
        writer._finish(config)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, final, old)


def swap_in(staging: Path, final: Path, old: Path) -> None:
    """Replace folder ``final`` by ``staging`` with two renames (``final`` -> ``old``,
    ``staging`` -> ``final``), then drop ``old``. On a failure ``final`` is put back and
    ``staging`` removed; an interruption between the renames leaves ``old`` for
    :func:`_check_not_half_swapped` to name."""
    swapped_out = False
    try:
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.rename(final, old)
            swapped_out = True
        os.rename(staging, final)
        swapped_out = False
    except BaseException:
        if swapped_out and not final.exists():
            os.rename(old, final)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
