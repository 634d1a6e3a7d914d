"""Models and data with a known answer, for checking interpretability methods."""

from rama.toys.features import FeatureSuite, FeatureSuiteConfig
from rama.toys.transformers import load_ground_truth
from rama.toys.zoo import TOYS, build, pretrained

__all__ = ["TOYS", "FeatureSuite", "FeatureSuiteConfig", "build", "load_ground_truth", "pretrained"]
