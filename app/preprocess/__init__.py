"""Preprocess: raw lake -> cleaned, resampled, per-greenhouse features and targets (Ray Data)."""

from app.preprocess.features import FeatureParams, feature_columns, greenhouse_features, plan_columns, target_columns
from app.preprocess.pipeline import FeatureSetInfo, PreprocessParams, load_feature_set, read_feature_set_ray, run_preprocess

__all__ = [
    "FeatureParams",
    "FeatureSetInfo",
    "PreprocessParams",
    "feature_columns",
    "greenhouse_features",
    "load_feature_set",
    "plan_columns",
    "read_feature_set_ray",
    "run_preprocess",
    "target_columns",
]
