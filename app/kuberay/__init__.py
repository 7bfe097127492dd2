"""KubeRay: the product on Kubernetes (the role of a "kuberay-api").

- :mod:`app.kuberay.client`: create, watch, patch and delete RayJob / RayService / RayCluster
  resources through the ``kubernetes`` client's ``CustomObjectsApi`` (used by the CLI and the KubeRay job runner).
- :mod:`app.kuberay.render`: generate the RayService ``serveConfigV2`` from ``serve_configs/``
  (``python -m app.kuberay.render``), the single source of truth for Serve on both sides.
- :mod:`app.kuberay.manifests`: load rendered manifests, make RayJob runs from templates, and the
  offline checks the tests run on every rendered overlay.
- :mod:`app.kuberay.runner`: :class:`~app.kuberay.runner.KubeRayRunner`, the job runner (see
  :mod:`app.orchestration.runner`) that runs each job as a RayJob made from its template.
- :mod:`app.kuberay.cli`: ``greenhouse kuberay render|apply|status|submit|delete``.

Importing this package imports nothing heavy; the submodules import ``kubernetes`` lazily.
"""
