"""Build hook: generate the protobuf/gRPC stubs from proto/ at install time.

The stubs are never committed; `pip install .` and `pip install -e .` both
produce them in `spartan/v1/` before the package is collected. The generator is
loaded by path so building needs only grpcio-tools, not the package's runtime
dependencies.

Generated code refuses a grpcio or protobuf older than the grpcio-tools that
built it, so the runtime minimums of those two are the build's own versions,
not a number written by hand: whatever grpcio-tools builds the package, the
install asks for a runtime at least that new. `scripts/lowest-versions` builds
with the lowest allowed grpcio-tools and runs the fast tests against every
minimum below.
"""
import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CODEGEN = Path(__file__).resolve().parent / "spartan" / "v1" / "codegen.py"

# Lowest versions the code is tested with (scripts/lowest-versions installs exactly these).
RUNTIME = [
    "grpcio>=1.62.2",
    "grpcio-tools>=1.62.2",  # 1.60-1.61 import pkg_resources, gone from current setuptools
    "grpcio-health-checking>=1.62.2",
    "grpcio-reflection>=1.62.2",
    "grpcio-status>=1.62.2",  # rich error details (RetryInfo, BadRequest) in grpc-status-details-bin
    "googleapis-common-protos>=1.63.0",  # google.rpc.RetryInfo / BadRequest, imported directly
    "protobuf>=4.25.3",
    "redis>=8.0",  # asyncio Redis Cluster with sharded pub/sub (8.0); the pipeline's connection API (6.0)
    "hiredis>=3.2",  # C reply parser for redis-py (which ignores hiredis before 3.2): ~25% more relay throughput
    "uvloop>=0.19; sys_platform != 'win32'",  # event loop of the services: ~17% more relay throughput
    "pycryptodome>=3.21",  # X25519 import/export in Crypto.Protocol.DH
    "prometheus-client>=0.19",
    "prompt_toolkit>=3.0.36",
    "PyYAML>=6.0.1",
]


def load_codegen():
    spec = importlib.util.spec_from_file_location("spartan_codegen", CODEGEN)
    assert spec and spec.loader
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    return codegen


def runtime_requirements() -> list[str]:
    """RUNTIME, with grpcio and protobuf raised to what the stubs were generated with."""
    codegen = load_codegen()
    if codegen.stubs_stale():
        codegen.generate()
    tools, protobuf = codegen.built_with()
    built = {"grpcio": f"grpcio>={tools}", "protobuf": f"protobuf>={protobuf}"}
    return [built.get(requirement.split(">=")[0], requirement) for requirement in RUNTIME]


class BuildWithProtos(build_py):
    def run(self) -> None:
        load_codegen().generate()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos}, install_requires=runtime_requirements())
