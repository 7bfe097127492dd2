"""Experiment tracking and the model registry (MLflow). The only package that imports mlflow.

- :class:`Tracking` (``client``): runs, params, metrics, artifacts, registered versions and aliases
  on one tracking URL through an explicit ``MlflowClient``; :func:`resolve_alias`;
- ``models``: log and register a forecast model (:func:`log_forecast_model`), load one back
  (:func:`load_forecast_model`, optionally through the node-local cache), and :func:`warm_imports`
  for serving replicas;
- ``cache``: the node-local cache of registered model versions (fetched once per node);
- ``pyfunc``: the MLflow pyfunc wrapper the models are logged as.

No global mlflow URIs are set: every call names its tracking URL. Importing this package does not
import mlflow; the functions do, on first use.
"""

from app.tracking.client import LINEAGE_TAG_PREFIX, Tracking, resolve_alias
from app.tracking.models import load_forecast_model, load_pyfunc, log_forecast_model, warm_imports

__all__ = ["LINEAGE_TAG_PREFIX", "Tracking", "load_forecast_model", "load_pyfunc", "log_forecast_model", "resolve_alias", "warm_imports"]
