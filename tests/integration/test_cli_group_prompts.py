"""Where the user is, in a real terminal: the prompt names the group, and membership commands act on it.

The prompt reads `[alice] > ` in a 1:1 chat (the seed's) and `[group1] alice > ` in a group;
/create enters the new group; /switch and /group change the prompt; /remove without a
group acts on the group the prompt shows. Over the shipped limit (3 group changes per
30 s) a membership command says exactly what was not done and /retry does it.
"""
from __future__ import annotations

import os
import time

from tests.support.cli import LocalServer, Pane, wait_until


def last_line(pane: Pane) -> str:
    lines = [line for line in pane.lines() if line]
    return lines[-1] if lines else ""


def test_prompts_follow_create_switch_and_group_and_remove_acts_on_the_shown_group(server: LocalServer) -> None:
    alice = Pane(f"groups{os.getpid()}", server.client("alice"), server.workdir, server.env)
    try:
        wait_until(lambda: alice.shows("Enter a user whom you want to chat with:"))
        alice.type("group1")
        wait_until(lambda: last_line(alice) == "[group1] alice >")

        alice.type("/create team charlie eve")
        wait_until(lambda: alice.shows("You are now in group team with charlie, eve."))
        wait_until(lambda: last_line(alice) == "[team] alice >")

        alice.type("/switch bob")
        wait_until(lambda: alice.shows("You are now ready to chat with bob."))
        wait_until(lambda: last_line(alice) == "[alice] >")

        alice.type("/group group1")
        wait_until(lambda: last_line(alice) == "[group1] alice >")
        alice.type("/remove eve")  # the prompt shows group1: eve leaves group1, not team
        wait_until(lambda: alice.shows("[Spartan] alice removed eve from group1."))
        alice.type("/members")
        wait_until(lambda: alice.shows("Members of group1: alice, bob, charlie"))
        alice.type("/members team")
        wait_until(lambda: alice.shows("Members of team: alice, charlie, eve"))

        alice.type("/add bob team")  # named explicitly: acts on team while the prompt shows group1
        wait_until(lambda: alice.shows("[Spartan] alice added bob to team."))
        # That was the third group change in 30 s: the fourth is over the limit, said exactly, kept for /retry.
        alice.type("/leave team")
        wait_until(lambda: alice.shows("Not done: /leave team (rate limit: the server allows it again in"))
        assert alice.shows("Type /retry then.")
        time.sleep(11)  # one group change per 10 s comes back under the shipped limit
        alice.type("/retry")
        wait_until(lambda: alice.shows("[Spartan] alice left team."))
        alice.type("/groups")
        wait_until(lambda: alice.shows("Your groups: group1"))
        assert not any("Traceback" in line for line in alice.lines())
    finally:
        alice.close()
