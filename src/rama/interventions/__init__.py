"""Interventions with a measured effect: steering, ablation, activation / path / attribution patching."""

from rama.interventions.ablation import mean_ablation, resample_ablation, zero_ablation
from rama.interventions.attribution import agreement, attribution_patching
from rama.interventions.feature_edits import ablate_features, feature_direction, set_features
from rama.interventions.logit_metrics import (
    kl_divergence,
    logit_difference,
    normalised_score,
    target_probability,
)
from rama.interventions.patching import PatchResult, activation_patching
from rama.interventions.path_patching import Receiver, path_patch, path_patching_senders
from rama.interventions.steering import add_vector, clamp_direction, contrastive_vector, project_out

__all__ = [
    "PatchResult",
    "Receiver",
    "ablate_features",
    "activation_patching",
    "add_vector",
    "agreement",
    "attribution_patching",
    "clamp_direction",
    "contrastive_vector",
    "feature_direction",
    "kl_divergence",
    "logit_difference",
    "mean_ablation",
    "normalised_score",
    "path_patch",
    "path_patching_senders",
    "project_out",
    "resample_ablation",
    "set_features",
    "target_probability",
    "zero_ablation",
]
