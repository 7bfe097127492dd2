"""Preprocess: raw lake -> cleaned, resampled, per-greenhouse features and targets (Ray Data).

``spec`` names the features and their parameters, ``raw`` holds readings as arrays, ``engine``
computes the features (the one definition, on numpy; ``windows`` and ``solar`` are its array
operations), ``features`` hands them to training (a table) and serving (the newest row), and
``pipeline`` is the preprocess job on Ray Data.
"""

from app.preprocess.features import FeatureParams, feature_columns, greenhouse_features
from app.preprocess.pipeline import FeatureSetInfo, PreprocessParams, load_feature_set, load_test_window, read_feature_set_ray, run_preprocess

__all__ = ["FeatureParams", "FeatureSetInfo", "PreprocessParams", "feature_columns", "greenhouse_features", "load_feature_set", "load_test_window", "read_feature_set_ray", "run_preprocess"]
