"""Observability: the product's metrics, monitors and alerting helpers. Importing it registers
nothing and starts nothing."""
