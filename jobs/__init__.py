"""Job shims (``python -m jobs.<name>``): each runs ``main()`` of :mod:`app.entrypoints.<name>`.

The list of jobs is :data:`app.orchestration.registry.JOBS`; the library never imports this package.
"""
