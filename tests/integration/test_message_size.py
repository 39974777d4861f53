"""The size limit users are told is the one that holds: the longest text the client accepts (the shipped
65,536-byte body limit less the padded, signed envelope's growth) is sent and read, 1:1 and in a group,
and one byte more does not fit the gateway's limit."""
from __future__ import annotations

import grpc
import pytest

from spartan.crypto.membership import CREATE
from spartan.crypto.sender_keys import max_plaintext_bytes
from spartan.errors import SpartanError

BODY_LIMIT = 65536  # config.yaml: gateway.max_message_bytes
LONGEST = max_plaintext_bytes(BODY_LIMIT)


async def test_the_longest_accepted_text_is_delivered_and_one_byte_more_is_refused(stack_factory,
                                                                                   client_factory) -> None:  # type: ignore[no-untyped-def]
    stack = stack_factory(gateways=1)
    bob = await client_factory("bob", [stack.address(1)])
    alice = await client_factory("alice", [stack.address(1)])
    await alice.send("bob", "y" * LONGEST)
    await alice.groups.change(CREATE, "big-lines", members=["bob"])
    await alice.send_group("big-lines", "z" * LONGEST)
    received = await bob.wait_for(2, timeout=30)
    assert sorted(r.text for r in received if r.text) == ["y" * LONGEST, "z" * LONGEST]

    with pytest.raises(SpartanError) as refused:
        await alice.send("bob", "y" * (LONGEST + 1))  # the 1:1 envelope (sealed to two prekeys) is the larger one
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.message.endswith(f"the maximum is {BODY_LIMIT} bytes")
