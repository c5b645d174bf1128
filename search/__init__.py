"""The model search: the best GRU of the family for a target chip, on validation data only.

    python -m search --config configs/har.toml --target configs/targets/cortex-m4-80mhz.toml --trials 40

A study (Optuna, multi-objective) trains candidates of the model family on the
config's training groups and scores each on its validation groups by the int8
engine's outputs; against that it measures, per candidate, the engine's
instructions per second of sensor data on the target's emulated board (QEMU
``-icount``), its flash and its RAM. Trials whose shape cannot fit the target's
budgets are rejected before they train. The Pareto front (at most 8 points) is
re-scored over K group folds of the non-test groups and the best point inside the
budget is written as a config file. Only then are the test groups read: the chosen
config and the default are trained with several seeds through the stage commands.

Modules: :mod:`search.space` (what is searched), :mod:`search.data` (the data a
search may see), :mod:`search.evaluate` (one candidate: train, prune, int8, score,
device cost), :mod:`search.study` (storage, workers, heartbeats, pruning),
:mod:`search.front` (Pareto front, folds, choice), :mod:`search.configfile` (the
chosen config), :mod:`search.seeds` (test figures over seeds) and
:mod:`search.report` (table, plot, summary).
"""

import os

# Before TensorFlow is imported anywhere: quiet logs and oneDNN off (deterministic floats).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
