"""Several workers on one study in a real PostgreSQL 15 server (Debian's ``postgresql``).

The server is this test's own (:func:`search.pgserver.temporary`): ``initdb``
and ``pg_ctl`` from ``/usr/lib/postgresql/15/bin`` (run through ``runuser -u
postgres --`` when the tests run as root, which PostgreSQL refuses to run as) in
a temporary folder owned by that user, listening on 127.0.0.1 on a free port,
stopped when the module's tests end. The package's own cluster is not used.

Two ``python -m search worker`` processes share one study of 4 trials, every
trial the same tiny shape (BasicMotions, GRU(4), one epoch): one worker is
killed with SIGKILL in the middle of a trial once both have finished one. With
a heartbeat every second and 3 s of grace, the surviving worker marks the
killed trial failed, runs its queued copy, and the study completes with exactly
4 finished trials, each run by one worker, and the failed one retried once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.test_search import BM, write_target

ROOT = Path(__file__).resolve().parents[1]
ONE_SHAPE = """\
windows = [50]
filters = [0]
layers = [1]
units = [4]
sparsities = [0.0]
learning_rate = [0.005, 0.02]
"""
N_TRIALS = 4


@pytest.fixture(scope="module")
def postgres():
    """URL of a fresh PostgreSQL server with an empty database ``search``."""
    from search.pgserver import temporary

    with temporary() as url:
        yield url


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "search", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    return env


@pytest.mark.slow
def test_two_workers_one_killed_every_trial_once(postgres, tmp_path) -> None:
    (tmp_path / "space.toml").write_text(ONE_SHAPE)
    target = write_target(tmp_path / "tiny.toml", 262144)
    build = tmp_path / "build"
    common = ["--storage", postgres, "--build", str(build), "--heartbeat", "1", "--grace", "3",
              "--threads", "1"]  # fmt: skip
    r = subprocess.run(
        _cli("create", "--config", str(BM), "--target", str(target), "--trials", str(N_TRIALS),
             "--study", "pg", "--epochs", "1", "--patience", "1", "--calibration-samples", "100",
             "--space", str(tmp_path / "space.toml"), *common),
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr

    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]  # noqa: SIM115
    procs = [subprocess.Popen(_cli("worker", "--study", "pg", *common), cwd=ROOT, env=_env(),
                              stdout=f, stderr=subprocess.STDOUT) for f in logs]  # fmt: skip
    storage = optuna.storages.RDBStorage("postgresql+psycopg://" + postgres.split("://", 1)[1])
    study = optuna.load_study(study_name="pg", storage=storage)
    victim, killed = procs[0], None
    try:
        deadline = time.monotonic() + 600
        while killed is None and time.monotonic() < deadline:
            trials = study.get_trials(deepcopy=False)
            mine = [t for t in trials if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            others = [t for t in trials if t.state == TrialState.COMPLETE and t not in mine]
            running = [t for t in mine if t.state == TrialState.RUNNING]
            if others and any(t.state == TrialState.COMPLETE for t in mine) and running:
                victim.send_signal(signal.SIGKILL)
                killed = running[0].number
            elif victim.poll() is not None:
                break
            time.sleep(0.2)
        assert killed is not None, "the worker to kill never ran a second trial"
        assert procs[1].wait(timeout=600) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for f in logs:
            f.close()

    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(finished) == N_TRIALS, [(t.number, t.state) for t in trials]
    assert [t.number for t in failed] == [killed]
    retries = [t for t in finished if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == failed[0].params
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2  # both workers finished trials
    assert all(t.state == TrialState.COMPLETE for t in finished)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
