"""The Make and CMake snippets (firmware_export/snippets/) build a host program that
links the exported engine, and re-run the export exactly when the bundle's step model
changes: after `python -m quantize int8` with other calibration, the next build
regenerates the C files; a build with nothing changed regenerates nothing. The program's
head output equals the host engine's on the same window (tolerance 0).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine import make_bundle

from edge_runtime.bundle import Bundle
from firmware_export import host
from firmware_export.export import prepare

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = ROOT / "firmware_export" / "snippets"
PREFIX = "bm"
CFLAGS = "-std=c99 -O2 -Wall -Wextra -Wconversion -Werror"

pytestmark = pytest.mark.slow

MAIN_C = """#include <stdio.h>

#include "bm_config.h"
#include "bm_model.h"
#include "window.h"

static int8_t state[BM_STATE_BYTES];
static int8_t scratch[BM_SCRATCH_BYTES];

int main(void)
{
    tg_stream s;
    int8_t y[BM_N_OUTPUTS];
    if (tg_stream_init(&s, &bm_model, state, BM_STATE_BYTES, scratch, BM_SCRATCH_BYTES) != TG_OK) {
        return 1;
    }
    if (tg_window(&s, &window[0][0], WINDOW_SAMPLES, y) != TG_OUTPUT_READY) {
        return 2;
    }
    for (int i = 0; i < BM_N_OUTPUTS; ++i) {
        printf("%d\\n", y[i]);
    }
    return 0;
}
"""

MAKEFILE = """TINYGRU_BUNDLE := bundle
TINYGRU_PREFIX := bm
TINYGRU_OUT := gen
TINYGRU_PYTHON := {python}
include {snippets}/tinygru.mk

CFLAGS := {cflags} $(TINYGRU_CFLAGS)
OBJS := main.o $(TINYGRU_SRCS:.c=.o)

app: $(OBJS)
\t$(CC) -o $@ $(OBJS)

$(OBJS): $(TINYGRU_HDRS) window.h
"""

CMAKELISTS = """cmake_minimum_required(VERSION 3.20)
project(tinygru_host C)
set(CMAKE_C_STANDARD 99)
set(CMAKE_C_STANDARD_REQUIRED ON)
set(CMAKE_C_EXTENSIONS OFF)
include({snippets}/tinygru.cmake)
add_executable(app main.c)
target_compile_options(app PRIVATE {cflags})
tinygru_add_model(app bundle bm)
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The shared test bundle, and a copy re-quantized with other calibration."""
    root = tmp_path_factory.getbasetemp() / "engine_bundles"
    root.mkdir(exist_ok=True)
    bm = make_bundle("bm", str(root))
    v2 = tmp_path_factory.mktemp("requantized") / "bm"
    shutil.copytree(bm, v2)
    shutil.rmtree(v2 / "firmware", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "quantize", "int8", "--bundle", str(v2),
                    "--calibration-samples", "120", "--no-arena", "--in-process"],
                   cwd=ROOT, check=True, capture_output=True, text=True)  # fmt: skip
    assert (v2 / "step_int8.tflite").read_bytes() != (bm / "step_int8.tflite").read_bytes()
    return {"v1": bm, "v2": v2}


def new_project(path: Path, bundle: Path, build_file: str, text: str) -> Path:
    """A project folder with its own copy of the bundle, main.c and a reference window."""
    path.mkdir()
    shutil.copytree(bundle, path / "bundle", ignore=shutil.ignore_patterns("firmware"))
    window = Bundle.open(bundle).load_npz("reference.npz")["x_counts"][0]
    rows = ",\n".join("    {" + ", ".join(str(int(v)) for v in row) + "}" for row in window)
    (path / "window.h").write_text(
        f"#include <stdint.h>\n#define WINDOW_SAMPLES {len(window)}\n"
        f"static const int16_t window[{len(window)}][{window.shape[1]}] = {{\n{rows}\n}};\n"
    )
    (path / "main.c").write_text(MAIN_C)
    fill = {"python": sys.executable, "snippets": SNIPPETS.as_posix(), "cflags": CFLAGS}
    (path / build_file).write_text(text.format(**fill))
    return path


def replace_step_model(project: Path, new: Path) -> None:
    """What a new training run does to the bundle: a new step model and manifest."""
    for name in ("step_int8.tflite", "manifest.json"):
        shutil.copyfile(new / name, project / "bundle" / name)


def host_output(bundle: Path, gen: Path) -> list[int]:
    m = prepare(Bundle.open(bundle)).model
    eng = host.load(gen, PREFIX, m)
    return eng.window(Bundle.open(bundle).load_npz("reference.npz")["x_counts"][0]).tolist()


def run_app(app: Path) -> list[int]:
    out = subprocess.run([str(app)], check=True, capture_output=True, text=True).stdout
    return [int(v) for v in out.split()]


def sh(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not found")
def test_make_snippet_builds_and_reexports_when_the_step_model_changes(bundles, tmp_path) -> None:
    p = new_project(tmp_path / "make", bundles["v1"], "Makefile", MAKEFILE)
    log = sh(["make", "app"], p)
    assert "-m firmware_export" in log
    assert run_app(p / "app") == host_output(p / "bundle", p / "gen")
    v1_model = (p / "gen" / "bm_model.c").read_bytes()

    log = sh(["make", "app"], p)
    assert "firmware_export" not in log and "cc" not in log.split()
    assert subprocess.run(["make", "-q", "app"], cwd=p).returncode == 0

    replace_step_model(p, bundles["v2"])
    log = sh(["make", "app"], p)
    assert "-m firmware_export" in log
    assert (p / "gen" / "bm_model.c").read_bytes() != v1_model
    assert run_app(p / "app") == host_output(p / "bundle", p / "gen")
    assert "firmware_export" not in sh(["make", "app"], p)


@pytest.mark.skipif(
    shutil.which("cmake") is None,
    reason="cmake not found (Debian: add cmake to debian-packages.txt)",
)
def test_cmake_snippet_builds_and_reexports_when_the_step_model_changes(bundles, tmp_path) -> None:
    p = new_project(tmp_path / "cmake", bundles["v1"], "CMakeLists.txt", CMAKELISTS)
    sh(["cmake", "-S", ".", "-B", "build", f"-DTINYGRU_PYTHON={sys.executable}"], p)
    gen = p / "build" / "tinygru_bm"
    log = sh(["cmake", "--build", "build"], p)
    assert "tinygru: exporting" in log
    assert run_app(p / "build" / "app") == host_output(p / "bundle", gen)
    v1_model = (gen / "bm_model.c").read_bytes()
    stamp = (gen / "bm_model.c").stat().st_mtime_ns

    log = sh(["cmake", "--build", "build"], p)
    assert "tinygru: exporting" not in log and "Building C object" not in log
    assert (gen / "bm_model.c").stat().st_mtime_ns == stamp

    replace_step_model(p, bundles["v2"])
    log = sh(["cmake", "--build", "build"], p)
    assert "tinygru: exporting" in log
    assert (gen / "bm_model.c").read_bytes() != v1_model
    assert run_app(p / "build" / "app") == host_output(p / "bundle", gen)
    assert "tinygru: exporting" not in sh(["cmake", "--build", "build"], p)
