"""The Optuna study: storage, workers, heartbeats, the budget gate and the pruner.

Storage. A SQLite file, ``<build>/search/studies.db``, unless ``--storage URL``
names another: ``postgresql://user@host:port/db`` (driven by psycopg 3) lets
workers on any number of machines join one study. Every worker runs the same
loop; the study's user attributes hold what a worker needs (the config and
target files' text, the search space, the training caps, the trial count).

Trials are counted exactly. Under a lock (a PostgreSQL advisory lock, or a lock
file beside the SQLite file) a worker fails stale trials, counts the finished
ones (complete or pruned) and the running ones, and asks for a new trial only
while finished + running < N. A worker leaves when N trials have finished.

Heartbeats. Each running trial records a heartbeat every ``heartbeat`` seconds.
A trial whose heartbeat is older than ``grace`` seconds (its worker died) is
marked failed by the next worker that takes the lock, and a copy with the same
parameters is queued (``RetryHeartbeatStaleTrialCallback``) and run by the next
free worker; the failed trial is never counted, so nothing counts twice.

Budget gate. Before a trial trains, the device cost of its shape is measured on
the model after one epoch (:func:`search.evaluate.probe`); when that exceeds the
target's flash or RAM budget the trial ends pruned, with the reason in its
``rejected`` attribute, and its constraint values tell the sampler why.

Pruner. Optuna's own pruners do not support several objectives, so the search
keeps its own: after ``warmup`` epochs a trial stops when the best validation
score of its float model so far is below the median, at the same epoch, of the
completed trials that cost no more on every device axis (instructions per
second, flash and RAM; this trial's from its probe), at least
``min_peers`` of them: a model that models no more expensive in any respect beat
while training is unlikely to reach the Pareto front.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search import evaluate, space
from search.evaluate import Candidate, Context, TrialPruned

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
OBJECTIVES = ("score", "instructions_per_second", "flash_bytes", "ram_bytes")
COSTS = OBJECTIVES[1:]


class SearchError(Exception):
    """Bad input or an unusable study; the message is the one-line reason."""


# --------------------------------------------------------------------------- storage


def storage_url(url: str | None, build: Path) -> str:
    """The SQLAlchemy URL: the default SQLite file, or ``url`` (postgresql → psycopg 3)."""
    if url is None:
        path = (build / "search" / "studies.db").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def shown_url(url: str) -> str:
    """The URL without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.replace("+psycopg", "")
    if "@" in rest:
        cred, host = rest.rsplit("@", 1)
        rest = f"{cred.split(':')[0]}@{host}"
    return f"{scheme}{sep}{rest}"


