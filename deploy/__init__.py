"""Deployment files (compose, Kubernetes, nginx, Prometheus) and the helpers that render them.

A package only so tests can `from deploy.nginx.render import render_local_conf`;
it is not part of the installed product.
"""
