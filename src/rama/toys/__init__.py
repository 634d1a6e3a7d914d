"""Models and data with a known answer, for checking interpretability methods."""

from rama.toys.feature_suite import FeatureSuite, FeatureSuiteConfig
from rama.toys.toy_transformer import load_ground_truth
from rama.toys.zoo import TOYS, build, pretrained

__all__ = ["TOYS", "FeatureSuite", "FeatureSuiteConfig", "build", "load_ground_truth", "pretrained"]
