"""`spartan-admin`: the operator's command for the key directory and secrets.

    spartan-admin enrol bob          # a one-time code that lets bob register his first keys
    spartan-admin reset-keys bob     # bob lost his device: prints the code his next login needs
    spartan-admin show-keys bob      # the fingerprint of bob's registered identity key
    spartan-admin gen-secret         # a random value for auth.token_secret
    spartan-admin gen-secret --file F  # write one to F once (auth.token_secret_file)

It reads config.yaml and `SPARTAN_*` variables exactly like the services do
(`--config`, `SPARTAN_SERVICES__PRESENCE`, the `tls` section) and talks to the
presence service, which gateways use as the key directory, signing its calls with
the service secret (`auth.service_secret` / `auth.service_secret_file`; for the
local launcher's stack, the `service_secret` file in its data folder). After a reset, sessions
signed for the old key stop working on every gateway within the gateways'
key-check bound, and peers see a key-change warning once the user logs in again.

Exit status: 0 done, 1 the operation failed (unknown user, no keys, presence
unreachable), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from spartan.config import Config, ConfigError, load_config
from spartan.crypto.identity import fingerprint
from spartan.launcher import SERVICE_SECRET_FILE, data_root
from spartan.program import argument_parser
from spartan.rpc.balancing import PRESENCE, service_channel
from spartan.rpc.service_auth import ServiceSecretError, signing_interceptors
from spartan.rpc.service_auth import resolve as resolve_service_secret
from spartan.token_secret import TokenSecretError, write_new_secret
from spartan.v1 import pb, rpc

T = TypeVar("T")
PROG = "spartan-admin"
SECRET_BYTES = 32
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
KEY_CHECK_BOUND_SECONDS = 5  # services.gateway.auth.KEY_CHECK_TTL_SECONDS


class AdminError(Exception):
    """An operation failed; the message is for the operator."""


def parser() -> argparse.ArgumentParser:
    top = argument_parser(PROG, "Spartan Messenger operator commands.")
    top.add_argument("--config", help="path to config.yaml (default: ./config.yaml or $SPARTAN_CONFIG)")
    top.add_argument("--presence", help="presence service address host:port (default: services.presence)")
    top.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the presence service")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    top.add_argument(
        "--data-dir",
        help="the local launcher's data folder, where its service_secret is "
        "(default .spartan; used when the config names no service secret)",
    )
    enrol = commands.add_parser(
        "enrol",
        help="issue a one-time code that lets a user register their first keys",
        description="Print a one-time enrolment code for USER (who has no registered keys). Give it to USER: "
        "their first login needs it (client: --enrolment-code CODE). It expires after "
        "auth.enrolment_code_ttl_seconds; issuing another replaces it.",
    )
    enrol.add_argument("user")
    reset = commands.add_parser(
        "reset-keys",
        help="forget a user's registered keys (lost or compromised device)",
        description="Forget USER's registered public keys and print a one-time enrolment code: only a login "
        f"with that code registers new keys. Sessions of the old key end on every gateway within "
        f"{KEY_CHECK_BOUND_SECONDS} s; peers are warned that the key changed.",
    )
    reset.add_argument("user")
    show = commands.add_parser(
        "show-keys",
        help="print the fingerprint of a user's registered identity key",
        description="Print the fingerprint of USER's registered identity key.",
    )
    show.add_argument("user")
    gen = commands.add_parser(
        "gen-secret",
        help="print a random token secret for auth.token_secret",
        description="Print a random 32-byte hex token secret (SPARTAN_AUTH__TOKEN_SECRET). With --file, write it "
        "to FILE instead (mode 0400), unless FILE already holds one (auth.token_secret_file).",
    )
    gen.add_argument("--file", help="write the secret here, once; an existing secret is kept")
    return top


def grouped(hex_text: str, size: int = 4) -> str:
    return " ".join(hex_text[i : i + size] for i in range(0, len(hex_text), size))


def gen_secret() -> str:
    return secrets.token_hex(SECRET_BYTES)


async def reset_keys(presence: rpc.PresenceStub, user: str, timeout: float) -> tuple[str, pb.EnrolmentCode]:
    """Reset `user`'s keys; returns the fingerprint of the keys that were registered and the new code."""
    old = await presence.GetKeys(pb.UserRef(user=user), timeout=timeout)
    code = await presence.ResetKeys(pb.UserRef(user=user), timeout=timeout)
    return fingerprint(old.identity_key), code


