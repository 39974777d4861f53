"""A login flood from its own process: `python -m tests.support.login_flood ADDRESS SECONDS RATE USER [USER...]`.

Alternates `GetChallenge` and a `Login` with a made-up signature (over a real
challenge when it got one) at RATE attempts a second (paced, so the flood's own CPU
stays the same whatever the server answers), cycling through the user names; prints
one JSON line: the count of each status code, one rate-limit refusal (details and
trailers) and how long it ran.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter

import grpc

from spartan.v1 import pb, rpc

CONCURRENCY = 32


async def flood(address: str, seconds: float, rate: float, users: list[str]) -> dict[str, object]:
    counts: Counter[str] = Counter()
    refusal: dict[str, object] = {}
    names = itertools.cycle(users)
    slots = itertools.count()
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.SpartanStub(channel)

        async def attempt(call: grpc.aio.UnaryUnaryCall) -> object | None:
            try:
                reply = await call
            except grpc.aio.AioRpcError as exc:
                counts[exc.code().name] += 1
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not refusal:
                    # Text trailers only: the binary grpc-status-details-bin has no JSON form.
                    text = {key: value for key, value in exc.trailing_metadata() or () if isinstance(value, str)}
                    refusal.update(details=exc.details(), trailers=text)
                return None
            counts["OK"] += 1
            return reply

        async def paced() -> bool:
            due = started + next(slots) / rate
            if due - started >= seconds:
                return False
            await asyncio.sleep(max(due - time.monotonic(), 0))
            return True

        async def worker() -> None:
            while await paced():
                user = next(names)
                challenge = await attempt(stub.GetChallenge(pb.ChallengeRequest(user=user), timeout=10))
                nonce = challenge.nonce if isinstance(challenge, pb.Challenge) else b"\x01" + b"\x00" * 40
                if not await paced():
                    break
                await attempt(stub.Login(pb.LoginRequest(user=user, nonce=nonce, signature=b"\x00" * 64),
                                         timeout=10))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return {"counts": dict(counts), "refusal": refusal, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(flood(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]))),
          flush=True)
