"""The gateways' shared token secret: where it comes from and which values are refused.

Every gateway signs and verifies session tokens with one HMAC secret
(`auth.token_secret`), or reads it from a file (`auth.token_secret_file`), which is
how compose's one-shot `token-secret` service and mounted Kubernetes Secrets hand
it over without putting it in the environment. A secret anyone can read in this
repository (the Kubernetes placeholder, an old compose default) would let anyone
mint tokens, so gateways refuse it at start with one line that says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from spartan.config import AuthConfig

MIN_LENGTH = 32
HOW_TO = "set it to the output of: spartan-admin gen-secret"
# Markers of every example value the repository has carried for this setting.
REPOSITORY_MARKERS = ("replace-me", "change-me", "dev-only")


class TokenSecretError(ValueError):
    """The token secret is missing, unreadable or known to the public; the message says what to do."""


def refusal(secret: str) -> str | None:
    """Why `secret` must not sign tokens, or None when it may."""
    lowered = secret.lower()
    for marker in REPOSITORY_MARKERS:
        if marker in lowered:
            return f"is the example value from the repository ({marker!r}); {HOW_TO}"
    if len(secret) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters; {HOW_TO}"
    return None


def read_secret_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenSecretError(f"auth.token_secret_file {path}: cannot read it ({exc.strerror or exc})") from None
    if not text:
        raise TokenSecretError(f"auth.token_secret_file {path} is empty; {HOW_TO}")
    return text


def resolve(auth: AuthConfig) -> str:
    """The secret a gateway runs with; raises TokenSecretError with a one-line reason."""
    if auth.token_secret and auth.token_secret_file:
        raise TokenSecretError("auth.token_secret and auth.token_secret_file are both set; keep one")
    if auth.token_secret_file:
        secret, where = read_secret_file(auth.token_secret_file), f"auth.token_secret_file {auth.token_secret_file}"
    elif auth.token_secret:
        secret, where = auth.token_secret, "auth.token_secret"
    else:
        raise TokenSecretError(
            "auth.token_secret is not set; gateways must share one secret "
            f"(SPARTAN_AUTH__TOKEN_SECRET or SPARTAN_AUTH__TOKEN_SECRET_FILE; {HOW_TO})"
        )
    reason = refusal(secret)
    if reason:
        raise TokenSecretError(f"{where} {reason}")
    return secret


def write_new_secret(path: str, secret: str) -> bool:
    """Write `secret` to `path` (mode 0400) unless a secret is already there; True when written.

    Exclusive creation, so two starts racing on one volume keep the first secret.
    """
    target = Path(path)
    try:
        if target.exists() and target.read_text(encoding="utf-8").strip():
            return False
        target.unlink(missing_ok=True)  # an empty file left by an interrupted start
        with open(target, "x", encoding="utf-8", opener=lambda p, flags: os.open(p, flags, 0o400)) as handle:
            handle.write(secret + "\n")
    except FileExistsError:
        return False
    except OSError as exc:
        raise TokenSecretError(f"cannot write the token secret to {path}: {exc.strerror or exc}") from None
    return True
