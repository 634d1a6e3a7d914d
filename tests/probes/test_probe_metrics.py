"""Every probe metric against a hand computation on a small case, and its refusals."""

from __future__ import annotations

import pytest
import torch

from rama.errors import InputError
from rama.probes import (
    accuracy,
    alarm_threshold,
    evaluate,
    expected_calibration_error,
    label_auroc,
    recall_above,
    reliability,
)

PROBS = torch.tensor([0.9, 0.4, 0.6, 0.2])
LABELS = torch.tensor([1, 1, 0, 0])


def test_auroc_and_accuracy_by_hand() -> None:
    # positives 0.9, 0.4 against negatives 0.6, 0.2: 0.9 beats both, 0.4 beats 0.2 only -> 3 of 4 pairs
    assert label_auroc(PROBS, LABELS) == 0.75
    # predictions 1, 0, 1, 0 against labels 1, 1, 0, 0: right on the first and the last
    assert accuracy(PROBS, LABELS) == 0.5
    assert label_auroc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == 0.5  # a tie counts one half


def test_alarm_threshold_and_recall_by_hand() -> None:
    control = torch.arange(200) / 200  # 0, 0.005, ..., 0.995
    # 1 % of 200 = 2 control items may lie above: the third largest, 0.985 (0.99 and 0.995 above it)
    assert alarm_threshold(control, 0.01) == pytest.approx(0.985)
    assert int((control > alarm_threshold(control, 0.01)).sum()) == 2
    assert recall_above(torch.tensor([0.99, 0.5, 0.986, 0.2]), 0.985) == 0.5
    # with 50 control items 1 % allows none above: the largest is the threshold
    assert alarm_threshold(torch.linspace(0, 0.49, 50), 0.01) == pytest.approx(0.49)


def test_reliability_and_ece_by_hand() -> None:
    probs = torch.tensor([0.05, 0.15, 0.12, 0.95, 0.91])
    labels = torch.tensor([0, 1, 0, 1, 0])
    curve = reliability(probs, labels)
    assert curve.counts == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert curve.confidence[1] == pytest.approx(0.135) and curve.frequency[1] == 0.5
    assert curve.confidence[9] == pytest.approx(0.93) and curve.frequency[9] == 0.5
    # 1/5 * |0 - 0.05| + 2/5 * |0.5 - 0.135| + 2/5 * |0.5 - 0.93|
    assert expected_calibration_error(probs, labels) == pytest.approx(0.01 + 0.146 + 0.172)
    assert reliability(torch.tensor([1.0]), torch.tensor([1])).counts[-1] == 1  # p = 1 in the last bin


def test_evaluate_collects_the_metrics() -> None:
    metrics = evaluate(PROBS, LABELS, threshold=0.5, fpr=0.01)
    assert metrics["auroc"] == 0.75 and metrics["accuracy"] == 0.5
    # label-0 items have p 0.6, 0.2 -> alarms 0.4, 0.8; one above 0.5
    assert metrics["recall_at_1pct_fpr"] == 0.5
    assert metrics["ece"] == pytest.approx(expected_calibration_error(PROBS, LABELS))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InputError, match="one class only"):
        label_auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        recall_above(torch.tensor([0.3]), 1.5)
    with pytest.raises(InputError, match="NaN"):
        accuracy(torch.tensor([float("nan"), 0.2]), torch.tensor([1, 0]))
    with pytest.raises(InputError, match="strictly between"):
        alarm_threshold(torch.tensor([0.1]), 0.0)
