"""Attacks on login and first registration, against real gateways, presence and Redis.

- An account nobody has claimed yet cannot be taken over where gateways are reachable
  beyond loopback: `GetChallenge` answers the same for claimed and unclaimed users, and
  first keys register only with a one-time code from `spartan-admin` (kept hashed in
  Redis, with an expiry). A key reset does not reopen the window, even on the loopback
  demo: the reset prints the code the new keys need.
- A flood of bogus logins is rate limited per claimed user and per peer address
  (RESOURCE_EXHAUSTED with the retry delay), while another user's calls and logins from
  elsewhere are served throughout (their latency is printed, not asserted: the flood
  shares the machine's cores; docs/SECURITY.md has the measurements).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time

import grpc
from redis.asyncio import Redis

from spartan.client.headless import HeadlessClient
from spartan.enrolment import code_key, digest
from spartan.v1 import pb, rpc
from tests.support.refusals import refusal
from tests.support.stack import ROOT, Stack

BEYOND_LOOPBACK = {"SPARTAN_GATEWAY__HOST": "0.0.0.0"}  # reachable from other hosts, as in compose/Kubernetes


def admin(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "spartan.admin", *args], capture_output=True, text=True,
                          env=stack.env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def printed_code(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.split("--enrolment-code ")[1].strip()


async def login_error(stack: Stack, user: str, key_dir: str, code: str = "") -> grpc.aio.AioRpcError:
    client = HeadlessClient(user, stack.addresses, key_dir)
    client.conn.enrolment_code = code
    try:
        return await refusal(client.conn.open())
    finally:
        await client.conn.close()


async def start(stack: Stack, user: str, key_dir: str, code: str = "") -> HeadlessClient:
    client = HeadlessClient(user, stack.addresses, key_dir)
    client.conn.enrolment_code = code
    return await client.start()


async def test_challenge_says_nothing_about_registration(stack_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    await client_factory("bob", stack.addresses)  # bob has keys, qux never logged in
    async with grpc.aio.insecure_channel(stack.address(1)) as channel:
        stub = rpc.SpartanStub(channel)
        answers = [await stub.GetChallenge(pb.ChallengeRequest(user=user), timeout=5) for user in ("bob", "qux")]
    fields = ["deployment_id", "expires_at_us", "nonce"]  # the deployment id is the same for every user
    assert [sorted(f.name for f, _ in a.ListFields()) for a in answers] == [fields] * 2
    assert answers[0].deployment_id == answers[1].deployment_id
    assert len(answers[0].SerializeToString()) == len(answers[1].SerializeToString())


async def test_first_keys_need_the_operators_code_beyond_loopback(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1, settings=BEYOND_LOOPBACK)
    attacker, owner = str(tmp_path / "attacker"), str(tmp_path / "owner")
    for guess in ("", "aaaa-bbbb-cccc-dddd"):  # the takeover of an unclaimed account
        refused = await login_error(stack, "qux", attacker, guess)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "enrolment code" in (refused.details() or "") and "spartan-admin enrol qux" in refused.details()

    code = printed_code(admin(stack, "enrol", "qux"))
    redis = Redis.from_url(stack.redis.url)
    try:  # kept as its hash only, with an expiry
        stored = await redis.get(code_key("qux"))
        assert stored is not None and stored.decode() == digest(code) and code.encode() not in stored
        assert 0 < await redis.pttl(code_key("qux")) <= 7 * 24 * 3600 * 1000
    finally:
        await redis.aclose()
    assert (await login_error(stack, "qux", attacker, "")).code() == grpc.StatusCode.PERMISSION_DENIED
    qux = await start(stack, "qux", owner, code)
    await qux.close()
    refused = await login_error(stack, "eve", attacker, code)  # a code is for its user only
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED

    # A reset issues a fresh code; the used one and no code both stay refused.
    new_code = printed_code(admin(stack, "reset-keys", "qux"))
    for old in ("", code):
        assert (await login_error(stack, "qux", attacker, old)).code() == grpc.StatusCode.PERMISSION_DENIED
    qux = await start(stack, "qux", str(tmp_path / "new-device"), new_code)
    await qux.close()


async def test_a_reset_does_not_reopen_registration_on_the_local_demo(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)  # loopback only: the first login registers without a code
    bob = await start(stack, "bob", str(tmp_path / "bob"))
    await bob.close()
    code = printed_code(admin(stack, "reset-keys", "bob"))
    refused = await login_error(stack, "bob", str(tmp_path / "attacker"))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    bob = await start(stack, "bob", str(tmp_path / "bob-new"), code)
    await bob.close()
    again = await start(stack, "bob", str(tmp_path / "bob-new"))  # registered: no code needed any more
    await again.close()


FLOOD_RATE = 1600  # attempts a second: 13k bogus logins in 8 s multiplied other users' latency by 9 without limits
ADDRESS_LIMIT = 120  # below the users' combined per-user budgets, so the address limit is what binds


def flood(stack: Stack, seconds: float, *users: str) -> subprocess.Popen[str]:
    """FLOOD_RATE bogus login attempts a second from ::1 (the rate of the attack this test repeats)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.support.login_flood", f"[::1]:{stack.gateway_ports[0]}",
                             str(seconds), str(FLOOD_RATE),
                             *users], stdout=subprocess.PIPE, text=True, env=env)


