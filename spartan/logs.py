"""Logging set-up: readable lines by default, one JSON object per line when configured.

Log records carry the user and RPC from `spartan.context` when there is one. Message
bodies and keys are never passed to the logger anywhere in the project.

grpc's own loggers (`grpc._cython.cygrpc`, `grpc.aio`, …) log a full traceback for
each request that fails inside grpc, e.g. one that does not parse on a service whose
requests grpc parses itself (health, reflection), which anyone can trigger. Their
records pass `GrpcLogLimiter`: one line per second per message, no traceback, with
the number left out. The project's own services parse requests themselves and log
malformed ones once a second per caller (`spartan.rpc.malformed`).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from spartan.config import LogConfig
from spartan.context import current_rpc, current_user


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.user = current_user.get()
        record.rpc = current_rpc.get()
        return True


class GrpcLogLimiter(logging.Filter):
    """At most one record per `interval` seconds per message template of grpc's loggers, without traceback."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[str, tuple[float, int]] = {}  # template -> (last logged, left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("grpc"):
            return True
        template = str(record.msg)[:200]
        now = time.monotonic()
        logged_at, left_out = self._seen.get(template, (-self.interval, 0))
        if now - logged_at < self.interval:
            self._seen[template] = (logged_at, left_out + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[template] = (now, 0)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if left_out:
            record.msg = f"{record.getMessage()} ({left_out} more like it not logged)"
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for extra in ("service", "user", "rpc"):
            value = getattr(record, extra, "")
            if value:
                entry[extra] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={getattr(record, k)}" for k in ("user", "rpc") if getattr(record, k, ""))
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if context:
            line += f" [{context}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(settings: LogConfig, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    handler.addFilter(GrpcLogLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    old_factory = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = old_factory(*args, **kwargs)
        record.service = service
        return record

    logging.setLogRecordFactory(factory)