def open_storage(url: str, heartbeat: int, grace: int) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats and retries; an unreachable one is a SearchError."""
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    elif url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                ),
                **kwargs,
            )
        except Exception as e:  # noqa: BLE001 - SQLAlchemy/driver errors of many kinds
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise SearchError(f"storage {shown_url(url)}: cannot connect: {first}") from None


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Exclusive section across workers: advisory lock (PostgreSQL) or lock file (SQLite)."""
    if url.startswith("postgresql"):
        import psycopg

        conninfo = "postgresql://" + url.split("://", 1)[1]
        key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return
    if url.startswith("sqlite:///"):
        lock = Path(url[len("sqlite:///") :] + ".lock")
        with open(lock, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    yield  # another database: Optuna's own transactions only


# --------------------------------------------------------------------------- sampler


CONSTRAINTS = ("flash_bytes", "ram_bytes")


def constrain(trial: optuna.Trial, values: list[float]) -> None:
    """Hand the sampler the trial's flash and RAM over budget (> 0: infeasible), once,
    just before the trial is told (a constraint cannot change once set)."""
    for key, v in zip(CONSTRAINTS, values, strict=True):
        trial.set_constraint(key, v)


def make_sampler(kind: str, n_trials: int, seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "nsga2":
            pop = max(4, min(50, n_trials // 4))
            return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
        return optuna.samplers.TPESampler(
            n_startup_trials=max(3, min(10, n_trials // 4)),
            multivariate=True,
            group=True,
            seed=seed,
        )


def directions(task: str) -> list[str]:
    first = "maximize" if task == "classification" else "minimize"
    return [first, "minimize", "minimize", "minimize"]


# --------------------------------------------------------------------------- pruner


@dataclass(frozen=True)
class Pruner:
    """Median of the completed trials that cost no more, at the same epoch (module doc)."""

    warmup: int = 5
    min_peers: int = 3

    def should_prune(
        self,
        study: optuna.Study,
        curve: list[float],
        cost: dict[str, float],
        higher_is_better: bool = True,
    ) -> bool:
        epoch = len(curve)
        if epoch <= self.warmup:
            return False
        sign = 1.0 if higher_is_better else -1.0
        best = max(sign * v for v in curve)
        peers = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            c = (t.user_attrs.get("result") or {}).get("cost") or {}
            curve_t = t.user_attrs.get("curve")
            if not curve_t or any(c.get(k, float("inf")) > cost[k] for k in COSTS):
                continue
            peers.append(max(sign * v for v in curve_t[:epoch]))
        if len(peers) < self.min_peers:
            return False
        return best < statistics.median(peers)


# --------------------------------------------------------------------------- one trial


class Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds in a thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def one_line(e: BaseException) -> str:
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    worker: Worker,
) -> TrialState:
    """Draw, gate, train, measure and tell one trial; returns its final state."""
    ctx, sp = worker.ctx, worker.space
    cand = space.sample(trial, sp)
    trial.set_user_attr("candidate", cand.to_dict())
    trial.set_user_attr("label", cand.label())
    trial.set_user_attr("worker", worker.name)
    trial.set_user_attr("curve", [])
    trial.set_user_attr("started", time.time())
    higher = worker.task == "classification"
    limits: list[float] = []
    try:
        arrays = worker.arrays(cand)
        probe = evaluate.probe(ctx, cand, arrays)
        trial.set_user_attr("probe", probe)
        over = worker.over_budget(probe)
        limits = worker.constraint_values(probe)
        trial.set_user_attr("constraints", limits)
        if over:
            trial.set_user_attr("rejected", over)
            worker.log(f"trial {trial.number}: {cand.label()}: rejected before training: {over[0]}")
            constrain(trial, limits)
            study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        curve: list[float] = []

        def report(epoch: int, score: float) -> None:
            curve.append(score)
            trial.set_user_attr("curve", list(curve))
            if worker.pruner.should_prune(study, curve, probe, higher):
                raise TrialPruned(f"epoch {epoch}")

        work = worker.study_dir / "trials" / f"{trial.number:04d}"
        rec = evaluate.evaluate(ctx, cand, arrays, work, report)
    except TrialPruned as e:
        trial.set_user_attr("pruned_at", str(e))
        worker.log(f"trial {trial.number}: {cand.label()}: pruned at {e}")
        constrain(trial, limits)
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except Exception as e:  # noqa: BLE001 - a broken trial is recorded, the study goes on
        trial.set_user_attr("error", one_line(e))
        worker.log(f"trial {trial.number}: {cand.label()}: failed: {one_line(e)}")
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    cost = rec["cost"]
    limits = worker.constraint_values(cost)
    trial.set_user_attr("constraints", limits)
    trial.set_user_attr("result", rec)
    trial.set_user_attr("seconds", round(time.time() - trial.user_attrs["started"], 1))
    values = [rec["val"]["score"], cost["instructions_per_second"], cost["flash_bytes"],
              cost["ram_bytes"]]  # fmt: skip
    worker.log(
        f"trial {trial.number}: {cand.label()}: val {rec['val']['score']:.4f}, "
        f"{cost['instructions_per_second']:,.0f} instructions/s, {cost['flash_bytes']:,} B flash, "
        f"{cost['ram_bytes']:,} B RAM"
    )
    constrain(trial, limits)
    study.tell(trial, values)
    return TrialState.COMPLETE


# --------------------------------------------------------------------------- the worker


class Worker:
    """One process that runs trials of a study until N have finished."""

    def __init__(
        self,
        ctx: Context,
        sp: space.Space,
        data: Any,
        url: str,
        storage: optuna.storages.RDBStorage,
        study_name: str,
        *,
        pruner: Pruner | None = None,
        log: Callable[[str], None] = print,
        poll: float = 2.0,
    ) -> None:
        self.ctx, self.space, self.data = ctx, sp, data
        self.url, self.storage, self.study_name = url, storage, study_name
        self.pruner = pruner or Pruner()
        self.log = log
        self.poll = poll
        self.task = data.task
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._arrays: dict[tuple[int, int], Any] = {}

    @property
    def study_dir(self) -> Path:
        return self.ctx.study_dir

    def arrays(self, cand: Candidate) -> Any:
        from search.data import arrays

        key = (cand.window, cand.hop)
        if key not in self._arrays:
            self._arrays[key] = arrays(
                self.data, self.ctx.cfg, cand.window, cand.hop, cache=self.study_dir / "cache"
            )
        return self._arrays[key]

    def over_budget(self, cost: dict[str, Any]) -> list[str]:
        from edge_runtime.targets import fit

        return fit(self.ctx.target, cost["flash_bytes"], cost["ram_bytes"])

    def constraint_values(self, cost: dict[str, Any]) -> list[float]:
        t = self.ctx.target
        return [float(cost["flash_bytes"] - t.flash_bytes), float(cost["ram_bytes"] - t.ram_bytes)]

    def run(self, study: optuna.Study, n_trials: int, max_failures: int | None = None) -> dict:
        """Run trials until ``n_trials`` have finished; returns counts of what this worker ran."""
        ran: dict[str, int] = {"complete": 0, "pruned": 0, "fail": 0}
        max_failures = n_trials if max_failures is None else max_failures
        while True:
            with study_lock(self.url, self.study_name):
                optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                done = sum(t.state in FINISHED for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                errors = sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials)
                if done >= n_trials:
                    return ran
                if errors > max_failures:
                    raise SearchError(
                        f"study {self.study_name}: {errors} trials failed; the last: "
                        + next(
                            t.user_attrs["error"]
                            for t in reversed(trials)
                            if "error" in t.user_attrs
                        )  # fmt: skip
                    )
                trial = study.ask() if done + running < n_trials else None
            if trial is None:
                time.sleep(self.poll)
                continue
            with Heartbeat(self.storage, trial._trial_id, self.storage.heartbeat_interval or 60):
                state = run_trial(study, trial, self)
            ran[state.name.lower()] += 1
