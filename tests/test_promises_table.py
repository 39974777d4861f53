"""docs/PROMISES.md maps each documented guarantee to a test: every test it names must exist.

A renamed or deleted test would otherwise leave a promise that looks proven and is not.
The check reads the file each name points to and looks for its `def`, without importing it.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "PROMISES.md"
DOCS = ("RELIABILITY.md", "SECURITY.md", "RATE_LIMITING.md", "HISTORY.md", "OBSERVABILITY.md")
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def rows() -> list[str]:
    return [line for line in TABLE.read_text().splitlines() if line.startswith("| ") and "---" not in line
            and line != "| promise | test |"]


def test_every_named_test_exists() -> None:
    named = NAMED.findall(TABLE.read_text())
    assert len(named) >= 100, len(named)
    missing = []
    for path, name in named:
        source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
        if not re.search(rf"^(async )?def {name}\(", source, re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/PROMISES.md names tests that do not exist: {missing}"


def test_every_row_names_a_test_and_every_doc_has_a_section() -> None:
    text = TABLE.read_text()
    for doc in DOCS:
        assert f"## docs/{doc}" in text, f"docs/PROMISES.md has no section for docs/{doc}"
    bare = [row for row in rows() if not NAMED.search(row)]
    assert not bare, f"rows without a test: {bare}"


def test_the_readme_links_the_table() -> None:
    assert "docs/PROMISES.md" in (ROOT / "README.md").read_text()
