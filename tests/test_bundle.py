"""The bundle: manifest schema, sha256 checks, atomic stage writes, deterministic npz."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import (
    MANIFEST,
    SCHEMA_VERSION,
    Bundle,
    BundleError,
    load_schema,
    npz_bytes,
    stage_writer,
    validate_manifest,
)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "X": rng.normal(size=(5, 8, 3)).astype(np.float32),
        "y": np.arange(5, dtype=np.int64),
        "counts": rng.integers(-32768, 32767, size=(4, 3), dtype=np.int16),
    }


@pytest.fixture
def bundle_dir(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    root = tmp_path / "har"
    with stage_writer(root, "train", config={"units": 32, "seed": 0}) as w:
        w.manifest["task"] = "classification"
        w.manifest["labels"] = ["walk", "sit", "stand"]
        w.manifest["preprocess"] = {"window": 8, "hop": 4, "mean": [0.0] * 3, "std": [1.0] * 3}
        w.write_npz("reference.npz", **arrays)
        w.write_bytes("model_float.keras", b"not really a keras file")
        w.write_json("reports/train.json", {"accuracy": np.float64(0.9), "n": np.int64(5)})
        (w.dir / "reports").mkdir(exist_ok=True)
        (w.dir / "reports" / "plot.png").write_bytes(b"\x89PNG fake")
        w.add_file("reports/plot.png")
        w.versions["tensorflow"] = "2.21.0"
    return root


def test_round_trip(bundle_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    b = Bundle.open(bundle_dir)
    assert b.root == bundle_dir
    m = b.manifest
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["name"] == "har" and m["task"] == "classification"
    assert set(m["artifacts"]) == {
        "reference.npz",
        "model_float.keras",
        "reports/train.json",
        "reports/plot.png",
    }
    for name, entry in m["artifacts"].items():
        data = (bundle_dir / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    stage = m["stages"]["train"]
    assert stage["config"] == {"units": 32, "seed": 0}
    assert stage["versions"]["numpy"] == np.__version__
    assert stage["versions"]["tensorflow"] == "2.21.0"
    assert "python" in stage["versions"]
    assert isinstance(stage["git_commit"], str) and stage["git_commit"]
    assert stage["created"] and m["created"]

    loaded = b.load_npz("reference.npz")
    assert set(loaded) == set(arrays)
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k], v)
    assert b.read_json("reports/train.json") == {"accuracy": 0.9, "n": 5}
    assert b.path("model_float.keras").read_bytes() == b"not really a keras file"
    b.verify_all()

    text = (bundle_dir / MANIFEST).read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert siblings(bundle_dir) == ["har"]


def test_second_stage_adds_and_removes(bundle_dir: Path) -> None:
    before = Bundle.open(bundle_dir).manifest
    with stage_writer(bundle_dir, "quantize", config={"sparsity": 0.75}) as w:
        assert (w.dir / "reference.npz").is_file()
        assert w.dir.name == "har.staging-quantize"
        w.write_bytes("step_int8.tflite", b"\x00" * 16)
        w.remove("model_float.keras")
        w.manifest["quantization"] = {"input": {"scale": 0.04, "zero_point": 3}}
    m = Bundle.open(bundle_dir).manifest
    assert "model_float.keras" not in m["artifacts"]
    assert not (bundle_dir / "model_float.keras").exists()
    assert m["artifacts"]["step_int8.tflite"]["bytes"] == 16
    assert m["artifacts"]["reference.npz"] == before["artifacts"]["reference.npz"]
    assert set(m["stages"]) == {"train", "quantize"}
    assert m["stages"]["train"] == before["stages"]["train"]
    assert m["created"] == before["created"]
    assert siblings(bundle_dir) == ["har"]


def test_fresh_replaces_bundle(bundle_dir: Path) -> None:
    with stage_writer(bundle_dir, "train", config={}, fresh=True) as w:
        assert list(w.dir.iterdir()) == []
        w.manifest["task"] = "forecast"
        w.write_bytes("a.bin", b"a")
    m = Bundle.open(bundle_dir).manifest
    assert set(m["artifacts"]) == {"a.bin"}
    assert set(m["stages"]) == {"train"}


def test_corrupted_artifact_names_file_and_hashes(bundle_dir: Path) -> None:
    p = bundle_dir / "reference.npz"
    expected = Bundle.open(bundle_dir).manifest["artifacts"]["reference.npz"]["sha256"]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    found = hashlib.sha256(bytes(data)).hexdigest()

    b = Bundle.open(bundle_dir)
    with pytest.raises(BundleError) as exc:
        b.load_npz("reference.npz")
    msg = str(exc.value)
    assert "reference.npz" in msg and expected in msg and found in msg
    with pytest.raises(BundleError, match="reference.npz"):
        b.verify_all()
    b.path("model_float.keras")  # the others still verify


def test_corruption_is_not_laundered_by_next_stage(bundle_dir: Path) -> None:
    p = bundle_dir / "model_float.keras"
    p.write_bytes(b"tampered")
    before = snapshot(bundle_dir)
    with pytest.raises(BundleError, match="model_float.keras"):
        with stage_writer(bundle_dir, "quantize", config={}):
            pass
    assert snapshot(bundle_dir) == before
    assert siblings(bundle_dir) == ["har"]


def test_unlisted_and_missing(bundle_dir: Path) -> None:
    (bundle_dir / "stray.bin").write_bytes(b"x")
    b = Bundle.open(bundle_dir)
    with pytest.raises(BundleError, match="stray.bin is not listed in manifest.json"):
        b.path("stray.bin")
    (bundle_dir / "model_float.keras").unlink()
    with pytest.raises(BundleError, match="model_float.keras is missing"):
        b.path("model_float.keras")
    with pytest.raises(BundleError, match="invalid artifact name"):
        b.path("../har/manifest.json")


def test_hash_checked_once_per_object(bundle_dir: Path) -> None:
    b = Bundle.open(bundle_dir)
    b.path("model_float.keras")
    (bundle_dir / "model_float.keras").write_bytes(b"changed later")
    b.path("model_float.keras")  # cached
    with pytest.raises(BundleError, match="sha256 mismatch"):
        Bundle.open(bundle_dir).path("model_float.keras")


def test_unknown_schema_version_refused(bundle_dir: Path) -> None:
    mpath = bundle_dir / MANIFEST
    m = json.loads(mpath.read_text())
    m["schema_version"] = 7
    mpath.write_text(json.dumps(m))
    with pytest.raises(BundleError) as exc:
        Bundle.open(bundle_dir)
    assert "manifest.json: schema_version 7 is not supported by this tinygru-edge (supports 1)" in (
        str(exc.value)
    )


def test_schema_error_names_field(bundle_dir: Path) -> None:
    m = Bundle.open(bundle_dir).manifest
    bad = json.loads(json.dumps(m))
    bad["preprocess"]["window"] = "128"
    bad["dataset"] = {"channels": [{"name": "acc_x", "unit": "g", "scale": -1.0}]}
    del bad["task"]
    with pytest.raises(BundleError) as exc:
        validate_manifest(bad)
    msg = str(exc.value)
    assert "preprocess.window: expected integer, found string '128'" in msg
    assert "dataset.channels[0].scale: expected a value > 0, found number -1.0" in msg
    assert "task: required field is missing" in msg

    bad = json.loads(json.dumps(m))
    bad["preprocess"]["std"] = [1.0, 1.0]
    with pytest.raises(BundleError, match=r"preprocess\.std: expected 3 entries"):
        validate_manifest(bad)

    bad = json.loads(json.dumps(m))
    bad["artifacts"]["../escape"] = {"sha256": "0" * 64, "bytes": 1}
    with pytest.raises(BundleError, match="artifacts: invalid key"):
        validate_manifest(bad)


def test_stage_that_fails_validation_leaves_bundle(bundle_dir: Path) -> None:
    before = snapshot(bundle_dir)
    with pytest.raises(BundleError, match="labels: expected array"):
        with stage_writer(bundle_dir, "quantize", config={}) as w:
            w.manifest["labels"] = "walk"
    assert snapshot(bundle_dir) == before
    assert siblings(bundle_dir) == ["har"]


def test_failing_stage_leaves_previous_bundle_byte_identical(bundle_dir: Path) -> None:
    before = snapshot(bundle_dir)
    with pytest.raises(RuntimeError, match="boom"):
        with stage_writer(bundle_dir, "quantize", config={"x": 1}) as w:
            w.write_bytes("step_int8.tflite", b"half-written")
            w.remove("reference.npz")
            w.manifest["task"] = "forecast"
            raise RuntimeError("boom")
    assert snapshot(bundle_dir) == before
    assert siblings(bundle_dir) == ["har"]

    with pytest.raises(KeyboardInterrupt):
        with stage_writer(bundle_dir, "quantize", config={}, fresh=True):
            raise KeyboardInterrupt
    assert snapshot(bundle_dir) == before
    assert siblings(bundle_dir) == ["har"]


def test_first_stage_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with stage_writer(tmp_path / "new", "train", config={}) as w:
            w.manifest["task"] = "classification"
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_missing_task_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="task: required field is missing"):
        with stage_writer(tmp_path / "new", "train", config={}):
            pass
    assert list(tmp_path.iterdir()) == []


def test_half_swapped_bundle_is_explained(bundle_dir: Path) -> None:
    bundle_dir.rename(bundle_dir.with_name("har.old"))
    with pytest.raises(BundleError, match=r"har\.old exists next to it"):
        Bundle.open(bundle_dir)
    with pytest.raises(BundleError, match=r"har\.old exists next to it"):
        with stage_writer(bundle_dir, "quantize", config={}):
            pass


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle folder not found"):
        Bundle.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path / "empty")
    (tmp_path / "empty" / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.open(tmp_path / "empty")


def test_npz_is_deterministic(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    first = npz_bytes(arrays)
    assert npz_bytes(dict(reversed(list(arrays.items())))) == first
    digests = []
    for i in range(2):
        with stage_writer(tmp_path / f"b{i}", "train", config={}) as w:
            w.manifest["task"] = "forecast"
            w.write_npz("reference.npz", **arrays)
        digests.append(Bundle.open(tmp_path / f"b{i}").manifest["artifacts"]["reference.npz"])
    assert digests[0] == digests[1]
    assert (tmp_path / "b0" / "reference.npz").read_bytes() == first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(io.BytesIO(first), allow_pickle=False) as loaded:
        for k, v in arrays.items():
            np.testing.assert_array_equal(loaded[k], v)


def test_npz_is_bounded_and_pickle_free(tmp_path: Path) -> None:
    with stage_writer(tmp_path / "b", "train", config={}) as w:
        w.manifest["task"] = "forecast"
        w.write_npz("big.npz", a=np.zeros(1000, dtype=np.float64))
        buf = io.BytesIO()
        np.savez(buf, o=np.array([{"a": 1}], dtype=object))
        w.write_bytes("pickled.npz", buf.getvalue())
        w.write_bytes("notzip.npz", b"hello")
    b = Bundle.open(tmp_path / "b")
    assert b.load_npz("big.npz")["a"].shape == (1000,)
    with pytest.raises(BundleError, match="more than the limit"):
        b.load_npz("big.npz", max_bytes=7999)
    with pytest.raises(BundleError, match="object arrays are refused"):
        b.load_npz("pickled.npz")
    with pytest.raises(BundleError, match="not a valid .npz"):
        b.load_npz("notzip.npz")


def test_writer_rejects_bad_names_and_data(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="invalid artifact name"):
        with stage_writer(tmp_path / "b", "train", config={}) as w:
            w.write_bytes("../outside.bin", b"x")
    with pytest.raises(BundleError, match="cannot write as JSON"):
        with stage_writer(tmp_path / "b", "train", config={}) as w:
            w.write_json("r.json", {"x": float("nan")})
    with pytest.raises(BundleError, match="invalid stage name"):
        with stage_writer(tmp_path / "b", "Train!", config={}):
            pass
    with pytest.raises(BundleError, match="config is not JSON-serializable"):
        with stage_writer(tmp_path / "b", "train", config={"f": object()}):
            pass
    assert list(tmp_path.iterdir()) == []


def test_git_commit_unknown_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with stage_writer(tmp_path / "b", "train", config={}) as w:
        w.manifest["task"] = "forecast"
    assert Bundle.open(tmp_path / "b").manifest["stages"]["train"]["git_commit"] == "unknown"


def test_schema_is_valid_json_schema() -> None:
    import jsonschema

    schema = load_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert set(schema["required"]) == {
        "schema_version",
        "name",
        "task",
        "created",
        "artifacts",
        "stages",
    }


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    for fresh in (False, True):
        with pytest.raises(BundleError, match="not a tinygru bundle"):
            with stage_writer(foreign, "train", config={}, fresh=fresh) as w:
                w.manifest["task"] = "forecast"
    assert (foreign / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
