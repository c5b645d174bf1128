"""The stage cache of ``python -m pipeline`` on cheap stages, and the real stage list."""

from __future__ import annotations

import dataclasses
import json
import re
import stat
import sys
from pathlib import Path

import pytest

from edge_runtime import boards
from pipeline.__main__ import main as pipeline_main
from pipeline.cache import Stage, StageFailed, file_digest, run_chain, tool_version
from pipeline.stages import ROOT, report_stage, task_stages

# One cheap stage: writes <name>.txt from its code file and the previous stage's output,
# rewrites a shared manifest.json with fresh `created` times (as every bundle stage
# does), and appends its name to runs.txt outside the bundle, so the tests count the
# processes that really ran.
STEP = r"""
import json, os, pathlib, sys, time
bundle, name, prev, code, runs = sys.argv[1:6]
with open(runs + ".nice", "a") as f:
    f.write(f"{os.nice(0)}\n")
b = pathlib.Path(bundle)
b.mkdir(exist_ok=True)
if pathlib.Path(code).read_text().startswith("fail"):
    print("progress 1\rprogress 2", file=sys.stderr)
    print(f"step {name}: failing on purpose", file=sys.stderr)
    sys.exit(3)
before = (b / f"{prev}.txt").read_text() if prev != "-" else ""
(b / f"{name}.txt").write_text(before + name + ":" + pathlib.Path(code).read_text() + "\n")
m = b / "manifest.json"
d = json.loads(m.read_text()) if m.exists() else {"stages": {}}
d["created"] = str(time.time_ns())
d["stages"][name] = {"created": str(time.time_ns()), "code": pathlib.Path(code).read_text()}
m.write_text(json.dumps(d, indent=1))
with open(runs, "a") as f:
    f.write(name + "\n")
"""

NAMES = ("a", "b", "c")


