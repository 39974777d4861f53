"""A private `redis-server` process per test, on a free port, that tests may kill and restart.

Tests never touch the machine's shared Redis on 6379.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from spartan.local_redis import LocalRedis
from tests.support.ports import free_port


class RedisServer(LocalRedis):
    """On a free loopback port with its own scratch folder; AOF (fsync always) when asked for."""

    def __init__(self, *, appendonly: bool = False, directory: Path | None = None) -> None:
        super().__init__(directory or Path(tempfile.mkdtemp(prefix="spartan-redis-")), port=free_port(),
                         appendonly=appendonly, fsync="always")

    def start(self, timeout: float = 15.0) -> "RedisServer":
        super().start(timeout)
        return self

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
