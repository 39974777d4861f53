"""Clients in their own OS processes, as real users are.

Running a heavy sender and a receiver inside one test process couples them through
that process's gRPC client internals; a separate process per client keeps a test
about the server honest.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# argv: address user key_dir. Logs in, opens the stream, prints "subscribed", never reads again.
STUCK_READER = """
import asyncio, sys
from spartan.client.connection import Connection
from spartan.config import TlsConfig
from spartan.crypto.keystore import load_or_create
from spartan.v1 import pb

async def main():
    identity, _ = load_or_create(sys.argv[2], sys.argv[3])
    conn = Connection([sys.argv[1]], identity, TlsConfig())
    await conn.open()
    call = conn.stub.ReceiveMsg(pb.Message(sender=sys.argv[2]), metadata=conn.metadata)
    await call.initial_metadata()
    print("subscribed", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""

# argv: address user key_dir. Prints "ready", then one line per chat message received: its text.
READER = """
import asyncio, sys
from spartan.client.headless import HeadlessClient

async def main():
    client = await HeadlessClient(sys.argv[2], [sys.argv[1]], sys.argv[3], encrypt=False).start()
    print("ready", flush=True)
    shown = 0
    while True:
        await client.wait_for(shown + 1, timeout=3600)
        for received in client.received[shown:]:
            print(received.text, flush=True)
        shown = len(client.received)

asyncio.run(main())
"""


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """Start a client script; returns once it printed its first line (ready/subscribed)."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    if first not in ("ready", "subscribed"):
        process.kill()
        raise RuntimeError(f"client process did not start (printed {first!r})")
    return process
