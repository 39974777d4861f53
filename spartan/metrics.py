"""Prometheus metrics shared by every service, named by Prometheus conventions.

Metrics are module-level singletons (prometheus-client registers each name once per
process). `start_metrics_server` exposes them over HTTP at `/metrics` when a port is
configured.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPCS = Counter("spartan_rpcs_total", "RPCs handled, by method and final status code.", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "spartan_rpc_duration_seconds",
    "Time to handle unary RPCs.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ACTIVE_STREAMS = Gauge("spartan_active_streams", "ReceiveMsg streams open on this gateway.")
MESSAGES_SENT = Counter(
    "spartan_messages_sent_total", "Messages accepted from senders and stored in history.", ["kind"]
)
MESSAGES_DELIVERED = Counter("spartan_messages_delivered_total", "Messages written to client streams.", ["kind"])
DELIVERY_SECONDS = Histogram(
    "spartan_delivery_latency_seconds",
    "From acceptance by the sender's gateway to the write on the receiver's stream.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
SLOW_CONSUMERS = Counter(
    "spartan_slow_consumer_disconnects_total", "Streams closed because the client fell too far behind."
)
REDIS_ERRORS = Counter(
    "spartan_redis_errors_total", "Redis commands that failed (connection or timeout).", ["operation"]
)
PIPELINE_BATCH = Histogram(
    "spartan_redis_pipeline_batch_commands",
    "Commands written to Redis together by the send path's auto-pipeline.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PUBSUB_RECONNECTS = Counter(
    "spartan_pubsub_reconnects_total", "Times the gateway re-established its pub/sub connection."
)
HISTORY_REPLAYED = Counter("spartan_history_replayed_messages_total", "Messages replayed from history on (re)connect.")


def start_metrics_server(host: str, port: int) -> None:
    """Serve /metrics on host:port (no-op for port 0)."""
    if port:
        start_http_server(port, addr=host)