class Chain:
    """Three cheap stages a → b → c on tmp/bundle, each with its own code folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bundle = tmp / "bundle"
        self.stamps = tmp / "stamps" / "t"
        self.runs = tmp / "runs.txt"
        self.config = tmp / "config.toml"
        self.config.write_text("x = 1\n")
        for n in NAMES:
            (tmp / "src" / n).mkdir(parents=True)
            (tmp / "src" / n / "code.py").write_text(f"{n}1")
        self.lines: list[str] = []
        self.reasons: dict[str, str] = {}

    def stages(self) -> list[Stage]:
        out = []
        for i, n in enumerate(NAMES):
            prev = NAMES[i - 1] if i else "-"
            code = self.tmp / "src" / n / "code.py"
            argv = (
                sys.executable,
                "-c",
                STEP,
                str(self.bundle),
                n,
                prev,
                str(code),
                str(self.runs),
            )
            inputs = (self.config,) if n == "a" else ()
            out.append(Stage(n, argv, self.bundle, (self.tmp / "src" / n,), inputs))
        return out

    def run(self, **kw: object) -> dict[str, str]:
        """Runs the chain; returns stage -> "ran"/"cached" and checks runs.txt agrees."""
        before = self.ran()
        _, outcomes = run_chain(
            self.stages(), task="t", stamp_dir=self.stamps, out=self.lines.append, **kw
        )
        self.reasons = {o.stage: o.reason for o in outcomes}
        status = {o.stage: o.status for o in outcomes}
        ran_now = self.ran()[len(before) :]
        assert ran_now == [s for s, v in status.items() if v == "ran"]
        return status

    def ran(self) -> list[str]:
        return self.runs.read_text().split() if self.runs.exists() else []


ALL_RAN = {"a": "ran", "b": "ran", "c": "ran"}
ALL_CACHED = {"a": "cached", "b": "cached", "c": "cached"}


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(tmp_path)


def test_second_run_skips_every_stage(chain: Chain) -> None:
    assert chain.run() == ALL_RAN
    assert chain.run() == ALL_CACHED
    assert chain.lines[3:] == [f"[t] {n} ... skipped (cached)" for n in NAMES]
    for n, line in zip(NAMES, chain.lines[:3], strict=True):
        assert re.fullmatch(rf"\[t\] {n} \.\.\. done in \d+\.\d s", line), line
    # every stage rewrote manifest.json with new times: the last writer owns it
    stamps = {n: json.loads((chain.stamps / f"{n}.json").read_text()) for n in NAMES}
    assert all("manifest.json" in s["outputs"] for s in stamps.values())
    assert stamps["b"]["outputs"]["b.txt"] == file_digest(chain.bundle, "b.txt")
    assert not any(p.name.startswith(".") for p in chain.bundle.iterdir())


def test_code_change_reruns_that_stage_and_later(chain: Chain) -> None:
    chain.run()
    (chain.tmp / "src" / "b" / "code.py").write_text("b2")
    assert chain.run() == {"a": "cached", "b": "ran", "c": "ran"}
    assert chain.reasons == {"a": "cached", "b": "changed: code b", "c": "changed: upstream"}
    assert (chain.bundle / "c.txt").read_text() == "a:a1\nb:b2\nc:c1\n"
    assert chain.run() == ALL_CACHED
    # a new file in a source folder counts too; files that are not code do not
    (chain.tmp / "src" / "c" / "notes.txt").write_text("x")
    assert chain.run() == ALL_CACHED
    (chain.tmp / "src" / "c" / "helper.py").write_text("")
    assert chain.run() == {"a": "cached", "b": "cached", "c": "ran"}


def test_input_file_change_reruns_from_that_stage(chain: Chain) -> None:
    chain.run()
    chain.config.write_text("x = 2\n")
    assert chain.run() == ALL_RAN


def test_changed_or_missing_output_reruns_that_stage_and_later(chain: Chain) -> None:
    chain.run()
    (chain.bundle / "b.txt").write_text("edited")
    # b's key is unchanged; its outputs (b.txt, and manifest.json, which now holds c's
    # entry too) feed c's key, so c runs after it
    assert chain.run() == {"a": "cached", "b": "ran", "c": "ran"}
    assert chain.reasons["b"] == "b.txt changed"
    assert (chain.bundle / "b.txt").read_text() == "a:a1\nb:b1\n"
    assert chain.run() == ALL_CACHED
    (chain.bundle / "a.txt").unlink()
    assert chain.run() == ALL_RAN
    assert chain.reasons["a"] == "a.txt is missing"
    assert chain.run() == ALL_CACHED


def test_shared_file_is_checked_against_its_last_writer(chain: Chain) -> None:
    chain.run()
    m = chain.bundle / "manifest.json"
    data = json.loads(m.read_text())
    data["created"] = "another time"
    data["stages"]["a"]["created"] = "another time"
    m.write_text(json.dumps(data))
    assert chain.run() == ALL_CACHED  # times are not content
    data["stages"]["a"]["code"] = "edited"
    m.write_text(json.dumps(data))
    assert chain.run() == {"a": "cached", "b": "cached", "c": "ran"}


def test_manifest_digest_ignores_only_created_times(tmp_path: Path) -> None:
    m = tmp_path / "manifest.json"
    base = {"created": "t0", "name": "x", "stages": {"train": {"created": "t0", "config": {}}}}
    m.write_text(json.dumps(base))
    d0 = file_digest(tmp_path, "manifest.json")
    m.write_text(
        json.dumps({**base, "created": "t1", "stages": {"train": {"created": "t2", "config": {}}}})
    )
    assert file_digest(tmp_path, "manifest.json") == d0
    m.write_text(json.dumps({**base, "name": "y"}))
    assert file_digest(tmp_path, "manifest.json") != d0
    (tmp_path / "other.json").write_text(json.dumps(base))
    (tmp_path / "other2.json").write_text(json.dumps({**base, "created": "t1"}))
    assert file_digest(tmp_path, "other.json") != file_digest(tmp_path, "other2.json")


def test_failed_stage_leaves_no_stamp_and_names_itself(chain: Chain) -> None:
    chain.run()
    (chain.tmp / "src" / "b" / "code.py").write_text("fail")
    with pytest.raises(StageFailed) as e:
        chain.run()
    assert (e.value.task, e.value.stage, e.value.returncode) == ("t", "b", 3)
    assert str(e.value) == ("pipeline: stage 'b' of task 't' failed (exit 3); see the output above")
    assert "[t] b ... failed (exit 3)" in chain.lines
    assert "step b: failing on purpose" in chain.lines  # the stage's output is shown
    assert "progress 2" in chain.lines and "progress 1" not in chain.lines  # as a terminal shows
    assert not (chain.stamps / "b.json").exists()
    assert chain.ran() == ["a", "b", "c"]  # nothing ran again: a was cached, c never started
    (chain.tmp / "src" / "b" / "code.py").write_text("b1")
    assert chain.run() == {"a": "cached", "b": "ran", "c": "ran"}
    assert chain.run() == ALL_CACHED


def test_tasks_run_alongside_with_their_lines_held(tmp_path: Path) -> None:
    """Two tasks' chains at once (``make demo``): both complete, the second task's
    processes run at a lower priority (niceness 10 more), its lines come after the
    first's, never between them; a failure in the second is raised once the first is
    done, with its output shown."""
    from pipeline.__main__ import ALONGSIDE_NICENESS, _run_chains

    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    first, second = Chain(tmp_path / "one"), Chain(tmp_path / "two")
    lines: list[str] = []
    chains = [("one", first.stages(), ""), ("two", second.stages(), "")]
    links = _run_chains(chains, tmp_path / "stamps", alongside=True, out=lines.append)
    assert len(links) == 2 and all(links) and first.ran() == second.ran() == list(NAMES)
    nice = [[int(v) for v in Path(f"{c.runs}.nice").read_text().split()] for c in (first, second)]
    assert nice[1] == [min(19, v + ALONGSIDE_NICENESS) for v in nice[0]] and ALONGSIDE_NICENESS > 0
    tasks = [line.split("]")[0] for line in lines if line.endswith(" s")]
    assert tasks == ["[one"] * 3 + ["[two"] * 3, lines
    (second.tmp / "src" / "b" / "code.py").write_text("fail")
    lines.clear()
    with pytest.raises(StageFailed) as e:
        _run_chains(chains, tmp_path / "stamps", alongside=True, out=lines.append)
    assert (e.value.task, e.value.stage) == ("two", "b")
    assert lines[-1] == "step b: failing on purpose", lines  # the failing stage's output
    assert lines.index("[one] c ... skipped (cached)") < lines.index("[two] b ... failed (exit 3)")


# A pipeline process running one stage that prints its pid and sleeps.
PIPELINE = """
import sys
from pathlib import Path
from pipeline.cache import Stage, run_chain
tmp = Path(sys.argv[1])
code = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
stage = Stage("sleep", (sys.executable, "-c", code), tmp / "bundle")
run_chain([stage], task="t", stamp_dir=tmp / "stamps", verbose=True, out=lambda line: None)
"""


def test_a_killed_pipeline_takes_its_running_stage_with_it(tmp_path: Path) -> None:
    """SIGKILL to ``python -m pipeline`` ends the stage it was running (the stage gets
    SIGTERM from the kernel; before, it ran on, orphaned, and went on writing into its
    bundle). Checked by the stage's process state, polled for up to 60 s."""
    import os
    import signal
    import subprocess

    from pipeline.cache import launcher
    from tests.support import outlives

    assert launcher()[:3] == ["setpriv", "--pdeathsig", "TERM"]  # util-linux is on Debian
    script = tmp_path / "pipe.py"
    script.write_text(PIPELINE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pipe = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)  # fmt: skip
    try:
        stage = int(pipe.stdout.readline())
        assert outlives(stage, 0.5)
        pipe.send_signal(signal.SIGKILL)
        pipe.wait()
        assert not outlives(stage), f"stage {stage} outlived its killed pipeline"
    finally:
        pipe.kill()
        pipe.wait()


