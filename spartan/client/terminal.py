"""Two terminals behind one interface: an interactive one and a piped one.

In a real terminal prompt_toolkit owns the input line and `patch_stdout` prints
incoming messages above it, so they never garble what the user is typing; keys
typed while a line is being handled are not echoed by the terminal either (the
next prompt shows them). With
stdin piped (scripts, tests) there are no escape codes at all: each answer is echoed
after its prompt so the output reads exactly like the interactive transcript.
Transient state (e.g. messages waiting for a peer's first login) is a status line:
the bottom toolbar in a real terminal, standard error when piped, never a chat line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

Prompt = str | Callable[[], str]


class Terminal(Protocol):
    async def ask(self, prompt: Prompt) -> str:
        """One line from the user; raises EOFError (Ctrl-D / end of input) or KeyboardInterrupt (Ctrl-C)."""

    def show(self, line: str) -> None:
        """Print a line without disturbing the input line."""

    def session(self) -> AbstractContextManager[object]:
        """Context for the whole run (installs stdout patching in a real terminal)."""

    def status(self, text: str) -> None:
        """Show `text` as transient state until the next call ("" clears it)."""


def _text(prompt: Prompt) -> str:
    return prompt() if callable(prompt) else prompt


@contextmanager
def _no_echo_between_prompts() -> Iterator[None]:
    """Keep the terminal from echoing keys typed while no prompt is running (a line is being
    handled): echoed there they garble the screen (`quick line 3[alice] > quick line 2`). The
    keys are not lost: the next prompt reads them and shows them in its input line.
    prompt_toolkit restores these settings after each prompt; ours are restored at the end."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):  # not a POSIX terminal: nothing to do
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


class InteractiveTerminal:
    def __init__(self) -> None:
        from prompt_toolkit import PromptSession

        self._status = ""
        self._stdout = sys.stdout  # the terminal itself, not the patch_stdout proxy installed later
        self._prompt_session: PromptSession[str] = PromptSession(bottom_toolbar=lambda: self._status or None)

    async def ask(self, prompt: Prompt) -> str:
        message = prompt if callable(prompt) else (lambda: prompt)
        return await self._prompt_session.prompt_async(message)

    def show(self, line: str) -> None:
        if self._prompt_session.app.is_running:
            print(line, flush=True)  # patch_stdout prints it above the input line
        else:
            # Between prompts nothing is drawn: write now, in order, rather than through patch_stdout's
            # writer thread, which could land after the next prompt is drawn (and after what is typed there).
            self._stdout.write(line + "\n")
            self._stdout.flush()

    @contextmanager
    def session(self) -> Iterator[None]:
        from prompt_toolkit.patch_stdout import patch_stdout

        with _no_echo_between_prompts(), patch_stdout(raw=True):
            yield

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.refresh()

    def refresh(self) -> None:
        """Redraw the prompt (its text may depend on state that just changed)."""
        app = self._prompt_session.app
        if app.is_running:
            app.invalidate()


class PipedTerminal:
    """Reads lines from a non-interactive stdin on a daemon thread (works for pipes and files)."""

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._status = ""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name="stdin-reader", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            self._loop.call_soon_threadsafe(self._lines.put_nowait, line.rstrip("\r\n"))
        self._loop.call_soon_threadsafe(self._lines.put_nowait, None)

    async def ask(self, prompt: Prompt) -> str:
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)  # every later ask sees the end too
            raise EOFError
        print(f"{_text(prompt)}{line}", flush=True)
        return line

    def show(self, line: str) -> None:
        print(line, flush=True)

    def session(self) -> AbstractContextManager[object]:
        return nullcontext()

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            if text:
                print(f"[Spartan] {text}", file=sys.stderr, flush=True)

    def refresh(self) -> None:
        pass


def open_terminal() -> InteractiveTerminal | PipedTerminal:
    if sys.stdin.isatty() and sys.stdout.isatty():
        return InteractiveTerminal()
    return PipedTerminal()
