"""Linear probes on a model's activations: built-in and user statement sets, six probe kinds, one-pass
layer sweeps, metrics with a control-set alarm threshold, portable probe files and a generalisation matrix.
See docs/probes.md."""

from rama.probes.control import control_sentences
from rama.probes.datasets import BUILTIN, ProbeDataset, load_dataset, read_user_file
from rama.probes.gather import REDUCTIONS, TOKEN_SELECTIONS, Gathered, gather
from rama.probes.generalisation import GeneralisationMatrix, generalisation_matrix
from rama.probes.kinds import KINDS, LinearProbe, fit_probe
from rama.probes.knowledge import city_fact_accuracy
from rama.probes.probe_file import ProbeMismatchError, check_probe_fits, load_probe, save_probe
from rama.probes.probe_metrics import (
    Reliability,
    accuracy,
    alarm_threshold,
    expected_calibration_error,
    label_auroc,
    recall_above,
    reliability,
)
from rama.probes.splits import Split, split_by_group
from rama.probes.training import (
    ProbeConfig,
    TrainedProbe,
    best_rows,
    evaluate,
    score_dataset,
    sweep,
    train_probe,
)

__all__ = [
    "BUILTIN",
    "KINDS",
    "REDUCTIONS",
    "TOKEN_SELECTIONS",
    "Gathered",
    "GeneralisationMatrix",
    "LinearProbe",
    "ProbeConfig",
    "ProbeDataset",
    "ProbeMismatchError",
    "Reliability",
    "Split",
    "TrainedProbe",
    "accuracy",
    "alarm_threshold",
    "best_rows",
    "check_probe_fits",
    "city_fact_accuracy",
    "control_sentences",
    "evaluate",
    "expected_calibration_error",
    "fit_probe",
    "gather",
    "generalisation_matrix",
    "label_auroc",
    "load_dataset",
    "load_probe",
    "read_user_file",
    "recall_above",
    "reliability",
    "save_probe",
    "score_dataset",
    "split_by_group",
    "sweep",
    "train_probe",
]
