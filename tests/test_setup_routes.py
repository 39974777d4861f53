"""The README's set-up works whatever `python3` is, and every "set up first" hint names a working command.

The slow test is the route a newcomer on Debian takes: `python3` is Debian's own
/usr/bin/python3, externally managed (PEP 668), so the scripts must create `.venv`, put
it on PATH for everything they run, pass the tests, start the server and say how to run
the client. CI's own python3 (pyenv) takes the other route in the same run.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")


def externally_managed(python: Path) -> bool:
    if not python.exists():
        return False
    stdlib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


needs_debian_python = pytest.mark.skipif(not externally_managed(DEBIAN_PYTHON),
                                         reason="/usr/bin/python3 is absent or not externally managed here")


def route(python: str) -> str:
    return subprocess.run([python, str(ROOT / "spartan" / "setup_hint.py"), "route"],
                          capture_output=True, text=True, check=True).stdout.strip()


@needs_debian_python
def test_an_externally_managed_python_gets_a_project_venv() -> None:
    assert route(str(DEBIAN_PYTHON)) == "venv"


def test_the_python_running_the_tests_is_used_as_it_is() -> None:
    """pyenv's Python (CI) or the project's .venv: the tests run where the project is installed."""
    assert route(sys.executable) == "current"


def test_the_scripts_put_their_environment_first_on_path() -> None:
    """Everything scripts/test and scripts/serve run (pytest, check-jsonschema, ...) comes from the
    environment they chose, activated or not."""
    shown = subprocess.run(
        ["bash", "-c", 'set -e; source scripts/python.sh; echo "$PATH"; command -v pytest check-jsonschema; '
                       '"$PROJECT_PYTHON" -c "import sysconfig; print(sysconfig.get_path(\'scripts\'))"'],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    path, pytest_at, validator_at, scripts = shown.stdout.splitlines()
    assert path.split(os.pathsep)[0] == scripts
    assert Path(pytest_at).parent == Path(validator_at).parent == Path(scripts)


@needs_debian_python
@pytest.mark.parametrize("program", [["client.py", "alice"], ["server.py"], ["-m", "bench", "all", "--quick"]])
def test_a_python_without_the_project_names_the_venv_command(program: list[str]) -> None:
    """Debian's python3 has no grpc: one sentence naming .venv/bin/python, never `pip install -e .`."""
    finished = subprocess.run([str(DEBIAN_PYTHON), *program], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if finished.returncode == 0 or "grpc" not in finished.stderr:
        pytest.skip("Debian's python3 here has the project's packages")
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr and "pip install" not in finished.stderr
    message = finished.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f".venv/bin/python {' '.join(program)}" in message, message


# --- the whole route on a fresh copy ------------------------------------------------------------

def fresh_copy(destination: Path) -> Path:
    """This checkout as a fresh clone of it would be, with uncommitted edits and new files (not ignored ones)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def debian_python_environment(bin_dir: Path) -> dict[str, str]:
    """PATH where `python3` is /usr/bin/python3 and no pyenv or virtual environment is reachable."""
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(DEBIAN_PYTHON)
    hidden = {str(Path(sys.executable).parent), os.environ.get("VIRTUAL_ENV", "") + "/bin"}
    kept = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and ".pyenv" not in p and p not in hidden]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYENV_VERSION")}
    env["PATH"] = os.pathsep.join([str(bin_dir), *kept])
    return env


@needs_debian_python
@pytest.mark.timeout(900)
def test_externally_managed_route_sets_up_tests_serves_and_chats(tmp_path: Path) -> None:
    project = fresh_copy(tmp_path / "spartan")
    env = debian_python_environment(tmp_path / "bin")

    # The README's test command, on a fast subset that needs the test tools from .venv/bin.
    subset = ["tests/deploy/test_files.py", "tests/spartan/test_config.py", "tests/spartan/crypto/test_identity.py",
              "tests/test_setup_routes.py", "-k", "not externally_managed_route"]
    tested = subprocess.run(["bash", "scripts/test", "-q", *subset], cwd=project, env=env,
                            capture_output=True, text=True, timeout=840)
    report = tested.stdout[-4000:] + tested.stderr[-4000:]
    assert tested.returncode == 0, report
    assert (project / ".venv" / "bin" / "python").exists(), report
    assert " passed" in tested.stdout and " failed" not in tested.stdout, report

    # The system python3 now points at the project's environment instead of failing with a traceback.
    hinted = subprocess.run(["python3", "client.py", "alice"], cwd=project, env=env, capture_output=True, text=True)
    assert hinted.returncode == 1 and "Traceback" not in hinted.stderr
    assert "set up in .venv: run .venv/bin/python client.py alice" in hinted.stderr, hinted.stderr

    # The README's serve command starts the stack and names the client command, which then works.
    port = free_port()
    serve_env = {**env, "SPARTAN_PORT": str(port), "SPARTAN_KEY_DIR": str(tmp_path / "keys"),
                 "SPARTAN_SERVICES__PRESENCE": f"127.0.0.1:{free_port()}",
                 "SPARTAN_SERVICES__HISTORY": f"127.0.0.1:{free_port()}"}
    server = subprocess.Popen(["bash", "scripts/serve"], cwd=project, env=serve_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert server.stdout is not None
        seen = []
        for line in server.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("Spartan server started") or len(seen) > 50:
                break
        assert f"Spartan server started on port {port}." in seen, seen
        told = [line for line in seen if line.startswith("To chat, run in another terminal: ")]
        assert told and ".venv/bin/python client.py alice" in told[0], seen
        command = told[0].split(": ", 1)[1].split(" (")[0].split()
        chat = subprocess.run([*command, "--server", f"127.0.0.1:{port}"], cwd=project, env=serve_env,
                              input="bob\n", capture_output=True, text=True, timeout=60)
        assert f"[Spartan] Connected to Spartan Server at port {port}." in chat.stdout, chat.stdout + chat.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
