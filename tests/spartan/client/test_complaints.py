"""Dropped 1:1 messages are said once per sender per window, with how many were dropped since."""
from __future__ import annotations

from spartan.client.e2e import Complaints


def test_one_line_per_sender_per_window_with_the_count() -> None:
    now = [0.0]
    complaints = Complaints(10.0, clock=lambda: now[0])
    assert complaints.count("bob") == 1
    assert [complaints.count("bob") for _ in range(4)] == [None] * 4  # a flood: quiet
    assert complaints.count("carol") == 1  # other senders have their own window
    now[0] = 10.0
    assert complaints.count("bob") == 5  # this one and the four held back
    assert complaints.count("bob") is None
