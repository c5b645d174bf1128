"""The parity report (report/): the table builder's refusals and n/a cells, the report of
a small real bundle made by the stage commands of ``make demo``, and the page as a
headless Chromium renders it.

The bundle: BasicMotions trained for 2 epochs, pruned (block4, 50%, with a sweep),
converted, checked and exported with the real commands, then run on the emulated
Cortex-M4/M3 and through the edge runtime. Its accuracy does not matter here: the
report is checked for plumbing (every number is the one its stage wrote), for
refusing what is missing, and for how the page renders.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from report import collect
from report.__main__ import build, main
from report.collect import ReportError
from report.readme import BEGIN, END
from report.readme import update as readme_update
from tests.test_layers import imported_modules

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
# The reports the table reads, in the order the builder reads them.
TABLE_FILES = ("parity.json", "engine.json", "mcu_m4.json", "mcu_m3.json", "runtime.json")


def stage_commands(b: str, pruned: bool) -> list[tuple[str, list[str]]]:
    """``make demo``'s stage commands for one bundle (tiny settings where they exist)."""
    prune = [PY, "-m", "quantize", "prune", "--bundle", b, "--sparsity", "0.5",
             "--granularity", "block4", "--epochs", "2", "--sweep", "0,0.5"]  # fmt: skip
    return [
        ("train", [PY, "-m", "train", "--config", "CONFIG", "--out", b]),
        *([("prune", prune)] if pruned else []),
        ("int8", [PY, "-m", "quantize", "int8", "--bundle", b, "--calibration-samples", "300"]),
        ("parity", [PY, "-m", "quantize", "check", "--bundle", b, "--no-progress"]),
        ("export", [PY, "-m", "firmware_export", "--bundle", b]),
        ("engine", [PY, "-m", "firmware_export", "check", "--bundle", b]),
        ("mcu", [PY, "-m", "firmware_export", "qemu", "--bundle", b, "--target", "m4",
                 "--target", "m3", "--report"]),
        ("runtime", [PY, "-m", "edge_runtime", "check", "--bundle", b, "--json",
                     f"{b}/reports/runtime.json"]),
    ]  # fmt: skip


def run_stages(root: Path, config: str, edits: dict[str, str], pruned: bool) -> dict:
    """A tiny bundle after every stage command; ``missing`` names a stage command this
    checkout does not have (the reports of it and later stages are then absent)."""
    text = (ROOT / "configs" / config).read_text()
    for a, b in edits.items():
        assert a in text, (config, a)
        text = text.replace(a, b)
    cfg = root / config
    cfg.write_text(text)
    bundle = root / Path(config).stem
    missing = None
    for name, argv in stage_commands(str(bundle), pruned):
        argv = [str(cfg) if a == "CONFIG" else a for a in argv]
        r = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            if "unrecognized arguments" in r.stderr or "invalid choice" in r.stderr:
                missing = f"`{' '.join(argv[1:])}` ({r.stderr.strip().splitlines()[-1]})"
                break
            pytest.fail(
                f"stage {name} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
            )
    return {"bundle": bundle, "missing": missing}


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict:
    """BasicMotions, 2 epochs, pruned with a sweep: the classifier's rows and figures."""
    root = tmp_path_factory.mktemp("report_bm")
    return run_stages(root, "basic_motions.toml", {"epochs = 30": "epochs = 2"}, pruned=True)


@pytest.fixture(scope="module")
def staged_anomaly(tmp_path_factory) -> dict:
    """KDD-TSAD 135, GRU(8) for 1 epoch: the forecaster's columns and score trace."""
    root = tmp_path_factory.mktemp("report_anomaly")
    edits = {"epochs = 60": "epochs = 1", "gru_units = [32]": "gru_units = [8]"}
    return run_stages(root, "anomaly.toml", edits, pruned=False)


