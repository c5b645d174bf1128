"""Metrics against hand-computed examples, cross-checked with scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from edge_runtime.metrics import (
    accuracy,
    confusion_matrix,
    macro_f1,
    parity,
    per_class_f1,
    roc_auc,
)

Y = np.array([0, 0, 1, 1, 2, 2, 2])
YHAT = np.array([0, 1, 1, 1, 2, 0, 2])


def test_accuracy_and_confusion() -> None:
    assert accuracy(Y, YHAT) == pytest.approx(5 / 7)
    cm = confusion_matrix(Y, YHAT, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, skm.confusion_matrix(Y, YHAT, labels=[0, 1, 2]))
    np.testing.assert_array_equal(confusion_matrix([3], [0], 4)[3], [1, 0, 0, 0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([0, 1], [0])


def test_f1_by_hand() -> None:
    # class 0: TP 1, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 4/5; class 2: TP 2, FN 1 -> 4/5
    f1 = per_class_f1(Y, YHAT, 3)
    assert f1 == pytest.approx([0.5, 0.8, 0.8])
    assert macro_f1(Y, YHAT, 3) == pytest.approx(0.7)
    assert macro_f1(Y, YHAT, 3) == pytest.approx(skm.f1_score(Y, YHAT, average="macro"))
    np.testing.assert_allclose(f1, skm.f1_score(Y, YHAT, average=None))


def test_f1_absent_class() -> None:
    # class 3 neither occurs nor is predicted: undefined, left out of the mean
    f1 = per_class_f1(Y, YHAT, 4)
    assert f1[3] is None
    assert macro_f1(Y, YHAT, 4) == pytest.approx(0.7)
    want = skm.f1_score(Y, YHAT, labels=[0, 1, 2, 3], average="macro", zero_division=np.nan)
    assert macro_f1(Y, YHAT, 4) == pytest.approx(want)
    # class present but never predicted counts as 0
    assert per_class_f1([0, 1], [0, 0], 2) == pytest.approx([2 / 3, 0.0])
    json.dumps(f1, allow_nan=False)


def test_f1_random_vs_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 500)
    yhat = np.where(rng.random(500) < 0.7, y, rng.integers(0, 6, 500))
    assert macro_f1(y, yhat, 6) == pytest.approx(skm.f1_score(y, yhat, average="macro"))
    assert accuracy(y, yhat) == pytest.approx(skm.accuracy_score(y, yhat))


def test_roc_auc_by_hand_and_ties() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.2, 0.9]) == 1.0
    assert roc_auc([1, 0], [0.2, 0.9]) == 0.0
    # a positive tied with a negative counts one half: pairs (p,n): 1 vs 0 win, 1 vs 1 tie
    assert roc_auc([0, 0, 1], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert roc_auc([0, 1, 0, 1], [5, 5, 5, 5]) == 0.5
    rng = np.random.default_rng(4)
    lab = rng.integers(0, 2, 400)
    scores = np.round(rng.normal(size=400) + lab, 1)  # many ties
    assert roc_auc(lab, scores) == pytest.approx(skm.roc_auc_score(lab, scores))
    assert isinstance(roc_auc(lab, scores), float)


def test_roc_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [0.1, np.nan])


def test_parity_by_hand() -> None:
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    cand = np.array([[0.8, 0.2], [0.2, 0.8], [0.4, 0.6]])
    p = parity(ref, cand)
    d = np.array([0.1, -0.1, 0.0, 0.0, 0.2, -0.2])
    assert p["argmax_agreement"] == pytest.approx(2 / 3)
    assert p["max_abs_err"] == pytest.approx(0.2)
    assert p["mean_abs_err"] == pytest.approx(0.6 / 6)
    assert p["rmse"] == pytest.approx(math.sqrt(0.1 / 6))
    assert p["l2r"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(ref))
    cos = (ref.ravel() @ cand.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(cand))
    assert p["cosine"] == pytest.approx(cos)
    assert all(type(v) is float for v in p.values())
    assert p["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(ref, cand)))
    json.dumps(p, allow_nan=False)


def test_parity_edge_cases() -> None:
    same = parity([[1.0], [2.0]], [[1.0], [2.0]])
    assert same["argmax_agreement"] is None  # one-column output: argmax means nothing
    assert same["max_abs_err"] == 0.0 and same["l2r"] == 0.0
    assert same["cosine"] == pytest.approx(1.0)
    assert parity([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["argmax_agreement"] is None
    zero = parity(np.zeros((2, 3)), np.ones((2, 3)))
    assert zero["l2r"] is None and zero["cosine"] is None
    assert parity(np.zeros(3), np.zeros(3))["cosine"] == 1.0
    seq = parity(np.ones((2, 5, 3)) * [0, 1, 0], np.ones((2, 5, 3)) * [1, 0, 0])
    assert seq["argmax_agreement"] == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        parity(np.zeros(3), np.zeros(4))
