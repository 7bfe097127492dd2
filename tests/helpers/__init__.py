"""Shared test helpers, imported by test modules and conftest files (test modules never import
each other): real engines (:mod:`.engines`), settings on the real stack (:mod:`.stack`), seeded
lakes (:mod:`.lake`), and fake Kubernetes/Ray Jobs APIs (:mod:`.fake_kube`, :mod:`.fake_ray_jobs`)."""
