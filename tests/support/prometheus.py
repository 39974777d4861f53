"""A real Prometheus server scraping local services, and helpers to read `/metrics` directly.

The scrape config comes from the project's renderer (`deploy/prometheus/render.py`),
so the tests check the config the deployment ships. Prometheus runs as the current
user on a free loopback port with its TSDB inside the test's folder; the tests talk
to its HTTP API (`/api/v1/targets`, `/api/v1/query`) with the standard library only.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from deploy.prometheus.render import render_local_config
from tests.support.ports import free_port, stop_process, wait_for_port

PROMETHEUS_BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"
T = TypeVar("T")


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs built by the tests
        return response.read().decode()


class Prometheus:
    """One Prometheus process; `targets` maps a job name to `host:port` metrics addresses."""

    def __init__(self, workdir: Path, targets: dict[str, list[str]], scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(render_local_config(targets, scrape_interval))
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "Prometheus":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS_BINARY, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            wait_for_port(self.port, timeout)
            self.wait_until(lambda: "ready" in http_get(f"{self.url}/-/ready").lower() or None, timeout)
        except (TimeoutError, OSError):
            self.stop()
            raise RuntimeError(f"prometheus did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns the `data` member of a successful answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = json.loads(http_get(f"{self.url}/api/v1/{path}{query}"))
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus API {path}: {answer}")
        return answer["data"]

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def query_value(self, expression: str) -> float | None:
        """The value of an instant query that yields one sample (None when it yields none)."""
        result = self.api("query", query=expression)["result"]
        if not result:
            return None
        return float(result[0]["value"][1])

    def wait_until(self, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.5) -> T:
        """Poll `probe` until it returns something other than None (errors count as not yet)."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = probe()
            except (OSError, ValueError, RuntimeError) as exc:
                last_error, value = exc, None
            if value is not None:
                return value
            time.sleep(interval)
        raise TimeoutError(f"condition not met within {timeout}s (last error: {last_error})\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.process, timeout=timeout)


# --- reading /metrics directly ------------------------------------------------------------------

@dataclass(frozen=True)
class Exposition:
    """One scrape of a `/metrics` page: declared families (name -> type) and samples.

    Counters are keyed by their exposed name (`..._total`), as dashboards query them.
    """

    types: dict[str, str]
    samples: list[tuple[str, dict[str, str], float]]  # (name, labels, value)

    def values(self, name: str) -> list[float]:
        return [value for sample, _, value in self.samples if sample == name]

    def total(self, name: str) -> float:
        return sum(self.values(name))


def parse_exposition(text: str) -> Exposition:
    """Parsed by prometheus_client's own parser, the reference reader of this format."""
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(text):
        exposed = f"{family.name}_total" if family.type == "counter" else family.name
        types[exposed] = family.type
        samples.extend((sample.name, dict(sample.labels), sample.value) for sample in family.samples)
    return Exposition(types, samples)


def scrape(port: int, host: str = "127.0.0.1") -> Exposition:
    return parse_exposition(http_get(f"http://{host}:{port}/metrics"))
