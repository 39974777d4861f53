"""`python3 client.py alice`: log in as alice with her key and chat.

The server address comes from `--server host:port[,host:port…]` (several gateways or
one load balancer), else `SPARTAN_SERVER`, else localhost and the `port` of
config.yaml when there is one. Keys live under `~/.spartan/keys` (`--key-dir` or
`SPARTAN_KEY_DIR` to change); a key file protected by a passphrase is unlocked at start
(`spartan.client.passphrase`; `--set-passphrase` adds, changes or removes one). Ctrl-D,
Ctrl-C and /quit all leave cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from pathlib import Path

import grpc

from spartan.client.api import GatewayApi
from spartan.client.chat import Chat, say
from spartan.client.commands import Quit, run_command
from spartan.client.connection import Connection
from spartan.client.e2e import ClientCrypto
from spartan.client.explain import not_running, refused_connection, unknown_user
from spartan.client.passphrase import NEW_PASSPHRASE_ENV, PASSPHRASE_ENV, passphrase_source, set_passphrase
from spartan.client.receiver import Receiver
from spartan.client.state import ClientState
from spartan.client.terminal import open_terminal
from spartan.config import Config, ConfigError, TlsConfig, load_config
from spartan.crypto.keystore import KeyStoreError, key_path, load_or_create
from spartan.crypto.pins import PinStore
from spartan.crypto.prekeys import OwnPrekeys, prekeys_path
from spartan.errors import SpartanError
from spartan.program import argument_parser
from spartan.rpc.credentials import explain_connect_error
from spartan.v1 import pb
from spartan.validation import check_name

CONNECT_TIMEOUT_SECONDS = 15.0
CATCH_UP_TIMEOUT_SECONDS = 30.0  # longest the start waits for what arrived while away before going on
SETTLE_SECONDS = 10.0  # longest a quit waits for lines that can go at once (not for the rate limit)
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser("client.py", "Spartan Messenger terminal client.")
    parser.add_argument("user", help="who you are (your key pair is created on first use)")
    parser.add_argument(
        "--server",
        default=os.environ.get("SPARTAN_SERVER", ""),
        help="gateway address(es), comma-separated host:port (default: localhost and config port)",
    )
    parser.add_argument("--config", help="config.yaml to read the default port and TLS settings from")
    parser.add_argument("--key-dir", help="where your keys are kept (default ~/.spartan/keys or $SPARTAN_KEY_DIR)")
    parser.add_argument("--ca", help="CA certificate to verify the server's TLS certificate (turns TLS on)")
    parser.add_argument(
        "--server-name",
        default="",
        help="host name to expect in the server's TLS certificate (default: the host of --server)",
    )
    parser.add_argument("--enrolment-code", default="", help="one-time code from the operator, if the server asks")
    parser.add_argument(
        "--passphrase-file",
        help=f"read your key's passphrase from the first line of this file (else ${PASSPHRASE_ENV}, else a prompt)",
    )
    parser.add_argument(
        "--set-passphrase",
        action="store_true",
        help=f"add, change or remove your key's passphrase, then exit (new one typed twice, or ${NEW_PASSPHRASE_ENV})",
    )
    return parser.parse_args(argv)


def load_optional_config(path: str | None) -> Config | None:
    if path is None and not Path("config.yaml").exists() and "SPARTAN_CONFIG" not in os.environ:
        return None
    return load_config(path)


def server_addresses(args: argparse.Namespace, config: Config | None) -> list[str]:
    if args.server:
        return [a.strip() for a in args.server.split(",") if a.strip()]
    return [f"localhost:{config.port if config else 3000}"]


def sentence(text: str) -> str:
    """`text` as one sentence: capital first letter, final full stop."""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[-1]


async def chat_loop(chat: Chat) -> None:
    while True:
        entered = await chat.terminal.ask(chat.prompt)
        for line in LINE_BREAK.split(entered):  # a multi-line paste: one message (or command) per line, in order
            if not line.strip():
                continue
            if line.startswith("/"):
                await run_command(chat, line)
            else:
                await chat.send(line)


async def run(args: argparse.Namespace) -> int:
    try:
        check_name(args.user)
        config = load_optional_config(args.config)
    except (SpartanError, ConfigError) as exc:
        print(say(str(exc)), file=sys.stderr)
        return 2
    try:
        if args.set_passphrase:
            print(say(set_passphrase(args.user, args.key_dir, args.passphrase_file)))
            return 0
        unlock = passphrase_source(args.user, args.key_dir, args.passphrase_file)
        identity, created = load_or_create(args.user, args.key_dir, passphrase=unlock)
        prekeys = OwnPrekeys.for_user(identity, args.key_dir)
    except KeyStoreError as exc:  # a wrong or missing passphrase, a key file others can read: nothing changed
        print(say(sentence(str(exc))), file=sys.stderr)
        return 2
    tls = config.tls if config else TlsConfig()
    if args.ca:
        tls = TlsConfig(ca=args.ca)
    addresses = server_addresses(args, config)
    terminal = open_terminal()
    if args.ca and not Path(args.ca).is_file():
        print(say(f"The CA certificate {args.ca} does not exist."), file=sys.stderr)
        return 2
    conn = Connection(addresses, identity, tls, args.enrolment_code, server_name=args.server_name, prekeys=prekeys)
    try:
        await conn.open()
    except SpartanError as exc:
        hint = explain_connect_error(exc.message, tls)
        if exc.code == grpc.StatusCode.UNAVAILABLE and refused_connection(exc.message) and not hint:
            print(say(not_running(addresses)), file=sys.stderr)
        elif exc.code == grpc.StatusCode.NOT_FOUND:
            forget_new_key(args.user, args.key_dir, created)
            print(say(unknown_user(args.user, config.users if config else [])), file=sys.stderr)
            return 1
        elif exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(say(f"Could not connect to Spartan Server at {', '.join(addresses)}: {exc.message}"), file=sys.stderr)
        else:  # the server answered: the login itself was refused
            print(say(f"Could not log in as {args.user}: {exc.message}"), file=sys.stderr)
        if hint:
            print(say(f"Hint: {hint}."), file=sys.stderr)
        return 1
    crypto = ClientCrypto(
        identity, PinStore(args.user, args.key_dir), GatewayApi(conn).keys_of, lambda t: chat.notice(t), prekeys
    )
    state = ClientState.for_user(args.user, args.key_dir)
    chat = Chat(conn, terminal, crypto, config.gateway.max_message_bytes if config else 65536, state)
    receiver = Receiver(conn, chat.handle, chat.cursors, chat.stream_notice)
    with terminal.session():
        receiver.start()
        chat.acks.start()
        try:
            await receiver.wait_connected(CONNECT_TIMEOUT_SECONDS)
            chat.notice(f"Connected to Spartan Server at port {port_of(conn.address)}.")
            listing = await chat.api.list_users(pb.ListUsersRequest())
            chat.users = [u.name for u in listing.users]
            chat.groups = list(listing.groups)
            chat.notice("User list: " + ",".join(u for u in chat.users if u != chat.me))
            await catch_up(chat)
            await chat.choose_peer(lambda line: run_command(chat, line))
            await chat_loop(chat)
        except (EOFError, KeyboardInterrupt, Quit):
            pass
        except (TimeoutError, RuntimeError) as exc:
            chat.notice(f"Could not open the message stream: {exc}")
            return 1
        except SpartanError as exc:
            chat.notice(f"Lost the server: {exc.message}")
            return 1
        finally:
            await leave_outbox(chat)
            await receiver.stop()
            await chat.acks.stop()
            chat.group_keys.close()
            await conn.close()
            state.close()
    return 0


async def catch_up(chat: Chat) -> None:
    """Wait until the stream replayed what waited for us, learn who asks to chat, say who else wrote
    (a request's own prompt already names its sender), send what waited for keys."""
    try:
        await asyncio.wait_for(chat.synced.wait(), CATCH_UP_TIMEOUT_SECONDS)
    except TimeoutError:
        chat.notice("Still fetching messages that arrived while you were away; they will appear as they come.")
    pending = await chat.api.pending_requests(pb.PendingRequestsRequest())
    chat.pending.extend(r for r in pending.requesters if r not in chat.pending)
    chat.report_away()
    chat.outgoing.start()  # sends what an earlier run left unsent, then what is typed


async def leave_outbox(chat: Chat) -> None:
    """Quitting: let lines that can go now go, then say how many stay on disk for the next start."""
    await chat.outgoing.settle(SETTLE_SECONDS)
    await chat.outgoing.stop()
    unsent = chat.outgoing.unsent()
    if unsent:
        chat.notice(
            f"{unsent} message{'s were' if unsent != 1 else ' was'} not sent yet; kept, "
            f"{'they go' if unsent != 1 else 'it goes'} out the next time you start client.py {chat.me}."
        )


def forget_new_key(user: str, directory: str | None, created: bool) -> None:
    """A key made just now for a name the server does not know is useless: do not leave it behind."""
    if created:
        key_path(user, directory).unlink(missing_ok=True)
        path = prekeys_path(user, directory)
        for made in (path, path.with_name(path.name + ".lock")):
            made.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:
        code = 0
    raise SystemExit(code)


if __name__ == "__main__":
    main()
