"""Prometheus scrape configs for the services (see render.py)."""
