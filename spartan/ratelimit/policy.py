"""Rate policies: how many calls a user may make to an API, read from the config.

A `RatePolicy` is a token bucket's shape: `rate` tokens per `per_seconds`, holding
at most `burst`. The config's `rate` section yields one default policy plus
per-API overrides; the resolution rule is documented in docs/RATE_LIMITING.md:

- `rate.enabled: false` disables limiting entirely (no policies at all).
- If `rate.rate` > 0 the general form applies: `rate` per `per_seconds`, bucket
  `burst` (0 means equal to the rate, rounded up, at least 1).
- Otherwise the seed's `max_call_per_30_seconds_per_user: N` applies as N per
  30 seconds with burst N.
- `rate.apis.<api>` (`rate`, `per_seconds`, `burst`) overrides per API. Fields it
  leaves out inherit `rate` and `per_seconds` from the default; a missing or zero
  `burst` equals the override's rate (rounded up, at least 1) when it sets `rate`,
  and the default's burst otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spartan.config import Config, ConfigError

DEFAULT_API = "*"
"""Key of the default policy in the dict `policies_from_config` returns."""

SEED_WINDOW_SECONDS = 30.0
OVERRIDE_FIELDS = ("rate", "per_seconds", "burst")


@dataclass(frozen=True)
class RatePolicy:
    """`rate` tokens per `per_seconds`, at most `burst` tokens saved up."""

    rate: float
    per_seconds: float
    burst: int

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be greater than zero, got {self.rate}")
        if not self.per_seconds > 0:
            raise ValueError(f"per_seconds must be greater than zero, got {self.per_seconds}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a whole number of at least 1, got {self.burst!r}")

    @property
    def tokens_per_second(self) -> float:
        return self.rate / self.per_seconds

    def describe(self) -> str:
        """E.g. '3 per 30s (burst 3)', for logs and docs."""
        return f"{self.rate:g} per {self.per_seconds:g}s (burst {self.burst})"


def burst_for_rate(rate: float) -> int:
    """The bucket size used when none is configured: the rate, rounded up, at least 1."""
    return max(1, math.ceil(rate))


def default_policy(cfg: Config) -> RatePolicy:
    """The policy for every API without an override (ignores `rate.enabled`)."""
    settings = cfg.rate
    if settings.rate > 0:
        burst = settings.burst or burst_for_rate(settings.rate)
        return RatePolicy(rate=settings.rate, per_seconds=settings.per_seconds, burst=burst)
    seed_calls = cfg.max_call_per_30_seconds_per_user
    return RatePolicy(rate=float(seed_calls), per_seconds=SEED_WINDOW_SECONDS, burst=seed_calls)


def policies_from_config(cfg: Config) -> dict[str, RatePolicy]:
    """`{DEFAULT_API: default, <api>: override, ...}`, or `{}` when limiting is disabled.

    Raises `ConfigError` naming the key for an unknown or invalid override field.
    """
    if not cfg.rate.enabled:
        return {}
    default = default_policy(cfg)
    policies: dict[str, RatePolicy] = {DEFAULT_API: default}
    for api, fields in cfg.rate.apis.items():
        policies[api] = _override(default, api, fields)
    return policies


def policy_for(policies: Mapping[str, RatePolicy], api: str) -> RatePolicy | None:
    """The policy for `api`: its override, else the default; None when limiting is disabled."""
    found = policies.get(api)
    if found is not None:
        return found
    return policies.get(DEFAULT_API)


def with_overrides(
    policy: RatePolicy, *, limit: float | None = None, period: float | None = None, burst: int | None = None
) -> RatePolicy:
    """`policy` with explicit values replacing its fields (used by `@rate(limit=..., ...)`).

    A new `limit` without a `burst` also sets the burst to that limit (rounded up).
    """
    if limit is None and period is None and burst is None:
        return policy
    changes: dict[str, Any] = {}
    if limit is not None:
        changes["rate"] = float(limit)
        changes["burst"] = burst_for_rate(limit)
    if period is not None:
        changes["per_seconds"] = float(period)
    if burst is not None:
        changes["burst"] = burst
    return dataclasses.replace(policy, **changes)


def _override(default: RatePolicy, api: str, fields: Mapping[str, float]) -> RatePolicy:
    where = f"rate.apis.{api}"
    for name in fields:
        if name not in OVERRIDE_FIELDS:
            raise ConfigError(f"unknown setting: {where}.{name} (expected one of {', '.join(OVERRIDE_FIELDS)})")
    rate = fields.get("rate")
    per_seconds = fields.get("per_seconds")
    burst_value = fields.get("burst")
    for name, value in (("rate", rate), ("per_seconds", per_seconds)):
        if value is not None and not value > 0:
            raise ConfigError(f"{where}.{name}: must be greater than zero, got {value:g}")
    burst: int | None = None
    if burst_value is not None:
        if burst_value < 0 or not float(burst_value).is_integer():
            raise ConfigError(f"{where}.burst: must be a whole number of zero or more, got {burst_value:g}")
        burst = int(burst_value) or None
    if burst is None:
        burst = burst_for_rate(rate) if rate is not None else default.burst
    return RatePolicy(
        rate=float(rate) if rate is not None else default.rate,
        per_seconds=float(per_seconds) if per_seconds is not None else default.per_seconds,
        burst=burst,
    )
