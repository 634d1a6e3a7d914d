"""Models and data with a known answer, for checking interpretability methods."""

from rama.toys.features import FeatureSuite, FeatureSuiteConfig

__all__ = ["FeatureSuite", "FeatureSuiteConfig"]
