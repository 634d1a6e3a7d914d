"""Models and data with a known answer, for checking interpretability methods.

Layering: toys sit ABOVE `rama.circuits` and `rama.interventions` (and below `web` / `cli`). A toy's
ground truth is measured with the library's own head scores (`rama.circuits.head_scores`) and
ablations (`rama.interventions.ablation`), so one definition serves users and ground truth alike;
nothing in circuits or interventions imports toys (tests/test_layering.py checks it). Tests import
both: the toys are the known answers the methods are checked against.
"""

from rama.toys.feature_suite import FeatureSuite, FeatureSuiteConfig
from rama.toys.toy_transformer import load_ground_truth
from rama.toys.zoo import TOYS, build, pretrained

__all__ = ["TOYS", "FeatureSuite", "FeatureSuiteConfig", "build", "load_ground_truth", "pretrained"]