def result(process: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = process.communicate(timeout=120)
    return json.loads(out)


async def median_latency(client: HeadlessClient, calls: int = 40) -> float:
    """Every call must be answered (a refusal or an error raises); the median is printed for the record."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await client.call("ListUsers", pb.ListUsersRequest())
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def test_login_flood_is_limited_and_other_users_are_served(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The gateway listens on IPv6 and IPv4 so that alice (127.0.0.1) is another peer than the flood (::1);
    # enrolment is open as this test is about logins, not registration.
    stack = stack_factory(gateways=1, settings={"SPARTAN_GATEWAY__HOST": "'[::]'", "SPARTAN_AUTH__ENROLMENT": "open",
                                                "SPARTAN_AUTH__LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS": str(ADDRESS_LIMIT)})
    other_peer = [f"127.0.0.1:{stack.gateway_ports[0]}"]
    alice = await HeadlessClient("alice", other_peer, str(tmp_path / "keys")).start()
    try:
        baseline = await median_latency(alice)

        # One claimed user: the per-user bucket (60 a minute) binds.
        one = result(flood(stack, 3, "eve"))
        counts = one["counts"]
        assert isinstance(counts, dict) and isinstance(one["seconds"], float)
        passed_one = sum(n for code, n in counts.items() if code != "RESOURCE_EXHAUSTED")
        assert counts.get("RESOURCE_EXHAUSTED", 0) > passed_one
        assert passed_one <= 60 + math.ceil(one["seconds"]) + 1, counts
        refusal = one["refusal"]
        assert isinstance(refusal, dict)
        assert str(refusal["details"]).startswith("rate limit exceeded for login: try again in")
        assert float(refusal["trailers"]["retry-after"]) > 0

        # Many names from one address: the per-address bucket binds; alice and bob, elsewhere, are served as before.
        many = flood(stack, 6, "charlie", "foo", "bar", "baz", "qux", "eve")
        await asyncio.sleep(1.0)
        during = await median_latency(alice)
        bob = await HeadlessClient("bob", other_peer, str(tmp_path / "keys")).start()  # logs in during the flood
        await bob.close()
        second = result(many)
        counts = second["counts"]
        assert isinstance(counts, dict) and isinstance(second["seconds"], float)
        passed_many = sum(n for code, n in counts.items() if code != "RESOURCE_EXHAUSTED")
        elapsed = float(one["seconds"]) + second["seconds"] + 2.0  # the bucket refills during the pauses too
        assert passed_one + passed_many <= ADDRESS_LIMIT + math.ceil(ADDRESS_LIMIT / 60 * elapsed) + 1, counts
        print(f"login flood: {sum(counts.values())} attempts in {second['seconds']:.1f} s, {passed_many} not limited;"
              f" alice's ListUsers median {baseline * 1000:.2f} ms before, {during * 1000:.2f} ms during")
    finally:
        await alice.close()
