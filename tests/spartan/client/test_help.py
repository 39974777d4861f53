"""/help and the README's client section name the same commands and the same rules."""
from __future__ import annotations

from pathlib import Path

from spartan.client.commands import COMMANDS, HELP

README = Path(__file__).resolve().parents[3] / "README.md"


def chat_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("## Chat"):text.index("\n## ", text.index("## Chat") + 1)]


def test_every_command_is_in_help_and_in_the_readme() -> None:
    help_text, readme = "\n".join(HELP), chat_section()
    for command in COMMANDS:
        if command in ("/exit", "/invite"):
            continue  # aliases of /quit and /add
        if command != "/help":  # /help lists the others
            assert command in help_text, command
        assert f"`{command}" in readme, command


def test_help_and_readme_state_the_prompt_queue_and_paste_rules() -> None:
    help_text, readme = "\n".join(HELP), chat_section()
    for rule in ("[group] you >", "one message per line", "queue", "next start"):
        assert rule in help_text, rule
    for rule in ("`[group1] alice > `", "one message per line", "queue", "next start"):
        assert rule in readme, rule
