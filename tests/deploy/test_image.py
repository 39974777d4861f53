"""The image: the Dockerfile's stages and user, and the wheel its builder stage makes.

Offline, like test_files.py (whose paths and console-script list it shares):
the wheel is built from a clean copy of the build context, as the builder stage does.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.test_files import DEPLOY, ROOT, console_scripts


def test_dockerfile_builds_a_wheel_and_runs_it_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    # A `# syntax=` line makes BuildKit fetch its frontend from a registry; the built-in one suffices.
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    stages = re.findall(r"^FROM (\S+) AS (\w+)", text, re.M)
    assert [stage for _, stage in stages] == ["builder", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    runtime = text.split("AS runtime", 1)[1]
    assert "pip wheel" in text.split("AS runtime", 1)[0]
    assert not re.search(r"gcc|build-essential|apt-get", runtime)
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^EXPOSE 3000 3001 3002 9100$", runtime, re.M)
    assert "COPY deploy/healthcheck.py /opt/spartan/healthcheck.py" in runtime
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for sources in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for source in sources.split():
            if "[" not in source:
                assert (ROOT / source).exists(), source
                assert f"!{source}" in ignored, f"{source} is excluded from the build context"


def test_builder_stage_wheel_has_generated_stubs_and_console_scripts(tmp_path: Path) -> None:
    """What `pip wheel .` does in the builder stage, on a clean copy of the build context."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "spartan_pb2*")
    for package in ("proto", "spartan", "services"):
        shutil.copytree(ROOT / package, source / package, ignore=skip)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--wheel-dir", str(tmp_path / "wheels"), str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("spartan_messenger-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"spartan/v1/spartan_pb2.py", "spartan/v1/spartan_pb2_grpc.py"} <= names
    assert any(n.startswith("spartan/redis_scripts/") and n.endswith(".lua") for n in names)
    assert all(f"{script} =" in entry_points for script in console_scripts())
