"""Grafana dashboards as code: specs (``definitions``), Grafana JSON (``builder``), a PNG (``render``).

``python -m app.observability.dashboards --out stack/grafana/dashboards`` regenerates the committed
JSON; ``python -m app.observability.dashboards.render`` draws the fleet overview from Prometheus.
"""
