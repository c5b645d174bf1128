"""Shared test settings: deterministic conversions and quiet TensorFlow."""

import os

os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def engine_bm(tmp_path_factory):
    """The small BasicMotions bundle (trained, int8, exported) the engine tests share."""
    from tests.test_engine import make_bundle

    root = tmp_path_factory.getbasetemp() / "engine_bundles"
    root.mkdir(exist_ok=True)
    return make_bundle("bm", str(root))
