"""Orchestration: submitting the product's jobs to a Ray cluster (Jobs API) and waiting for them."""