async def enrol(presence: rpc.PresenceStub, user: str, timeout: float) -> pb.EnrolmentCode:
    return await presence.IssueEnrolmentCode(pb.UserRef(user=user), timeout=timeout)


def expiry(code: pb.EnrolmentCode) -> str:
    when = datetime.fromtimestamp(code.expires_at_us / 1e6, tz=UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def service_secret(config: Config, data_dir: str | None) -> str:
    """The configured service secret, else the one the local launcher keeps in its data folder."""
    auth = config.auth
    if not (auth.service_secret or auth.service_secret_file):
        local = data_root(config, data_dir) / SERVICE_SECRET_FILE
        if local.exists():
            auth = dataclasses.replace(auth, service_secret_file=str(local))
    try:
        return resolve_service_secret(auth)
    except ServiceSecretError as exc:
        raise AdminError(str(exc)) from None


async def show_keys(presence: rpc.PresenceStub, user: str, timeout: float) -> str:
    keys = await presence.GetKeys(pb.UserRef(user=user), timeout=timeout)
    return fingerprint(keys.identity_key)


async def with_presence(
    config: Config,
    address: str,
    timeout: float,
    secret: str,
    action: Callable[[rpc.PresenceStub], Coroutine[Any, Any, T]],
) -> T:
    channel = service_channel(address, PRESENCE, config.tls, signing_interceptors(secret))
    try:
        return await action(rpc.PresenceStub(channel))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise AdminError(
                f"cannot reach the presence service at {address}: {exc.details()}"
                " (is it running? check services.presence, --presence and the tls settings)"
            ) from None
        raise AdminError(exc.details() or exc.code().name) from None
    finally:
        await channel.close()


def run(args: argparse.Namespace) -> str:
    if args.command == "gen-secret":
        if not args.file:
            return gen_secret()
        try:
            written = write_new_secret(args.file, gen_secret())
        except TokenSecretError as exc:
            raise AdminError(str(exc)) from None
        return f"token secret {'written to' if written else 'kept in'} {args.file}"
    config = load_config(args.config)
    address = args.presence or config.services.presence
    secret = service_secret(config, args.data_dir)
    user = args.user
    if args.command == "show-keys":
        found = asyncio.run(
            with_presence(config, address, args.timeout, secret, lambda stub: show_keys(stub, user, args.timeout))
        )
        return f"{user}: identity key fingerprint {grouped(found)}"
    if args.command == "enrol":
        code = asyncio.run(
            with_presence(config, address, args.timeout, secret, lambda stub: enrol(stub, user, args.timeout))
        )
        return (
            f"Enrolment code for {user}: {code.code} (one use, expires {expiry(code)}). "
            f"{user} starts the client with --enrolment-code {code.code}"
        )
    old, code = asyncio.run(
        with_presence(config, address, args.timeout, secret, lambda stub: reset_keys(stub, user, args.timeout))
    )
    return (
        f"Reset the keys of {user} (was {grouped(old)}); sessions of the old key end within "
        f"{KEY_CHECK_BOUND_SECONDS} s.\nNew keys register only with the enrolment code {code.code} "
        f"(one use, expires {expiry(code)}): {user} starts the client with --enrolment-code {code.code}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        print(run(args))
    except ConfigError as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except AdminError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    raise SystemExit(EXIT_OK)


if __name__ == "__main__":
    main()
