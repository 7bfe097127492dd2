"""Shared test helpers, imported by test modules and conftest files (test modules never import
each other): real engines (:mod:`.engines`), settings on the real stack (:mod:`.stack`), seeded
lakes (:mod:`.lake`), fake Kubernetes/Ray Jobs APIs (:mod:`.fake_kube`, :mod:`.fake_ray_jobs`), and the
pandas reference the feature engine is held to (:mod:`.pandas_reference`, also bench/preprocess's
baseline)."""
