"""The Lua scripts write protobuf bytes by hand: their field tags must be the proto's.

`history_append.lua` and `delivery_append.lua` append `offset`, `epoch` and `sent_at_us`
to the stored message; the read scripts frame each entry as field 1 (`messages`) of
`HistoryResponse`. A renumbered field in spartan.proto must fail here, not corrupt data.
"""
from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from spartan.redis_scripts import source
from spartan.v1 import pb

LENGTH_DELIMITED = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE}


def lua_tag(message: type, field: str) -> str:
    """The field's tag byte as a Lua decimal escape, e.g. '\\64' for field 8 as a varint."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]  # type: ignore[attr-defined]
    wire_type = 2 if descriptor.type in LENGTH_DELIMITED else 0
    tag = descriptor.number << 3 | wire_type
    assert tag < 128, "a one-byte tag is what the scripts write"
    return f"'\\{tag}'"


@pytest.mark.parametrize("script", ["history_append", "delivery_append"])
def test_appended_server_fields_use_the_protos_tags(script: str) -> None:
    text = source(script)
    for field in ("offset", "epoch", "sent_at_us"):
        assert lua_tag(pb.Message, field) in text, f"{script}.lua does not write {field}'s tag"


@pytest.mark.parametrize("script", ["history_read", "delivery_read"])
def test_read_scripts_frame_entries_as_history_response_messages(script: str) -> None:
    assert lua_tag(pb.HistoryResponse, "messages") in source(script)
