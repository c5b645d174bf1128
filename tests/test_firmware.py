"""The reference firmware: builds for every board of edge_runtime/boards.py at -Os and -O2
with a size report, from the board support its table row names and the files the export
lists; the device-protocol parser, compiled for the host, replays recorded transcripts
byte for byte and survives a bounded libFuzzer run; the DUT's SHA-256 gives FIPS 180-4's
digests and its model data hash equals the one the export records.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_runtime import boards

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
FUZZ = ROOT / "tests" / "fuzz"
HOST = ROOT / "tests" / "host"
BOARDS = tuple(boards.names())
OPTS = ("Os", "O2")
FUZZ_RUNS = 20000


def arm_tools_missing() -> str | None:
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "make"):
        if shutil.which(tool) is None:
            return f"{tool} not found (see debian-packages.txt)"
    return None


def build_dut(bundle: Path) -> dict:
    """Export the bundle and build every DUT ELF; returns reports/firmware.json."""
    from firmware_export.export import export

    export(bundle)
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"BUNDLE={bundle}", "-j2"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((bundle / "reports" / "firmware.json").read_text())


def dut_bundle(tmp_path_factory) -> Path:
    """The small BasicMotions bundle of test_engine (session cached) with its DUT firmware."""
    from test_engine import make_bundle

    root = tmp_path_factory.getbasetemp() / "engine_bundles"
    root.mkdir(exist_ok=True)
    bundle = make_bundle("bm", str(root))
    if not (bundle / "reports" / "firmware.json").is_file():
        build_dut(bundle)
    return bundle


# ---- the build ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(arm_tools_missing() is not None, reason=f"{arm_tools_missing()}")
def test_every_board_builds_with_a_size_report(tmp_path_factory) -> None:
    bundle = dut_bundle(tmp_path_factory)
    rep = build_dut(bundle)  # a second make only rewrites the report
    assert rep["model"] == "basic_motions" and len(rep["model_sha256"]) == 64
    builds = {(b["target"], b["opt"]): b for b in rep["builds"]}
    assert set(builds) == {(t, f"-{o}") for t in BOARDS for o in OPTS}
    for (target, opt), b in builds.items():
        elf = bundle / b["elf"]
        assert elf.is_file() and elf.parent.name == f"{target}{opt}"
        assert b["flash_bytes"] == b["text"] + b["data"]
        assert b["ram_bytes"] == b["data"] + b["bss"]
        assert 4_000 < b["flash_bytes"] < 64_000, b
        assert 0 < b["ram_bytes"] < 16_000, b
    for t in BOARDS:
        assert builds[(t, "-Os")]["text"] < builds[(t, "-O2")]["text"]


def _make(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make not found")
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(FIRMWARE), *args],
                          capture_output=True, text=True)  # fmt: skip


def test_makefile_names_a_missing_export(tmp_path: Path) -> None:
    (tmp_path / "firmware").mkdir()
    proc = _make(f"BUNDLE={tmp_path}")
    assert proc.returncode != 0
    assert "python -m firmware_export --bundle" in proc.stderr


def test_makefile_reads_the_board_table() -> None:
    """One table: the Makefile's boards, CPUs and support folders are boards.py's rows."""
    proc = _make("boards")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    want = [[f"{b.name}:{b.cpu}:{b.support}", f"board/{b.support}/board.mk"] for b in boards.BOARDS]
    assert rows == want


@pytest.mark.parametrize("support", sorted({b.support for b in boards.BOARDS}))
def test_each_board_support_folder_names_its_files(support: str) -> None:
    folder = FIRMWARE / "board" / support
    text = (folder / "board.mk").read_text()
    named = {}
    for key in ("BOARD_SRCS", "BOARD_CONSOLE_SRCS", "BOARD_LDSCRIPT"):
        m = re.search(rf"^{key} := (.+)$", text, re.M)
        assert m, f"{folder / 'board.mk'}: no {key} := ..."
        named[key] = m.group(1).split()
    for name in sum(named.values(), []):
        assert (folder / name).is_file(), f"{folder / 'board.mk'} names {name}, not in the folder"
    assert len(named["BOARD_LDSCRIPT"]) == 1 and (folder / "board.h").is_file()


def test_an_unknown_board_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    proc = _make("check-board", "BOARD=an386")  # the Makefile takes full names only
    assert proc.returncode != 0
    assert f"firmware: board an386: use one of {' '.join(BOARDS)}" in proc.stderr
    proc = _make("runner", f"FW={tmp_path}", f"BOARD={BOARDS[0]}", f"OUT={tmp_path}")
    assert proc.returncode != 0 and "firmware: no export in" in proc.stderr


def test_the_python_side_lists_no_board_file() -> None:
    """firmware_export asks firmware/Makefile to build; board files are named there only."""
    for path in sorted((ROOT / "firmware_export").glob("*.py")):
        text = path.read_text()
        for pattern in (r"board/", r"startup\.c", r"\.ld\b", r"uart_cmsdk", r"semihost\.c"):
            found = re.search(pattern, text)
            assert found is None, f"{path.relative_to(ROOT)} names {found.group()!r}"


@pytest.mark.slow
@pytest.mark.skipif(arm_tools_missing() is not None, reason=f"{arm_tools_missing()}")
def test_a_file_an_older_export_left_behind_is_not_built(tmp_path_factory, tmp_path) -> None:
    """A file no longer in files.json (a renamed engine source) would define its symbols twice."""
    bundle = dut_bundle(tmp_path_factory)
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("build"))
    stale = copy / "firmware" / "engine" / "tg_stale_copy.c"
    stale.write_text((copy / "firmware" / "engine" / "tg_stream.c").read_text())
    proc = _make(f"BUNDLE={copy}", f"TARGETS={BOARDS[0]}", "OPTS=Os")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (copy / "firmware" / "build" / f"{BOARDS[0]}-Os" / "dut.elf").is_file()


# ---- the parser on the host ---------------------------------------------------


@pytest.fixture(scope="module")
def host_parser(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no host C compiler")
    exe = tmp_path_factory.mktemp("parser") / "transcript"
    cmd = [cc, "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{FIRMWARE / 'dut'}",
           f"-I{FUZZ}", str(FIRMWARE / "dut" / "protocol.c"), str(FUZZ / "fake_port.c"),
           str(FUZZ / "transcript_main.c"), "-o", str(exe)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _unescape(s: str) -> bytes:
    return re.sub(rb"\\x([0-9a-fA-F]{2})|\\r|\\n",
                  lambda m: bytes([int(m.group(1), 16)]) if m.group(1)
                  else (b"\r" if m.group(0) == rb"\r" else b"\n"),
                  s.encode("ascii"))  # fmt: skip


def read_transcript(path: Path) -> tuple[dict[str, int], bytes, bytes]:
    """A transcript's header (``boot``, ``energy``: 0/1, ``pulses``: N or -1), bytes sent,
    reply bytes expected."""
    head, sent, want = {"boot": 0, "energy": 0, "pulses": -1}, b"", b""
    for line in path.read_text().splitlines():
        if line in ("# boot", "# energy"):
            head[line[2:]] = 1
        elif line.startswith("# pulses "):
            head["pulses"] = int(line.split()[2])
        elif line.startswith("> "):
            sent += _unescape(line[2:])
        elif line.startswith("< "):
            want += line[2:].encode("ascii") + b"\r\n"
        elif line.strip():
            raise ValueError(f"{path.name}: bad transcript line {line!r}")
    return head, sent, want


TRANSCRIPTS = sorted((FUZZ / "transcripts").glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_parser_replays_transcript_exactly(host_parser: Path, path: Path) -> None:
    head, sent, want = read_transcript(path)
    args = [str(host_parser)] + [k for k in ("boot", "energy") if head[k]]
    proc = subprocess.run(args, input=sent, capture_output=True, timeout=30)
    assert proc.returncode == 0
    got = proc.stdout
    if got != want:  # show the first differing line
        g, w = got.split(b"\r\n"), want.split(b"\r\n")
        i = next(
            (i for i, (a, b) in enumerate(zip(g, w, strict=False)) if a != b), min(len(g), len(w))
        )
        pytest.fail(f"{path.name}: line {i + 1}: got {g[i : i + 2]!r}, want {w[i : i + 2]!r}")
    assert sent.count(b"%") == want.count(b"m-ready\r\n") - head["boot"]
    if head["energy"]:
        assert proc.stderr.decode().strip() == f"pulses={head['pulses']}"


def test_transcripts_cover_every_command() -> None:
    sent = b"".join(read_transcript(p)[1] for p in TRANSCRIPTS)
    for cmd in (b"name%", b"profile%", b"info%", b"timestamp%", b"db load", b"infer",
                b"results%", b"results-raw%", b"ticks%", b"stream%", b"stream reset%"):  # fmt: skip
        assert cmd in sent, cmd


# ---- the DUT's hashing on the host ----------------------------------------------


def _host_cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no host C compiler")
    return cc


def build_hash_tool(out: Path, export: Path | None = None, prefix: str = "") -> Path:
    """tests/host/hash_main.c with the DUT's sha256.c and model_hash.c (and an export's
    model data, when given), strict warnings and sanitizers."""
    exe = out / ("hash_" + (prefix or "plain"))
    cmd = [_host_cc(), "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
           "-fno-sanitize-recover=all", f"-I{FIRMWARE / 'dut'}", str(FIRMWARE / "dut" / "sha256.c"),
           str(HOST / "hash_main.c"), "-o", str(exe)]  # fmt: skip
    if export is not None:
        cmd += [f"-I{export}", f"-I{export / 'engine'}", f"-DHASH_MODEL={prefix}_model",
                f'-DHASH_MODEL_H="{prefix}_model.h"', str(FIRMWARE / "dut" / "model_hash.c"),
                str(export / f"{prefix}_model.c")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


# FIPS 180-4 / NIST CSVS examples: SHA-256 of "abc", the empty message, the 448-bit and
# 896-bit two-block messages and one million "a" (the digests are the published ones).
FIPS_VECTORS = [
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    (b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
     b"lmnopqrsmnopqrstnopqrstu",
     "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]  # fmt: skip


@pytest.fixture(scope="module")
def hash_tool(tmp_path_factory) -> Path:
    return build_hash_tool(tmp_path_factory.mktemp("hash"))


@pytest.mark.parametrize("message, digest", FIPS_VECTORS, ids=["abc", "empty", "448", "896", "1M"])
def test_sha256_gives_the_fips_180_4_digests(hash_tool: Path, message: bytes, digest: str) -> None:
    proc = subprocess.run(
        [str(hash_tool), "sha256"], input=message, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == digest  # exact: a digest has no tolerance


def test_sha256_equals_hashlib_at_every_padding_length(hash_tool: Path) -> None:
    """Lengths 0..200 cross the one-block / two-block padding boundary (55/56 bytes mod 64)."""
    rng = random.Random(1)
    for n in range(201):
        msg = bytes(rng.randrange(256) for _ in range(n))
        proc = subprocess.run([str(hash_tool), "sha256"], input=msg, capture_output=True)
        assert proc.stdout.decode().strip() == hashlib.sha256(msg).hexdigest(), f"length {n}"


@pytest.mark.slow
@pytest.mark.parametrize("sparse", ["auto", "always"])
def test_model_data_hash_equals_the_exports(tmp_path_factory, tmp_path: Path, sparse: str) -> None:
    """The DUT's walk of tg_model_params (model_hash.c) hashes the bytes codegen wrote, in
    its order: files.json's model_data.sha256 and flash_bytes, dense and block-sparse."""
    from firmware_export.export import export

    bundle = dut_bundle(tmp_path_factory)
    out = tmp_path / "export"
    result = export(bundle, out, sparse=sparse)
    data = json.loads((out / "files.json").read_text())["model_data"]
    if sparse == "always":
        assert {w["stored"] for w in data["weights"].values()} == {"block_sparse"}
    exe = build_hash_tool(tmp_path, out, result["prefix"])
    proc = subprocess.run([str(exe), "model"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [data["sha256"], str(data["flash_bytes"])]


# ---- fuzzing --------------------------------------------------------------------


def _libfuzzer_missing() -> str | None:
    if shutil.which("clang") is None:
        return "clang not found (Debian: clang, libclang-rt-14-dev)"
    return None


@pytest.mark.skipif(_libfuzzer_missing() is not None, reason=f"{_libfuzzer_missing()}")
def test_parser_survives_fuzzing(tmp_path: Path) -> None:
    exe = tmp_path / "protocol_fuzz"
    cmd = ["clang", "-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
           f"-I{FIRMWARE / 'dut'}", f"-I{FUZZ}", str(FIRMWARE / "dut" / "protocol.c"),
           str(FUZZ / "fake_port.c"), str(FUZZ / "protocol_fuzz.c"), "-o", str(exe)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 and "libclang_rt.fuzzer" in proc.stderr + proc.stdout:
        pytest.skip("libFuzzer runtime missing (Debian: libclang-rt-14-dev)")
    assert proc.returncode == 0, proc.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run([str(exe), f"-runs={FUZZ_RUNS}", "-seed=1", "-max_len=2048",
                          f"-dict={FUZZ / 'protocol.dict'}", str(corpus), str(FUZZ / "seeds")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Done {FUZZ_RUNS} runs" in run.stderr or "Done" in run.stderr


def test_the_board_table_gives_each_linker_script_its_origins() -> None:
    """edge_runtime.boards holds each board's FLASH and RAM origins (the cycle estimate links
    test programs there); they equal the linker script's, board by board."""
    from edge_runtime.boards import BOARDS

    for b in BOARDS:
        (ld,) = (ROOT / "firmware" / "board" / b.support).glob("*.ld")
        origins = dict(re.findall(r"^\s*(FLASH|RAM)\s*\([a-z]+\)\s*:\s*ORIGIN\s*=\s*(0x[0-9A-Fa-f]+)",
                                  ld.read_text(), re.M))  # fmt: skip
        assert int(origins["FLASH"], 16) == b.flash_base, (b.name, ld.name)
        assert int(origins["RAM"], 16) == b.ram_base, (b.name, ld.name)
