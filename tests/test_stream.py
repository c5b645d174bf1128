"""edge_runtime.stream against an independent offline int8 step chain (ai_edge_litert directly).

Small real bundles (BasicMotions with one and two GRU layers, KDD-TSAD 135),
trained for a few epochs: the tests check bit identity and plumbing, not
accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import anomaly, contract
from edge_runtime.interpreter import InterpreterError, StepInterpreter
from edge_runtime.preprocess import windows
from edge_runtime.stream import Streamer, ring
from tests.support import (  # noqa: F401  (make_bundle, bundle_root: for other test modules)
    OfflineChain,
    bundle_root,
    edge_bundle_fixture,
    make_bundle,
    reference_stream,
)

bm = edge_bundle_fixture("bm", "bm")
bm2 = edge_bundle_fixture("bm2", "bm2")
forecaster = edge_bundle_fixture("anomaly", "forecaster")
_stream = reference_stream


# --------------------------------------------------------------------------- window-exact


@pytest.mark.parametrize("name", ["bm", "bm2"])
@pytest.mark.parametrize("backend", ["litert", "xnnpack"])
def test_window_exact_is_bit_identical_to_offline_chain(request, name, backend) -> None:
    b = request.getfixturevalue(name)
    T, H = b.manifest["preprocess"]["window"], b.manifest["preprocess"]["hop"]
    counts = _stream(b)
    s = Streamer(b, "window-exact", backend=backend)
    results = s.push_many(counts)
    offline = OfflineChain(b, backend)
    starts = list(range(0, len(counts) - T + 1, H))
    assert [r.window_start for r in results] == starts
    for r in results:
        want = offline.window(counts[r.window_start : r.window_start + T])
        assert np.array_equal(r.y_int8, want), f"window at {r.window_start}"
    # the reference windows themselves sit at multiples of T
    ref = b.load_npz("reference.npz")
    by_start = {r.window_start: r for r in results}
    probs = np.stack([by_start[i * T].raw_probabilities for i in range(len(ref["y"]))])
    assert np.mean(np.argmax(probs, 1) == ref["y"]) > 0.5


def test_window_exact_on_recordings_matches_offline(bm) -> None:
    ref = bm.load_npz("reference.npz")
    T, H = bm.manifest["preprocess"]["window"], bm.manifest["preprocess"]["hop"]
    offline = OfflineChain(bm)
    s = Streamer(bm)
    offsets = ref["rec_offsets"]
    checked = 0
    for i in range(min(6, len(offsets) - 1)):
        rec = ref["rec_counts"][offsets[i] : offsets[i + 1]]
        s.reset()
        first = s.samples
        results = s.push_many(rec)
        starts, xw, _ = windows(rec, None, T, H)
        assert [r.window_start - first for r in results] == starts.tolist()
        for r, w in zip(results, xw, strict=True):
            assert np.array_equal(r.y_int8, offline.window(w))
            assert r.sample == r.window_start + s.cfg.last_step
            checked += 1
    assert checked > 0


def test_hop_override_and_reset_restart_the_grid(bm) -> None:
    T = bm.manifest["preprocess"]["window"]
    counts = _stream(bm)
    offline = OfflineChain(bm)
    s = Streamer(bm, hop=T)
    s.push_many(counts[:7])  # a stream that breaks after 7 samples
    s.reset()
    results = s.push_many(counts[: 3 * T])
    assert [r.window_start for r in results] == [7, 7 + T, 7 + 2 * T]
    for i, r in enumerate(results):
        assert np.array_equal(r.y_int8, offline.window(counts[i * T : (i + 1) * T]))


def test_push_checks_its_input(bm) -> None:
    s = Streamer(bm)
    with pytest.raises(ValueError, match="channel"):
        s.push(np.zeros(3, np.int16))
    with pytest.raises(ValueError, match="int16"):
        s.push(np.full(s.cfg.channels, 40000, np.int32))
    with pytest.raises(ValueError, match="mode"):
        Streamer(bm, "sometimes")


# --------------------------------------------------------------------------- continuous


def test_continuous_mode_reports_its_agreement(bm) -> None:
    ref = bm.load_npz("reference.npz")
    offsets = ref["rec_offsets"]
    we, co = Streamer(bm, "window-exact"), Streamer(bm, "continuous")
    a = b = 0
    correct = total = 0
    T, H = we.cfg.window, we.cfg.hop
    for i in range(len(offsets) - 1):
        rec = ref["rec_counts"][offsets[i] : offsets[i + 1]]
        labels = ref["rec_labels"][offsets[i] : offsets[i + 1]]
        we.reset()
        co.reset()
        r_we, r_co = we.push_many(rec), co.push_many(rec)
        assert [r.sample for r in r_we] == [r.sample for r in r_co]
        _, _, y = windows(rec, labels, T, H)
        starts_all = windows(rec, None, T, H)[0]
        starts_lab, _, _ = windows(rec, labels, T, H)
        keep = np.isin(starts_all, starts_lab)
        for x, z in zip(r_we, r_co, strict=True):
            a += int(x.label_index == z.label_index)
            b += 1
        pred = np.array([z.label_index for z in r_co])[keep]
        correct += int(np.sum(pred == y))
        total += len(y)
    agreement = a / b
    accuracy = correct / max(total, 1)
    print(f"continuous vs window-exact: agreement {agreement:.3f} over {b} windows; "
          f"continuous accuracy {accuracy:.3f} over {total} labelled windows")  # fmt: skip
    assert 0.0 <= agreement <= 1.0 and b > 0


def test_smoothing_averages_the_last_n(bm) -> None:
    counts = _stream(bm)[:600]
    plain = Streamer(bm).push_many(counts)
    smooth = Streamer(bm, smooth=3).push_many(counts)
    assert len(plain) == len(smooth)
    for i, r in enumerate(smooth):
        assert np.array_equal(r.y_int8, plain[i].y_int8)
        last = [p.raw_probabilities for p in plain[max(0, i - 2) : i + 1]]
        np.testing.assert_allclose(r.probabilities, np.mean(last, axis=0), rtol=0, atol=1e-12)
        assert r.label_index == int(np.argmax(r.probabilities))
    for r in plain:
        assert np.array_equal(r.probabilities, r.raw_probabilities)


# --------------------------------------------------------------------------- forecaster


def test_forecaster_scores_and_flags(forecaster) -> None:
    m = forecaster.manifest
    ref = forecaster.load_npz("reference.npz")
    counts = ref["series_counts"][:1500]
    with pytest.raises(ValueError, match="window-exact"):
        Streamer(forecaster, "window-exact")
    s = Streamer(forecaster)
    assert s.mode == "continuous"
    results = s.push_many(counts)
    assert [r.sample for r in results] == list(range(len(counts)))
    ys = OfflineChain(forecaster).steps(counts)
    assert np.array_equal(np.stack([r.y_int8 for r in results]), ys)
    yo = m["quantization"]["step"]["outputs"]["y"]
    pre = m["preprocess"]
    f = (ys.astype(np.float64) - yo["zero_point"]) * yo["scale"] * pre["std"] + pre["mean"]
    # the forecast is a table over the int8 outputs: the same float64 operations, bit for bit
    assert np.array_equal(np.stack([r.forecast for r in results]), f)
    scale = np.array([c["scale"] for c in m["dataset"]["channels"]])
    want = anomaly.forecast_scores(counts.astype(np.float64) * scale, f)
    got = np.array([0.0 if r.score is None else r.score for r in results])
    assert results[0].score is None
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    thr = m["thresholds"]["anomaly_score_int8"]  # the int8 chain flags at its own threshold
    warm = m["thresholds"].get("anomaly_warmup_samples", 0)
    flags = np.array([r.anomaly for r in results])
    assert np.array_equal(flags, (want > thr) & (np.arange(len(want)) >= warm))
    assert not flags[:warm].any()
    d = results[5].to_dict()
    assert {"forecast", "score", "anomaly", "y_int8", "latency_us", "sample"} <= set(d)


# --------------------------------------------------------------------------- interpreter


def test_interpreter_finds_tensors_by_name_and_checks_the_manifest(bm) -> None:
    step = bm.manifest["quantization"]["step"]
    it = StepInterpreter.from_bundle(bm)
    for kind, specs in (("inputs", it.inputs), ("outputs", it.outputs)):
        for name, spec in specs.items():
            assert spec.tensor_name == step[kind][name]["tensor_name"]
    bad = {**step, "inputs": {**step["inputs"], "x": {**step["inputs"]["x"], "zero_point": 5}}}
    with pytest.raises(InterpreterError, match="zero point"):
        StepInterpreter(bm.read_bytes("step_int8.tflite"), bad)


# --------------------------------------------------------------------------- fast paths


def _fields(r) -> tuple:
    """Every field of a Result but its latency, as comparable values."""
    arrays = (r.y_int8, r.probabilities, r.raw_probabilities, r.forecast)
    return (r.sample, r.mode, r.window_start, r.label, r.label_index, r.score, r.anomaly,
            *(None if a is None else (a.dtype.str, a.shape, a.tobytes()) for a in arrays))  # fmt: skip


@pytest.mark.parametrize(
    ("name", "mode"), [("bm", "window-exact"), ("bm", "continuous"), ("bm2", "window-exact"),
                       ("forecaster", None)],
)  # fmt: skip
def test_push_push_many_and_any_integer_input_agree(request, name, mode) -> None:
    b = request.getfixturevalue(name)
    ref = b.load_npz("reference.npz")
    counts = _stream(b) if "x_counts" in ref else ref["series_counts"][:1500]
    one, many, wide = Streamer(b, mode), Streamer(b, mode), Streamer(b, mode)
    a = [_fields(r) for row in counts for r in one.push(row)]
    m = [_fields(r) for r in many.push_many(counts[:333]) + many.push_many(counts[333:])]
    # int32 rows and plain lists take the checked path
    w = [_fields(r) for i, row in enumerate(counts)
         for r in wide.push(row.astype(np.int32) if i % 2 else row.tolist())]  # fmt: skip
    assert len(a) > 0 and a == m == w
    assert one.steps == many.steps == wide.steps and one.results == len(a)


def test_ring_buffer_wraps_without_changing_results(bm, monkeypatch) -> None:
    T = bm.manifest["preprocess"]["window"]
    counts = _stream(bm)[: 6 * T]
    want = [_fields(r) for r in Streamer(bm).push_many(counts)]
    monkeypatch.setattr(ring, "RING_ROWS", 7)  # moves its tail every 7 samples
    s = Streamer(bm)
    assert s.ring.rows == 7
    assert [_fields(r) for row in counts for r in s.push(row)] == want
    offline = OfflineChain(bm)
    results = Streamer(bm, hop=T).push_many(counts)
    for r in results:
        assert np.array_equal(r.y_int8, offline.window(counts[r.window_start : r.window_start + T]))


# --------------------------------------------------------------------------- ring buffer


def _ring_inputs(
    q: np.ndarray, k: int, s: int, fill: int, starts: list[int], rows: int
) -> list[np.ndarray]:
    """The step inputs the streaming ring buffer gives each window of ``starts`` (local index
    ``t`` from the window's start, a step at ``t % s == 0``), windows in start order."""
    r = ring.make_ring(k, q.shape[1], fill)
    if isinstance(r, ring.StepRing):
        r = ring.StepRing(k, q.shape[1], fill, rows=rows)
    out: dict[int, list[np.ndarray]] = {w: [] for w in starts}
    pad = np.empty((1, k * q.shape[1]), np.int8)
    as_byte = q.shape[1] == 1
    for i, sample in enumerate(q):
        x = r.push(int(sample.view(np.uint8)[0]) if as_byte else sample.tobytes())
        for w in starts:
            t = i - w
            if t >= 0 and t % s == 0:
                out[w].append((x if t >= k - 1 else r.since(pad, x, t)).copy())
    return [np.concatenate(out[w]) if out[w] else np.zeros((0, k * q.shape[1]), np.int8)
            for w in starts]  # fmt: skip


@pytest.mark.parametrize(
    ("k", "s", "C"), [(1, 1, 1), (1, 1, 3), (3, 2, 6), (5, 2, 6), (4, 3, 2), (2, 1, 1), (5, 5, 1)]
)
def test_ring_buffer_step_inputs_equal_the_contract(k, s, C) -> None:
    """Exact equality: both are copies of the same int8 samples and fill bytes."""
    rng = np.random.default_rng(k * 100 + s * 10 + C)
    n, T, H, fill = 97, 20, 7, int(rng.integers(-128, 128))
    q = rng.integers(-128, 128, size=(n, C), dtype=np.int8)
    rows = 5  # a small ring moves its tail many times over the series
    # continuous: one window from the first sample, never reset
    (got,) = _ring_inputs(q, k, s, fill, [0], rows)
    assert np.array_equal(got, contract.step_inputs(q, k, s, fill))
    ref = contract.RingBuffer(k, C, fill)
    by_sample = [ref.push(v) for v in q]
    assert np.array_equal(got, np.concatenate(by_sample[::s]))
    # window-exact: windows of T samples every H, each reset at its start
    starts = list(range(0, n - T + 1, H))
    for w, got_w in zip(starts, _ring_inputs(q, k, s, fill, starts, rows), strict=True):
        want = contract.step_inputs(q[w : w + T], k, s, fill)
        assert np.array_equal(got_w[: len(want)], want), f"window at {w}"


@pytest.mark.parametrize(("name", "mode"), [("bm", "window-exact"), ("bm", "continuous"),
                                            ("bm2", "window-exact"), ("forecaster", None)])  # fmt: skip
def test_streamer_steps_on_the_contract_step_inputs(request, name, mode) -> None:
    """Every step input a Streamer hands the (real) interpreter, seen through a wrapper of
    its step, equals contract.step_inputs of its window or series (exact: int8 copies)."""
    b = request.getfixturevalue(name)
    ref = b.load_npz("reference.npz")
    counts = _stream(b)[:260] if "x_counts" in ref else ref["series_counts"][:300]
    interp = StepInterpreter.from_bundle(b)
    seen: list[np.ndarray] = []
    real = interp.step

    def step(x: np.ndarray, states: list[np.ndarray]) -> np.ndarray:
        seen.append(np.array(x, copy=True))
        return real(x, states)

    interp.step, interp.fast_path = step, None
    s = Streamer(b, mode, interpreter=interp)
    s.push_many(counts)
    cfg = s.cfg
    q = s.quantize(counts)
    k, st, fill, T, H = cfg.kernel, cfg.stride, cfg.fill, cfg.window, cfg.hop
    if s.mode == "continuous":
        want = list(contract.step_inputs(q, k, st, fill))
    else:  # lanes step in sample order; at a sample, the older window first
        due: list[tuple[int, int, np.ndarray]] = []
        for w in range(0, len(q), H):
            xs = contract.step_inputs(q[w : w + T], k, st, fill)
            due += [(w + j * st, w, x) for j, x in enumerate(xs) if w + j * st < len(q)]
        want = [x for _, _, x in sorted(due, key=lambda d: (d[0], d[1]))]
    assert len(seen) == len(want) == s.steps
    for i, (a, b_) in enumerate(zip(seen, want, strict=True)):
        assert np.array_equal(a.reshape(-1), b_), f"step {i}"


@pytest.mark.parametrize("name", ["bm", "bm2", "forecaster"])
def test_package_step_chain_equals_the_independent_chain(request, name) -> None:
    """edge_runtime.stream.chain (contract.step_inputs + StepInterpreter) against the chain
    written from the manifest with ai_edge_litert alone: exact, both run the same kernels."""
    from edge_runtime.stream.chain import StepChain

    b = request.getfixturevalue(name)
    ref = b.load_npz("reference.npz")
    counts = _stream(b)[:300] if "x_counts" in ref else ref["series_counts"][:300]
    assert np.array_equal(StepChain(b).steps(counts), OfflineChain(b).steps(counts))
