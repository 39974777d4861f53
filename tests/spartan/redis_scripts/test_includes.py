"""The Lua include preprocessor pastes each fragment once per script, however often it is asked for."""
from __future__ import annotations

from spartan.redis_scripts import INCLUDE, expand, source

FILES = {
    "script": f"{INCLUDE}_a\n{INCLUDE}_b\nreturn 1\n",
    "_a": "local function a() return 1 end\n",
    "_b": f"{INCLUDE}_a\nlocal function b() return a() end\n",
}


def test_a_fragment_included_twice_is_pasted_once() -> None:
    text = expand("script", FILES.__getitem__)
    assert text.count("local function a()") == 1
    assert text.index("local function a()") < text.index("local function b()")
    assert INCLUDE not in text


def test_every_shipped_script_has_each_fragment_once() -> None:
    for name in ("delivery_append", "delivery_read", "history_append", "history_read"):
        text = source(name)
        assert not any(line.startswith(INCLUDE) for line in text.splitlines()), name
        assert text.count("local function") == len(set(
            line.strip() for line in text.splitlines() if line.strip().startswith("local function"))), name
