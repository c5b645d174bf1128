"""Test references shared by the tests.

- ``OfflineChain``: the int8 step chain written from the manifest alone with
  ai_edge_litert, independent of edge_runtime.stream (what the streaming runtime
  is compared with).
- ``build_bundle``: a tiny real bundle (trained, int8) from a shipped config.

(socat joining two ptys is ``edge_runtime.sources.bridge.Bridge``.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import Bundle
from edge_runtime.preprocess import InputQuant, quantize_counts


class OfflineChain:
    """The int8 step chain, written from the manifest alone with ai_edge_litert."""

    def __init__(self, b: Bundle, backend: str = "litert") -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        m = b.manifest
        resolver = (
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            if backend == "litert"
            else OpResolverType.AUTO
        )
        self.it = Interpreter(
            model_path=str(b.path("step_int8.tflite")), experimental_op_resolver_type=resolver
        )
        self.it.allocate_tensors()
        step = m["quantization"]["step"]
        names = {d["name"]: d["index"] for d in self.it.get_input_details()}
        names.update({d["name"]: d["index"] for d in self.it.get_output_details()})
        self.idx = {k: names[v["tensor_name"]] for k, v in step["inputs"].items()}
        self.idx.update({k: names[v["tensor_name"]] for k, v in step["outputs"].items()})
        self.pairs = step["state"]["names"]
        self.units = [step["inputs"][a]["shape"][1] for a, _ in self.pairs]
        mc = m["model"]["config"]
        self.k, self.s, self.C = mc["front_end_kernel"], mc["front_end_stride"], mc["n_channels"]
        self.fill = step["ring_buffer"]["fill"]
        self.iq = InputQuant.from_dict(m["preprocess"]["input_quant"])

    def steps(self, counts: np.ndarray) -> np.ndarray:
        """int8 head output of every step over one series ``(n, C)`` from a zero state."""
        q = quantize_counts(counts, self.iq)
        pad = np.concatenate([np.full((self.k - 1, self.C), self.fill, np.int8), q])
        h = [np.zeros((1, u), np.int8) for u in self.units]
        ys = []
        for t in range(0, len(counts), self.s):
            self.it.set_tensor(self.idx["x"], pad[t : t + self.k].reshape(1, -1))
            for (a, _), v in zip(self.pairs, h, strict=True):
                self.it.set_tensor(self.idx[a], v)
            self.it.invoke()
            h = [self.it.get_tensor(self.idx[o]) for _, o in self.pairs]
            ys.append(self.it.get_tensor(self.idx["y"]).reshape(-1))
        return np.asarray(ys, np.int8)

    def window(self, counts: np.ndarray) -> np.ndarray:
        return self.steps(counts)[-1]


ROOT = Path(__file__).resolve().parents[1]


def build_bundle(
    name: str, root: str, config: str, edits: dict[str, str], *, parity: bool = False
) -> Path:
    """Train a shipped config with ``edits`` applied to its text, convert it to int8
    (and run the host parity check when asked) into ``root/name``."""
    from quantize.int8 import int8
    from train.train import run

    text = (ROOT / "configs" / config).read_text()
    for a, b in edits.items():
        assert a in text, (config, a)
        text = text.replace(a, b)
    cfg = Path(root) / f"{name}.toml"
    cfg.write_text(text)
    out = Path(root) / name
    run(str(cfg), str(out))
    int8(out, calibration_samples=300, arena=False)
    if parity:
        from quantize.parity import check

        check(out, progress=False)
    return out


def small_config(folder: Path, base: str, **train) -> Path:
    """A copy of a shipped config with ``[train]`` keys replaced (tests check plumbing,
    not accuracy, so they train for fewer epochs)."""
    text = (ROOT / "configs" / base).read_text()
    for key, value in train.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
        text = "\n".join(lines).replace("[train]\n", f"[train]\n{key} = {value}\n", 1)
    path = folder / base
    path.write_text(text)
    return path


# Small real edge bundles (BasicMotions with one and two GRU layers, KDD-TSAD 135), trained
# for a few epochs: the tests that use them check bit identity and plumbing, not accuracy.
EDGE_BUNDLES = {
    "bm": ("basic_motions.toml", {"epochs = 30": "epochs = 8"}),
    "bm2": ("basic_motions.toml", {"epochs = 30": "epochs = 2", "gru_units = [8]": "gru_units = [8, 6]",
                                   'name = "basic_motions"': 'name = "bm2"'}),
    "anomaly": ("anomaly.toml", {"epochs = 60": "epochs = 1", "gru_units = [32]": "gru_units = [8]"}),
}  # fmt: skip


@functools.cache
def make_bundle(name: str, root: str) -> Path:
    """Train (tiny), convert and parity-check one of ``EDGE_BUNDLES`` under ``root``; once
    per session."""
    config, edits = EDGE_BUNDLES[name]
    return build_bundle(name, root, config, edits, parity=True)


def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's folder of edge bundles."""
    root = tmp_path_factory.getbasetemp() / "edge_bundles"
    root.mkdir(exist_ok=True)
    return str(root)


def edge_bundle_fixture(bundle: str, name: str) -> Callable[..., Bundle]:
    """A module-scoped fixture called ``name`` that opens the edge bundle ``bundle``."""

    @pytest.fixture(scope="module", name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
        return Bundle.open(make_bundle(bundle, bundle_root(tmp_path_factory)))

    return fixture


def reference_stream(b: Bundle) -> np.ndarray:
    """The bundle's concatenated reference windows as one stream ``(N*T, C)``."""
    x = b.load_npz("reference.npz")["x_counts"]
    return x.reshape(-1, x.shape[-1])


def int8_chain(tflite: bytes, cfg: object, windows: np.ndarray, backend: str = "litert") -> dict:
    """The int8 step model over float windows ``(N, T, C)`` from zero states, through the
    step interpreter: every step's int8 inputs and outputs by name ``(N, S, width)`` and
    the dequantized head output ``"y_float"``. ``x`` is the float step input quantized as
    TFLite does (the device quantizes counts instead; see the parity stage)."""
    from edge_runtime import contract
    from edge_runtime.interpreter import StepInterpreter
    from quantize.step_model import step_inputs

    with StepInterpreter(tflite, backend=backend) as it:
        xs = contract.quantize(step_inputs(cfg, windows), it.x.scale, it.x.zero_point)
        out = it.chain(xs)
        zero = {
            n: np.zeros_like(out[o][:, :1]) for n, o in zip(it.state_in, it.state_out, strict=True)
        }
        for n, o in zip(it.state_in, it.state_out, strict=True):
            zero[n] += it.inputs[n].zero_point
            out[n] = np.concatenate([zero[n], out[o][:, :-1]], axis=1)
        out["x"] = xs
        out["y_float"] = contract.dequantize(out["y"], it.y.scale, it.y.zero_point)
    return out


def edited(src: Path, dst: Path, edit: Callable[[dict], object]) -> Path:
    """A copy of bundle ``src`` at ``dst`` (its export left out) with ``edit`` applied to its
    manifest as JSON, as a hand edit would."""
    import json
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("firmware"))
    path = dst / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    return dst


def outlives(pid: int, seconds: float = 60.0) -> bool:
    """Whether process ``pid`` is still running after up to ``seconds`` (polled every
    0.1 s; a zombie has ended, it is only not yet reaped). A liveness check with a
    generous bound, not a measure of speed."""
    import time

    def running() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
        except (FileNotFoundError, IndexError):
            return False
        return state not in ("Z", "X")

    for _ in range(int(seconds * 10)):
        if not running():
            return False
        time.sleep(0.1)
    return running()