def test_stage_that_cannot_start_fails_with_its_name(chain: Chain) -> None:
    missing = chain.tmp / "no-such-program"
    stage = Stage("x", (str(missing),), chain.bundle)
    with pytest.raises(StageFailed) as e:
        run_chain([stage], task="t", stamp_dir=chain.stamps, out=chain.lines.append)
    assert (e.value.stage, e.value.returncode) == ("x", 127)
    assert any(str(missing) in line for line in chain.lines)
    assert not (chain.stamps / "x.json").exists()


def test_force_reruns_everything(chain: Chain) -> None:
    chain.run()
    assert chain.run(force=True) == ALL_RAN
    assert chain.run() == ALL_CACHED


def test_only_runs_one_stage_ignoring_the_cache(chain: Chain) -> None:
    chain.run()
    assert chain.run(only="b") == {"b": "ran"}
    assert chain.ran() == ["a", "b", "c", "b"]
    # b's stamp is current, so b is skipped; its new outputs feed c's key
    assert chain.run() == {"a": "cached", "b": "cached", "c": "ran"}
    assert chain.run() == ALL_CACHED
    with pytest.raises(ValueError, match="no stage 'z'"):
        chain.run(only="z")


def test_tool_version_enters_the_key(chain: Chain) -> None:
    tool = chain.tmp / "fake-cc"
    tool.write_text("#!/bin/sh\necho 'fake-cc 1.0'\necho second line\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    stages = chain.stages()
    with_tool = [*stages[:2], dataclasses.replace(stages[2], tools=(str(tool),))]
    tool_version.cache_clear()
    assert tool_version(str(tool)) == "fake-cc 1.0"
    run_chain(with_tool, task="t", stamp_dir=chain.stamps, out=chain.lines.append)
    _, same = run_chain(with_tool, task="t", stamp_dir=chain.stamps, out=chain.lines.append)
    assert [o.status for o in same] == ["cached"] * 3
    tool.write_text("#!/bin/sh\necho 'fake-cc 2.0'\n")
    tool_version.cache_clear()
    _, changed = run_chain(with_tool, task="t", stamp_dir=chain.stamps, out=chain.lines.append)
    assert [o.status for o in changed] == ["cached", "cached", "ran"]
    tool_version.cache_clear()


# --------------------------------------------------------------------------- real stages


def test_real_stage_lists(tmp_path: Path) -> None:
    py = sys.executable
    har = task_stages("har", build=tmp_path)
    assert [s.name for s in har] == [
        "train", "prune", "qat", "int8", "parity", "export", "engine", "firmware", "mcu", "check",
    ]  # fmt: skip
    b = str(tmp_path / "har")
    argv = {s.name: list(s.argv) for s in har}
    target = "configs/targets/cortex-m4-80mhz.toml"
    assert argv["prune"] == [py, "-m", "quantize", "prune", "--bundle", b, "--choose",
                             "--sweep", "0,0.5,0.75,0.9",
                             "--target", target]  # fmt: skip
    assert argv["export"][-2:] == ["--target", target] == argv["engine"][-2:]
    by_name = {s.name: s for s in har}
    assert all(ROOT / target in by_name[n].inputs for n in ("prune", "export", "engine"))
    every_board = [a for bd in boards.BOARDS for a in ("--target", bd.core)]
    assert argv["mcu"] == [py, "-m", "firmware_export", "mcu", "--bundle", b,
                           *every_board, "--report"]  # fmt: skip
    assert argv["firmware"][-1] == f"BUNDLE={tmp_path.resolve() / 'har'}"
    assert all(s.watch == tmp_path / "har" for s in har)
    assert ROOT / "requirements.txt" in har[0].inputs
    assert ROOT / "configs" / "har.toml" in har[0].inputs
    anomaly = task_stages("anomaly", build=tmp_path, data=tmp_path / "d.npz", sweep=None)
    assert "prune" not in [s.name for s in anomaly]
    # [qat] enabled = true in both configs: the qat stage right before int8, config an input
    assert [s.name for s in anomaly][1:3] == ["qat", "int8"]
    assert argv["qat"] == [py, "-m", "quantize", "qat", "--bundle", b,
                           "--config", "configs/har.toml"]  # fmt: skip
    assert ROOT / "configs" / "har.toml" in har[2].inputs
    assert anomaly[0].argv[-2:] == ("--data", str(tmp_path / "d.npz"))
    assert tmp_path / "d.npz" in anomaly[0].inputs
    no_sweep = list(task_stages("har", build=tmp_path, sweep=None)[1].argv)
    assert no_sweep[no_sweep.index("--sweep") + 1] == "0"  # no sweep: the dense model
    other = tmp_path / "m3.toml"
    cfg = tmp_path / "own.toml"
    cfg.write_text((ROOT / "configs" / "har.toml").read_text())  # read for its [qat] switch
    st = task_stages("har", build=tmp_path, target=other, config=cfg)
    assert st[1].argv[-2:] == ("--target", str(other)) and other in st[1].inputs
    assert st[0].argv[4] == str(cfg) and cfg in st[0].inputs
    rep = report_stage(["har", "anomaly"], build=tmp_path)
    assert list(rep.argv[1:]) == ["-m", "report", b, str(tmp_path / "anomaly"),
                                  "--out", str(tmp_path / "reports"), "--target", target]  # fmt: skip
    for s in [*har, *anomaly]:
        assert all(p.is_dir() for p in s.sources), s.name


def test_cli_refuses_bad_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pipeline_main(["demo", "--task", "anomaly", "--only", "prune"]) == 2
    assert "task anomaly has no prune stage" in capsys.readouterr().err
    missing = tmp_path / "nope.npz"
    assert pipeline_main(["demo", "--build", str(tmp_path), "--data", str(missing)]) == 2
    assert f"--data {missing}: no such file" in capsys.readouterr().err
    bad = tmp_path / "t.toml"
    bad.write_text("name = 'x'\nkind = 'mcu'\nboard = 'mps2-an386'\nclokc_hz = 1\n")
    assert pipeline_main(["demo", "--build", str(tmp_path), "--target", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "did you mean 'clock_hz'" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        pipeline_main(["demo", "--sweep", "0.5,1.5"])
    assert "expected comma-separated sparsities" in capsys.readouterr().err


# A stage that shows a progress bar (\r-separated) and then waits until the runner has
# passed that text on: the test does not depend on how fast the machine is.
PROGRESS_STEP = r"""
import pathlib, sys, time
seen = pathlib.Path(sys.argv[1])
sys.stdout.write("loading\repoch 1/2 [###   ] 50%\r")
sys.stdout.flush()
for _ in range(1200):  # up to 60 s for the runner's first look at the log
    if seen.exists():
        sys.exit(0)
    time.sleep(0.05)
sys.exit(5)
"""


def test_a_running_stage_reports_its_latest_progress_line(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    shown: list[tuple[str, str]] = []

    def progress(head: str, text: str) -> None:
        shown.append((head, text))
        if text == "epoch 1/2 [###   ] 50%":
            seen.touch()

    argv = (sys.executable, "-c", PROGRESS_STEP, str(seen))
    stage = Stage("slow", argv, tmp_path / "bundle", (), ())
    (tmp_path / "bundle").mkdir()
    run_chain([stage], task="t", stamp_dir=tmp_path / "stamps", out=lambda s: None,
              progress=progress)  # fmt: skip
    assert seen.exists(), f"progress never showed the stage's bar: {shown}"
    assert {h for h, _ in shown} == {"[t] slow ..."}


def test_last_status_is_the_last_non_empty_segment(tmp_path: Path) -> None:
    from pipeline.cache import last_status

    log = tmp_path / "x.log"
    assert last_status(log) == ""  # not written yet
    log.write_bytes(b"first line\n 10%\r 20%\r\n\n")
    assert last_status(log) == "20%"
    log.write_bytes(b"x" * 10_000 + b"\ndone\n")
    assert last_status(log) == "done"


def test_every_stage_is_named_like_its_command(tmp_path: Path) -> None:
    """A stage's name is the last word of its command (the make target for firmware), so
    `ONLY=<stage>`, the stamps, the README and the report name the same thing."""
    from pipeline.stages import task_stages

    for task in ("har", "anomaly"):
        for st in task_stages(task, build=tmp_path):
            words = [w for w in st.argv if not w.startswith("-") and "/" not in w and "=" not in w]
            assert st.name in words, (st.name, st.argv)


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [("quantize", "check", "parity"), ("firmware_export", "check", "engine"),
     ("firmware_export", "qemu", "mcu")],
)  # fmt: skip
def test_earlier_command_names_still_work(module: str, old: str, new: str) -> None:
    """Build scripts written against the earlier names keep working: same help text."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def help_of(cmd: str) -> str:
        r = subprocess.run([sys.executable, "-m", module, cmd, "--help"], capture_output=True,
                           text=True, cwd=root, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout.replace(f" {old}", " CMD").replace(f" {new}", " CMD")

    assert help_of(old) == help_of(new)