def complete(staged: dict) -> Path:
    if staged["missing"]:
        pytest.skip(f"this checkout has no stage command {staged['missing']}")
    return staged["bundle"]


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


# --------------------------------------------------------------------------- table builder


@pytest.mark.slow
@pytest.mark.parametrize("name", TABLE_FILES + ("train.json",))
def test_a_missing_report_is_refused_by_name(staged, tmp_path: Path, name: str) -> None:
    b = copy_bundle(staged["bundle"], tmp_path / "bm")
    earlier = TABLE_FILES[: TABLE_FILES.index(name)] if name in TABLE_FILES else TABLE_FILES
    absent = [f for f in earlier if not (b / "reports" / f).is_file()]
    if absent:
        pytest.skip(f"reports/{absent[0]} was not written ({staged['missing']})")
    (b / "reports" / name).unlink(missing_ok=True)
    with pytest.raises(ReportError) as e:
        collect.collect(b)
    msg = str(e.value)
    assert str(b) in msg and f"reports/{name} not found" in msg, msg
    if name in collect.PRODUCERS:
        assert collect.PRODUCERS[name].split(" BUNDLE")[0] in msg, msg


@pytest.mark.slow
def test_the_command_fails_with_one_line_naming_bundle_and_file(staged, tmp_path: Path) -> None:
    b = copy_bundle(staged["bundle"], tmp_path / "bm")
    (b / "reports" / "parity.json").unlink()
    r = subprocess.run([PY, "-m", "report", str(b), "--out", str(tmp_path / "out")],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.startswith(f"report: {b}: reports/parity.json not found"), r.stderr
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.slow
def test_a_missing_field_is_refused_by_name(staged, tmp_path: Path) -> None:
    b = copy_bundle(staged["bundle"], tmp_path / "bm")
    edit_json(b / "reports/parity.json", lambda d: d["backends"]["tflm"].pop("rmse"))
    with pytest.raises(ReportError, match=r"reports/parity.json: field backends.tflm.rmse missing"):
        collect.collect(b)


@pytest.mark.slow
def test_a_null_without_its_reason_is_refused(staged, tmp_path: Path) -> None:
    b = complete(staged)
    b = copy_bundle(b, tmp_path / "bm")

    def drop(d: dict) -> None:
        d["backend"]["ram_bytes"] = None
        d["backend"].pop("ram_bytes_note", None)

    edit_json(b / "reports/engine.json", drop)
    with pytest.raises(ReportError, match=r"engine.json: field ram_bytes: .*ram_bytes_note"):
        collect.collect(b)


@pytest.mark.slow
def test_not_applicable_cells_carry_a_footnote_and_nothing_else_is_empty(staged) -> None:
    b = staged["bundle"]
    parity = json.loads((b / "reports/parity.json").read_text())
    quant = json.loads((b / "reports/quantize.json").read_text())
    notes = collect.Notes()
    where = f"{b}: reports/parity.json"
    rows = {
        s.key: collect.build_row(s, parity, "classification", where, notes)
        for s in collect.row_specs(parity)
        if s.file == "parity.json"
    }
    assert set(rows) == {"float", "float_unpruned", "litert", "litert_xnnpack", "tflm"}
    text = {i + 1: t for i, t in enumerate(notes.texts)}
    for key in ("float", "float_unpruned"):
        r = rows[key]
        assert r["cells"]["ram_bytes"] is None and r["cells"]["latency"] is None
        assert text[r["notes"]["ram_bytes"]] == collect.NA_FLOAT_RAM
        assert text[r["notes"]["latency"]] == collect.NA_FLOAT_LATENCY
    for key in ("litert", "litert_xnnpack"):
        assert rows[key]["cells"]["ram_bytes"] is None
        assert text[rows[key]["notes"]["ram_bytes"]] == collect.NA_LITERT_RAM
    assert rows["tflm"]["cells"]["ram_bytes"] == quant["tflm_arena"]["bytes"]
    for key, r in rows.items():
        for col, v in r["cells"].items():
            assert v is not None or col in r["notes"], (key, col)
            want = parity["backends"][key].get(col)
            if col not in ("ram_bytes", "latency"):
                assert v == want, (key, col, v, want)
        if key not in ("float", "float_unpruned"):
            us = parity["timing"]["int8"]["us_per_step"][key]
            assert r["cells"]["latency"] == us and r["latency_unit"] == "us_per_step"


def test_a_forecaster_has_no_argmax_agreement_and_says_why() -> None:
    """build_row on a forecaster's TFLM entry: agreement is n/a with its footnote; a
    non-null agreement for a forecaster is refused (it would be a wrong key)."""
    entry = {"hit": True, "margin": 5.5, "point_auc": 0.98, "window_auc": 0.54,
             "threshold": 1.46, "false_alarms": 7, "detection_delay": 1, "argmax_agreement": None, "max_abs_err": 1.1, "rmse": 0.18, "l2r": 0.0025,
             "cosine": 0.99999, "model_bytes": 13792}  # fmt: skip
    doc = {"backends": {"tflm": entry}, "sizes": {"tflm_arena": {"bytes": 6176}},
           "timing": {"int8": {"us_per_step": {"tflm": 15.1}}}}  # fmt: skip
    spec = next(s for s in collect.ROWS if s.key == "tflm")
    notes = collect.Notes()
    row = collect.build_row(spec, doc, "forecast", "x: reports/parity.json", notes)
    assert row["cells"]["argmax_agreement"] is None
    assert notes.texts[row["notes"]["argmax_agreement"] - 1] == collect.NA_AGREEMENT
    assert [c.key for c in collect.columns("forecast")][:4] == [
        "hit",
        "margin",
        "point_auc",
        "window_auc",
    ]
    entry["argmax_agreement"] = 1.0
    with pytest.raises(ReportError, match="argmax_agreement: expected null for a forecaster"):
        collect.build_row(spec, doc, "forecast", "x: reports/parity.json", collect.Notes())


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def report(staged, staged_anomaly, tmp_path_factory) -> dict:
    b, a = complete(staged), complete(staged_anomaly)
    out = tmp_path_factory.mktemp("report_out")
    doc = build([str(b), str(a)], out)
    return {"bundle": b, "anomaly": a, "out": out, "doc": doc}


@pytest.mark.slow
def test_every_number_is_the_one_its_stage_wrote(report) -> None:
    b, doc = report["bundle"], report["doc"]
    task = doc["tasks"][0]
    rows = {r["key"]: r for r in task["rows"]}
    # pruned: the dense row is there; no qat stage ran, so no PTQ rows; a board's optional row only where its report is
    shown = [s.key for s in collect.ROWS if not s.optional or (b / "reports" / s.file).is_file()]
    assert list(rows) == [k for k in shown if k not in collect.QAT_ROWS] and {
        "mcu_m4",
        "mcu_m3",
    } <= set(rows)
    src = {f: json.loads((b / "reports" / f).read_text()) for f in TABLE_FILES}
    pairs = {"engine": "engine.json", "mcu_m4": "mcu_m4.json", "mcu_m3": "mcu_m3.json",
             "runtime": "runtime.json"}  # fmt: skip
    for key, f in pairs.items():
        entry = src[f]["backend"]
        for col in ("accuracy", "macro_f1", "argmax_agreement", "rmse", "cosine", "model_bytes"):
            assert rows[key]["cells"][col] == entry[col], (key, col)
    for key in ("mcu_m4", "mcu_m3"):
        assert rows[key]["cells"]["latency"] == src[f"{key}.json"]["instructions_per_step"]
        assert rows[key]["latency_unit"] == "instructions_per_step"
    assert rows["engine"]["cells"]["latency"] == src["engine.json"]["backend"]["us_per_step"]
    for r in task["rows"]:
        for col, v in r["cells"].items():
            assert v is not None or col in r["notes"], (r["key"], col)
    cls = task["classes"]
    assert cls["confusion"]["mcu_m4"] == src["mcu_m4.json"]["backend"]["confusion"]
    prune = json.loads((b / "reports/prune.json").read_text())
    assert [r["test"] for r in task["sweep"]["rows"]] == [r["test"] for r in prune["sweep"]]
    v = task["versioning"]
    m = json.loads((b / "manifest.json").read_text())
    assert v["dataset"]["sha256"] == m["dataset"]["sha256"]
    assert {a["name"]: a["sha256"] for a in v["artifacts"]} == {
        k: a["sha256"] for k, a in m["artifacts"].items()
    }
    assert all(a["on_disk"] == "ok" for a in v["artifacts"])


@pytest.mark.slow
def test_the_anomaly_rows_and_trace_are_the_stages_figures(report) -> None:
    """The int8 score trace (engine_outputs.npz → sensor units → |x_t − forecast|) gives
    TFLM's figures of parity.json exactly: the engine matches TFLM bit for bit and the
    score is the same formula (measured on build/anomaly: peak, margin, both AUCs and
    false alarms equal to the last digit), so the tolerance is 0."""
    from edge_runtime.anomaly import anomaly_report
    from edge_runtime.bundle import Bundle
    from report.figures import engine_scores

    a = report["anomaly"]
    task = report["doc"]["tasks"][1]
    assert task["task"] == "forecast" and not task["pruned"]
    rows = {r["key"]: r for r in task["rows"]}
    present = [s for s in collect.ROWS if not s.optional or (a / "reports" / s.file).is_file()]
    assert "float_unpruned" not in rows  # nor the PTQ rows: no qat stage ran
    assert len(rows) == len(present) - 1 - len(collect.QAT_ROWS)
    parity = json.loads((a / "reports/parity.json").read_text())
    for key in ("float", "litert", "litert_xnnpack", "tflm"):
        for col in ("hit", "margin", "point_auc", "window_auc", "max_abs_err", "cosine"):
            assert rows[key]["cells"][col] == parity["backends"][key][col], (key, col)
        assert rows[key]["cells"]["argmax_agreement"] is None
    b = Bundle.open(a)
    m = b.manifest
    scores = engine_scores(b)
    assert scores is not None
    labels = b.load_npz("reference.npz")["labels"] > 0
    zone = int(m["stages"]["train"]["config"]["data"].get("zone", 100))
    got = anomaly_report(scores, labels, zone=zone, threshold=m["thresholds"]["anomaly_score_int8"],
                         ignore_first=int(m["thresholds"].get("anomaly_warmup_samples", 0)))  # fmt: skip
    tflm = parity["backends"]["tflm"]
    for k in ("peak", "hit", "margin", "point_auc", "window_auc", "threshold", "false_alarms",
              "detection_delay"):  # fmt: skip
        assert got[k] == tflm[k], (k, got[k], tflm[k])
        assert rows["tflm"]["cells"][k if k != "peak" else "hit"] is not None
    assert [f["file"] for f in task["figures"]] == [f"{task['name']}_scores.png"]


@pytest.mark.slow
def test_the_same_bundles_give_the_same_bytes(report, tmp_path: Path) -> None:
    build([str(report["bundle"]), str(report["anomaly"])], tmp_path)
    names = sorted(p.name for p in report["out"].iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for n in names:
        assert (tmp_path / n).read_bytes() == (report["out"] / n).read_bytes(), n


@pytest.mark.slow
def test_the_report_never_loads_tensorflow(report, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom report.__main__ import main\n"
        f"assert main([{str(report['bundle'])!r}, '--out', {str(tmp_path)!r}]) == 0\n"
        "print('loaded:' + ','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    r = subprocess.run([PY, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "loaded:", r.stdout


def test_report_imports_no_model_framework_and_no_stage() -> None:
    forbidden = {"tensorflow", "keras", "tf_keras", "train", "quantize", "firmware_export"}
    for path in sorted((ROOT / "report").glob("*.py")):
        bad = imported_modules(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


# --------------------------------------------------------------------------- README table


def test_readme_table_is_replaced_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{BEGIN}\nold\n{END}\nafter\n")
    assert readme_update(readme, "| a |\n|---|") is True
    assert readme.read_text() == f"# x\n\nbefore\n{BEGIN}\n| a |\n|---|\n{END}\nafter\n"
    assert readme_update(readme, "| a |\n|---|") is False
    readme.write_text("# no markers\n")
    with pytest.raises(ReportError, match="expected one <!-- results:begin --> line"):
        readme_update(readme, "x")


@pytest.mark.slow
def test_make_readme_writes_the_report_rows(report, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nrun make demo && make readme\n{END}\n")
    src = report["out"] / "report.json"
    assert main(["readme", "--from", str(src), "--readme", str(readme)]) == 0
    body = readme.read_text().split(BEGIN)[1].split(END)[0]
    for t in report["doc"]["tasks"]:
        assert f"**{t['name']}**" in body
        for r in t["rows"]:
            assert f"| {r['title']} |" in body
    assert "cycles" not in body and "instructions" in body


# --------------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium")
# Screenshot of the top of the report (1280×2000, greyscale 0..255), pixel standard
# deviation measured here: blank page 0.0, a page with one line of text 4.7, reports:
# har + anomaly 46.8, the tiny BasicMotions bundle alone 48.9. The mark sits between.
MIN_SCREENSHOT_STD = 20.0


def chromium(args: list[str], user_dir: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (debian-packages.txt lists it)")
        pytest.skip("chromium is not installed (scripts/ensure-debian.sh installs it)")
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={user_dir}", *args]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


class Page(HTMLParser):
    """The parity tables' body rows (cell texts) and every <img> src of a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.imgs: list[str] = []
        self._parity = self._body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self._parity = a.get("class") == "parity"
        elif tag == "tbody" and self._parity:
            self._body = True
        elif tag == "tr" and self._body:
            self.rows.append([])
        elif tag in ("td", "th") and self._body:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._body = False
        elif tag == "table":
            self._parity = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk (CRC checked)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, "first chunk is not IHDR"
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(b"IHDR" + body) == crc, "IHDR CRC mismatch"
    w, h = struct.unpack(">II", body[:8])
    return w, h


@pytest.mark.slow
def test_the_page_renders_every_row_and_image(report, tmp_path: Path) -> None:
    from PIL import Image

    html = report["out"] / "report.html"
    dom = chromium(["--dump-dom", html.resolve().as_uri()], tmp_path / "profile").stdout
    page = Page()
    page.feed(dom)
    tasks = report["doc"]["tasks"]
    want = [(r["title"], 1 + len(t["columns"])) for t in tasks for r in t["rows"]]
    assert len(page.rows) == len(want) == 9 + 8  # pruned classifier + forecaster
    for row, (title, n_cols) in zip(page.rows, want, strict=True):
        assert row[0] == title
        assert len(row) == n_cols and all(c for c in row), row
    # confusion, per-class F1 and sweep of the classifier; the forecaster's score trace
    assert len(page.imgs) == sum(len(t["figures"]) for t in tasks) == 4
    prefix = "data:image/png;base64,"
    for src in page.imgs:
        assert src.startswith(prefix), src[:60]
        data = base64.b64decode(src[len(prefix) :], validate=True)
        w, h = png_size(data)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.size == (w, h) and w > 100 and h > 100
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,2000", html.resolve().as_uri()],
             tmp_path / "profile")  # fmt: skip
    with Image.open(shot) as im:
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    assert grey.shape == (2000, 1280)
    assert grey.std() > MIN_SCREENSHOT_STD, f"screenshot looks blank (std {grey.std():.1f})"
