"""nginx as the L7 gRPC load balancer in front of the gateways (see render.py)."""
