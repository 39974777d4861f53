"""Offline checks of the proxies and probes the deployment uses: healthcheck, nginx, Prometheus.

The real `nginx -t` and `promtool` check the rendered configs, a real nginx proxies
real gRPC health checks with the local config, and the container healthcheck's exit
status follows the gRPC health service (also over TLS).
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy.nginx.render import nginx_command, render_compose_conf, write_local_conf
from deploy.prometheus.render import render_compose_config, render_local_config
from tests.support.ports import free_port, wait_for_port
from tests.deploy.test_files import DEPLOY, HEALTHCHECK, METRICS_PORT, compose, spartan_compose_services


# --- healthcheck and nginx -----------------------------------------------------------------------

class HealthServer:
    """A real gRPC server that serves only the standard health service."""

    def __init__(self, options: list[tuple[str, int]] | None = None) -> None:
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options or [])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def set(self, service: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(service, status)

    def stop(self) -> None:
        self.server.stop(None)


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    server = HealthServer()
    try:
        yield server
    finally:
        server.stop()


def run_healthcheck(address: str, service: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), address, "--service", service, "--timeout", "5"],
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_exit_status_follows_the_health_service(health_server: HealthServer) -> None:
    address = f"127.0.0.1:{health_server.port}"
    health_server.set("spartan.v1.Spartan", True)
    assert run_healthcheck(address, "spartan.v1.Spartan").returncode == 0
    health_server.set("spartan.v1.Spartan", False)
    result = run_healthcheck(address, "spartan.v1.Spartan")
    assert result.returncode == 1 and "NOT_SERVING" in result.stderr
    assert run_healthcheck(address, "spartan.v1.Unknown").returncode == 1
    assert run_healthcheck(f"127.0.0.1:{free_port()}", "").returncode == 1


def test_healthcheck_speaks_tls_with_a_ca(tmp_path: Path) -> None:
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=gateway.spartan", "-addext", "subjectAltName=DNS:gateway.spartan",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    server.start()
    try:
        base = [sys.executable, str(HEALTHCHECK), f"127.0.0.1:{port}", "--timeout", "5"]
        tls = ["--tls-ca", str(cert), "--server-name", "gateway.spartan"]
        assert subprocess.run(base + tls, capture_output=True, timeout=30).returncode == 0
        assert subprocess.run(base, capture_output=True, timeout=30).returncode == 1  # plaintext against TLS
    finally:
        server.stop(None)


def nginx_test(conf: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*nginx_command(str(conf), str(workdir)), *extra, "-t"], capture_output=True, text=True,
                          timeout=60)


def test_compose_nginx_conf_is_rendered_and_valid(tmp_path: Path) -> None:
    committed = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert committed == render_compose_conf(), "regenerate: python3 deploy/nginx/render.py compose > deploy/nginx/nginx.conf"
    gateways = {n for n, s in spartan_compose_services().items() if s["command"][0] == "spartan-gateway"}
    assert set(re.findall(r"^\s+server (\S+) ", committed, re.M)) == {f"{name}:3000" for name in gateways}
    assert "grpc_pass grpc://gateways;" in committed and re.search(r"listen 3000 http2;", committed)
    # Container names do not resolve here; everything else is checked by the real nginx.
    conf = tmp_path / "nginx.conf"
    conf.write_text(re.sub(r"gateway-\d+:3000", "127.0.0.1:3000", committed))
    result = nginx_test(conf, tmp_path, "-g", f"pid {tmp_path}/nginx.pid;")
    assert result.returncode == 0, result.stderr


def test_local_nginx_conf_is_valid_and_shares_the_proxy_settings(tmp_path: Path) -> None:
    conf = Path(write_local_conf(free_port(), [free_port(), free_port()], str(tmp_path)))
    text = conf.read_text()
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "daemon off;" in text and f"pid {tmp_path}/nginx.pid;" in text
    proxy = re.search(r"location / \{.*?\n        \}", render_compose_conf(), re.S)
    assert proxy and proxy[0] in text


def test_local_nginx_proxies_grpc_and_skips_a_dead_gateway(tmp_path: Path, health_server: HealthServer) -> None:
    health_server.set("spartan.v1.Spartan", True)
    listen, dead = free_port(), free_port()
    conf = write_local_conf(listen, [dead, health_server.port], str(tmp_path))
    nginx = subprocess.Popen(nginx_command(conf, str(tmp_path)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(listen)
        for _ in range(4):
            result = run_healthcheck(f"127.0.0.1:{listen}", "spartan.v1.Spartan")
            assert result.returncode == 0, result.stderr + (tmp_path / "error.log").read_text()
        health_server.set("spartan.v1.Spartan", False)
        assert run_healthcheck(f"127.0.0.1:{listen}", "spartan.v1.Spartan").returncode == 1
    finally:
        nginx.terminate()
        nginx.wait(timeout=15)
    # The dead gateway was tried, refused, and the same call went on to the live one.
    assert f"upstream=127.0.0.1:{dead}, 127.0.0.1:{health_server.port}" in (tmp_path / "access.log").read_text()
    assert "grpc_status=0" in (tmp_path / "access.log").read_text()


def test_stream_through_nginx_ends_unavailable_at_the_gateways_connection_age(tmp_path: Path) -> None:
    """Gateways recycle connections (max_connection_age); through nginx the stream must end with
    UNAVAILABLE, the status clients reconnect on, not be cut by a proxy timeout or turned into INTERNAL."""
    server = HealthServer(options=[("grpc.max_connection_age_ms", 1000), ("grpc.max_connection_age_grace_ms", 1000)])
    listen = free_port()
    nginx = subprocess.Popen(nginx_command(write_local_conf(listen, [server.port], str(tmp_path)), str(tmp_path)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(listen)
        with grpc.insecure_channel(f"127.0.0.1:{listen}") as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            with pytest.raises(grpc.RpcError) as ended:
                for reply in stream:
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value.details()
    finally:
        nginx.terminate()
        nginx.wait(timeout=15)
        server.stop()


# --- Prometheus -----------------------------------------------------------------------------------

def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)


def test_compose_prometheus_config_scrapes_every_service() -> None:
    path = DEPLOY / "prometheus" / "prometheus.yml"
    assert path.read_text() == render_compose_config(), \
        "regenerate: python3 deploy/prometheus/render.py compose > deploy/prometheus/prometheus.yml"
    result = promtool_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = yaml.safe_load(path.read_text())["scrape_configs"]
    targets = {t for job in jobs for group in job.get("static_configs", ()) for t in group["targets"]}
    # Replicated services are found through DNS: one target per replica under the service's name.
    discovered = {f"{name}:{group['port']}" for job in jobs for group in job.get("dns_sd_configs", ())
                  for name in group["names"]}
    services = spartan_compose_services()
    assert targets - {"localhost:9090"} | discovered == {f"{name}:{METRICS_PORT}" for name in services}
    assert {name for name, svc in services.items() if svc.get("deploy", {}).get("replicas", 1) > 1} == \
        {address.split(":")[0] for address in discovered}
    prometheus = compose()["services"]["prometheus"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]


def test_local_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(render_local_config({"gateway": ["127.0.0.1:9101", "127.0.0.1:9102"],
                                         "presence": ["127.0.0.1:9103"], "history": ["127.0.0.1:9104"]}))
    result = promtool_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(path.read_text())["global"]["scrape_interval"] == "1s"
