"""Orchestration: the product's jobs and one way to run them on a cluster.

- :mod:`app.orchestration.registry`: the jobs (name, ``python -m`` module, description), once;
- :mod:`app.orchestration.runner`: the :class:`~app.orchestration.runner.JobRunner` interface;
- :mod:`app.orchestration.ray_jobs`: its Ray Jobs API implementation (the KubeRay RayJob one is
  :mod:`app.kuberay.runner`, which builds on this package).

``greenhouse submit``, ``greenhouse kuberay submit`` and the Airflow DAG all go through a runner.
Importing this package imports nothing.
"""
