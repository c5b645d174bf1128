"""Streaming inference: int16 samples in, predictions out, one int8 GRU step at a time.

::

    from edge_runtime.api import Streamer, open_bundle

    s = Streamer(open_bundle("build/har"))             # window-exact for a classifier
    for counts in sensor:                               # int16 (C,) per sample
        for r in s.push(counts):
            print(r.sample, r.label, r.probabilities)

Each sample is turned into the model's int8 input by the device input contract
(``edge_runtime.preprocess.quantize_counts`` with ``preprocess.input_quant``,
tabulated once over all int16 counts). A step runs at local sample index ``t``
with ``t % s == 0`` over the last ``k`` samples, oldest first, sample-major;
before the first sample the ring buffer holds the ``x`` zero point
(``quantization.step.ring_buffer.fill``); see :mod:`edge_runtime.contract`.

Modes
-----
``window-exact`` (classifiers; the default for them). Windows of ``T`` samples
start every ``H`` samples (``preprocess.window`` / ``preprocess.hop``, counted
from the first sample after creation or :meth:`Streamer.reset`). Every window
in flight has its own ring buffer and state, reset at its start, so a window's
prediction equals, bit for bit, what the offline int8 step chain gives for
that window from a zero state (``reference.npz`` holds such windows). The
Result is emitted at the window's last step, local index
``t_last = s * floor((T - 1) / s)``; samples after it do not influence the
prediction. With ``H = T / 2`` two windows are in flight.

``continuous``. One state and one ring buffer, never reset except by
:meth:`Streamer.reset` (a :class:`~edge_runtime.sources.Gap`). A classifier
emits a Result at the same sample indices as window-exact mode (every ``H``
samples from ``t_last`` on), carrying the head output of the latest step; its
agreement with window-exact is measured (tests, ``tinygru-edge check``), not
assumed. A forecaster (the default and only mode for it) emits a Result at
every step: the forecast of the next sample in sensor units and the score of
the current sample, ``|x_t - forecast_{t-1}|`` summed over channels (``None``
when the previous sample ran no step or at the first sample), flagged as an
anomaly above ``thresholds.anomaly_score`` except during the first
``thresholds.anomaly_warmup_samples`` samples after a reset.

Smoothing (``smooth=N``, classifiers): ``probabilities`` is the mean of the
last N dequantized head outputs of the mode's Results and ``label`` its
argmax; ``raw_probabilities`` keeps the unsmoothed values.

``latency_us`` is the wall time from the start of the :meth:`Streamer.push`
call that produced a Result to the Result: quantization, the ring buffer and
every step that sample ran. :meth:`Streamer.push_many` checks and quantizes a
whole chunk at once; there it counts from the start of the sample's turn.

Modules, one job each:

- :mod:`~edge_runtime.stream.config`: ``StreamConfig`` (the manifest's part,
  checked against the step model) and ``Result``;
- :mod:`~edge_runtime.stream.ring`: the int16 -> int8 input tables and the ring
  buffer whose step inputs are numpy views of its bytes;
- :mod:`~edge_runtime.stream.lanes`: the states (lanes), when they step and
  when they answer, one path per mode chosen once; the one place a step runs;
- :mod:`~edge_runtime.stream.heads`: a classifier's head output as a Result;
- :mod:`~edge_runtime.stream.forecast`: a forecaster's lane and its Results;
- :mod:`~edge_runtime.stream.streamer`: the :class:`Streamer` API;
- :mod:`~edge_runtime.stream.chain`: the offline step chain over whole series
  (the contract's step inputs), what streaming is compared with.
"""

from edge_runtime.stream.config import MODES, Result, StreamConfig
from edge_runtime.stream.streamer import Streamer

__all__ = ["MODES", "Result", "StreamConfig", "Streamer"]
